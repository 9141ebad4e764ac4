"""The initial relative RMSE of many network draws (issue 17: is the heat N = 10 gap the initialisation draw?).

Serial; one forward solve per seed (about 10 ms each at N = 10):

    scripts/env-run python3 bench/width_initial_draws.py --scenario heat --N 10 --seeds 0-999

femnpde's seed 42 is not the reference code's draw (numpy's generator, not
torch's), and its start value 0.158 is far from the reference's 0.095.  This
script computes the start value sqrt(J(θ_0))/max|h| of ``network.seed`` =
each seed, and lists the seeds whose start is closest to the reference's:
training those (``bench/reproduce_paper.py plan`` does, group ``matched``)
answers whether a draw like the reference's reaches its figures.  Writes
``bench/results/width/initial_draws-<scenario>-N<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from mpi4py import MPI

from femnpde.app.build import build_run
from femnpde.app.loading import load_config
from femnpde.model.build import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_START = {("heat", 10): 0.095, ("heat", 100): 0.149, ("heat", 500): 0.166, ("allen-cahn", 100): 0.267}


def start_values(scenario: str, N: int, seeds: list[int]) -> np.ndarray:
    """sqrt(J(θ_0))/max|h| of the initial network of each seed (the problem is built once)."""
    config = ROOT / "demos" / f"paper_{scenario.replace('-', '_')}.toml"
    cfg = load_config(config, [f"network.neurons={N}"])
    out = np.empty(len(seeds))
    with build_run(cfg, MPI.COMM_SELF) as run:
        dim = run.problem.mesh.geometry.dim
        for k, seed in enumerate(seeds):
            theta = build_model({**cfg["network"], "seed": seed}, dim).get_params()
            out[k] = run.misfit.relative_rmse(run.rf(theta))
    return out


def closest_seeds(path: pathlib.Path, k: int) -> list[int]:
    """The ``k`` seeds of a written JSON whose start is closest to the reference's."""
    data = json.loads(path.read_text())
    return [int(s) for s in data["closest"][:k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["heat", "allen-cahn"], default="heat")
    parser.add_argument("--N", type=int, default=10)
    parser.add_argument("--seeds", default="0-999", help="a range A-B (inclusive)")
    args = parser.parse_args()
    a, b = (int(x) for x in args.seeds.split("-"))
    seeds = list(range(a, b + 1))
    starts = start_values(args.scenario, args.N, seeds)
    ref = REFERENCE_START.get((args.scenario, args.N))
    order = np.argsort(np.abs(starts - ref)) if ref is not None else np.argsort(starts)
    data = {
        "scenario": args.scenario, "N": args.N, "reference_start": ref, "seeds": seeds, "start": starts.tolist(),
        "quantiles": {q: float(np.quantile(starts, float(q))) for q in ("0.0", "0.05", "0.25", "0.5", "0.75", "1.0")},
        "closest": [seeds[i] for i in order[:20]],
    }
    if 42 in seeds:
        data["seed_42"] = float(starts[seeds.index(42)])
    out = ROOT / "bench" / "results" / "width" / f"initial_draws-{args.scenario}-N{args.N}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{args.scenario} N={args.N}: start over {len(seeds)} seeds: quantiles {data['quantiles']}; reference {ref}; "
          f"closest seeds {data['closest'][:5]} ({', '.join(f'{starts[i]:.4f}' for i in order[:5])})")


if __name__ == "__main__":
    main()
