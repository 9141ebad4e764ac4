"""What does Adam's first step do to the source and the state? (issue 17: runs that never improve on their start)

Serial; per width one loss + gradient at the initial θ and one forward solve per
learning-rate factor:

    scripts/env-run python3 bench/width_first_step.py --scenario allen-cahn-imex --mesh box --N 10,100,500
    scripts/env-run python3 bench/width_first_step.py --scenario allen-cahn-imex --mesh rectangle --N 10,100,500

Adam's first step is ``θ1 = θ0 − lr·∇J/(|∇J| + eps)`` (bias-corrected moments
of one gradient): every parameter moves by about ``lr`` whatever the size of its
gradient.  With ``lr = 0.01·N^(1/3)`` and the output scaled by ``N^(−2/3)``, the
N output weights moving coherently change the source by up to
``lr·N^(1/3) = 0.01·N^(2/3)`` (0.046 at N = 10, 0.22 at N = 100, 0.63 at
N = 500), before the hidden layer's share.  This script measures that change,
``max|g_θ1 − g_θ0|`` and ``‖g_θ1 − g_θ0‖ / ‖g*‖`` over the source dofs and all
levels, and what it does to the PDE: the relative RMSE and the relative max
error ``max|u − h|/max|h|`` after the step (2 means u ≈ −h somewhere: for
Allen–Cahn, the state has crossed into the other well), against the start; the
smallest factors show down to which step the descent direction lowers the loss.
Writes ``bench/results/width/first_step-<scenario>-<mesh>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from _paper import MESHES, SCENARIOS, study

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "width"


def adam_first_step(theta: np.ndarray, grad: np.ndarray, lr: float, eps: float = 1e-8) -> np.ndarray:
    """Adam's first update (one gradient, bias-corrected moments), as ``femnpde.optim.Adam`` computes it."""
    return theta - lr * grad / (np.abs(grad) + eps)


def measure(scenario: str, mesh: str, N: int, factors: list[float], seed: int) -> dict:
    from mpi4py import MPI

    from femnpde.app.build import build_run
    from femnpde.app.loading import load_config

    config, overrides = study.config_of(scenario, mesh)
    cfg = load_config(config, [*overrides, f"network.neurons={N}", f"network.seed={seed}"])
    opt = cfg["optimizer"]
    base = float(opt["lr"]) * (N ** (2 * float(cfg["network"]["beta"]) - 1) if opt.get("scale_lr") else 1.0)
    with build_run(cfg, MPI.COMM_SELF) as run:
        theta0 = run.rf.initial_theta()
        J0, grad = run.rf.value_and_gradient(theta0)
        start = {"relative_rmse": run.misfit.relative_rmse(J0), "relative_max_error": run.rf.relative_max_error()}
        source = run.rf.source
        g0 = source.values(theta0)
        gstar = run.target_values
        rows = []
        for f in factors:
            theta1 = adam_first_step(theta0, grad, base * f, float(opt["eps"]))
            dg = source.values(theta1) - g0
            J1 = run.rf(theta1)
            rows.append({"factor": f, "lr": base * f, "max_abs_source_change": float(np.max(np.abs(dg))),
                         "relative_source_change": float(np.linalg.norm(dg) / np.linalg.norm(gstar)),
                         "relative_rmse": run.misfit.relative_rmse(J1),
                         "relative_max_error": run.rf.relative_max_error()})
        return {"N": N, "lr": base, "gradient_norm": float(np.linalg.norm(grad)), "start": start,
                "max_abs_target_source": float(np.max(np.abs(gstar))), "max_abs_h": float(run.misfit.max_abs_data()),
                "steps": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=SCENARIOS, default="allen-cahn-imex")
    parser.add_argument("--mesh", choices=MESHES, default="box")
    parser.add_argument("--N", default="10,100,500")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--factors", default="1,0.25,0.0625,0.015625,0.00390625,0.0009765625",
                        help="multipliers of the study's lr = 0.01·N^(1/3)")
    args = parser.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    widths = []
    for N in (int(n) for n in args.N.split(",")):
        w = measure(args.scenario, args.mesh, N, factors, args.seed)
        widths.append(w)
        print(f"{args.scenario} {args.mesh} N={N}: start {w['start']['relative_rmse']:.4f} (max error "
              f"{w['start']['relative_max_error']:.3f}); after Adam's first step " + "; ".join(
                  f"lr x{s['factor']:g}: source change max {s['max_abs_source_change']:.3g} (relative l2 "
                  f"{s['relative_source_change']:.3g}), relative RMSE {s['relative_rmse']:.4f}, max error "
                  f"{s['relative_max_error']:.3f}" for s in w["steps"]), flush=True)
    out = RESULTS / f"first_step-{args.scenario}-{args.mesh}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scenario": args.scenario, "mesh": args.mesh, "seed": args.seed, "widths": widths},
                              indent=1) + "\n")


if __name__ == "__main__":
    main()
