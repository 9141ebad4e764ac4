"""Which code produced a width-study run? (issue 17: two runs of one configuration that differ)

Serial; the first ``--epochs`` epochs of one study configuration, trained by the
code of each given commit and by this checkout, compared with given run
directories' histories.  Run it with the host's python (it needs ``git`` and
numpy; each training runs through ``scripts/env-run``):

    nice -n 10 python3 bench/width_reproducibility.py --scenario allen-cahn-imex --N 100 --seed 42 \\
        --epochs 200 --commits 474338a,32af882,3b25798 \\
        --against ../width-runs/allen-cahn-imex-rectangle/N100-seed42 \\
        --against ../width-runs/allen-cahn-imex-rectangle-long/N100-seed42

A run is deterministic for one code version (the same history bitwise when
repeated), but a change that reorders floating-point sums (e.g. the network's
VJP) changes the history at round-off, and Adam on a non-convex loss amplifies
round-off: two sweeps of the same configuration run by two code versions agree
to 1e-16 at first and drift apart later.  Each commit's ``femnpde`` and
``bench`` are extracted with ``git archive`` into ``--work`` (gitignored
scratch) and run in a subprocess with that tree first on ``PYTHONPATH``.  Per
(code, run directory): the first epoch whose loss or gradient norm differs (None:
bitwise equal over the compared epochs) and the largest difference in relative
RMSE; and at the initial θ, against the previous code, the largest relative
difference of the loss, of the source's grid values, of the network's VJP of a
fixed cotangent and of the gradient (which part of loss + gradient changed).
Writes ``bench/results/width/reproducibility.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import subprocess
import tarfile

import numpy as np
from _paper import MESHES, SCENARIOS, bench_module

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "width"


def read_history(run_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """The numeric columns of ``run_dir/history.csv`` (comment lines skipped)."""
    lines = [ln for ln in (run_dir / "history.csv").read_text().splitlines() if ln and not ln.startswith("#")]
    names = lines[0].split(",")
    values = np.array([[float(x) for x in ln.split(",")] for ln in lines[1:]])
    return {n: values[:, i] for i, n in enumerate(names)}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], epochs: int) -> dict:
    """First epoch where loss or gradient norm differ (None: bitwise equal), largest relative-RMSE difference."""
    n = min(epochs, a["loss"].size, b["loss"].size)
    differs = (a["loss"][:n] != b["loss"][:n]) | (a["gradient_norm"][:n] != b["gradient_norm"][:n])
    first = np.flatnonzero(differs)
    return {"epochs": int(n), "first_differing_epoch": int(first[0]) if first.size else None,
            "max_abs_rmse_difference": float(np.max(np.abs(a["relative_rmse"][:n] - b["relative_rmse"][:n])))}


def divergence(a: np.ndarray, b: np.ndarray, levels=(1e-12, 1e-6, 1e-2)) -> dict:
    """First epoch at which two histories of one configuration differ by more than each relative level."""
    n = min(a.size, b.size)
    rel = np.abs(np.asarray(a[:n]) - np.asarray(b[:n])) / np.abs(np.asarray(b[:n]))
    out = {}
    for level in levels:
        hit = np.flatnonzero(rel > level)
        out[f"{level:g}"] = int(hit[0]) if hit.size else None
    return {"epochs": int(n), "first_epoch_above": out, "max_relative_difference": float(rel.max())}


def extract(commit: str, work: pathlib.Path) -> pathlib.Path:
    """``femnpde``, ``bench``, ``demos`` and ``meshes`` of ``commit`` under ``work/code-<commit>`` (once)."""
    tree = work / f"code-{commit}"
    if not (tree / "femnpde").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "femnpde", "bench", "demos", "meshes"],
                              check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def train(tree: pathlib.Path, label: str, args, work: pathlib.Path) -> pathlib.Path:
    """The configuration's first ``args.epochs`` epochs by the code in ``tree``; returns the run directory."""
    runs = work / f"runs-{label}"
    cmd = [str(ROOT / "scripts" / "env-run"), "env", f"PYTHONPATH={tree}", "python3",
           str(tree / "bench" / "reproduce_paper.py"), "run", "--scenario", args.scenario,
           "--mesh", args.mesh, "--N", str(args.N), "--seeds", str(args.seed), "--epochs", str(args.epochs),
           "--runs", str(runs), "--results", str(work / f"results-{label}"), "--readme", str(work / "README.md")]
    (work / "README.md").write_text("<!-- width-study:begin -->\n<!-- width-study:end -->\n")
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return runs / f"{args.scenario}-{args.mesh}" / f"N{args.N}-seed{args.seed}"


def probe(args) -> None:
    """Inside the environment, with ``args.tree``'s femnpde first on the path: J, g_θ, a fixed VJP and ∇J at θ0."""
    from mpi4py import MPI

    from femnpde.app.build import build_run
    from femnpde.app.loading import load_config

    tree = pathlib.Path(args.tree)
    study = bench_module("reproduce_paper", tree)
    config, overrides = study.config_of(args.scenario, args.mesh)
    cfg = load_config(config, [*overrides, f"network.neurons={args.N}", f"network.seed={args.seed}"])
    with build_run(cfg, MPI.COMM_SELF) as run:
        theta = run.rf.initial_theta()
        J, grad = run.rf.value_and_gradient(theta)
        source = run.rf.source
        G = source.values(theta)
        vjp = source.vjp(np.sin(np.arange(G.size, dtype=float)).reshape(G.shape))  # a fixed cotangent
    np.savez(args.probe_out, J=J, G=G, vjp=vjp, grad=grad)


def _probe_differences(a: pathlib.Path, b: pathlib.Path) -> dict:
    """Largest relative difference of each probed quantity between two codes (0: bitwise equal)."""
    x, y = np.load(a), np.load(b)
    names = {"J": "loss", "G": "source_grid_values", "vjp": "network_vjp", "grad": "gradient"}
    return {v: float(np.max(np.abs(x[k] - y[k])) / np.max(np.abs(x[k]))) for k, v in names.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=SCENARIOS, default="allen-cahn-imex")
    parser.add_argument("--mesh", choices=MESHES, default="rectangle")
    parser.add_argument("--N", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--commits", default="", help="comma-separated commits whose code to run beside this checkout")
    parser.add_argument("--against", action="append", default=[], help="a run directory to compare with (repeatable)")
    parser.add_argument("--work", default=str(ROOT / ".scratch" / "width_reproducibility"))
    parser.add_argument("--tree", help=argparse.SUPPRESS)  # internal: the probe's code tree
    parser.add_argument("--probe-out", help=argparse.SUPPRESS)  # internal: run the probe, write this .npz
    args = parser.parse_args()
    if args.probe_out:
        probe(args)
        return
    work = pathlib.Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    against = {}
    for p in map(pathlib.Path, args.against):  # named <sweep>/<run>, with the run's length from its result.json
        result = p / "result.json"
        epochs = json.loads(result.read_text())["epochs"] if result.is_file() else None
        against[f"{p.parent.name}/{p.name}" + (f" ({epochs} epochs)" if epochs else "")] = read_history(p)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    codes = [(c, extract(c, work)) for c in args.commits.split(",") if c] + [(f"{head} (this checkout)", ROOT)]
    rows = []
    for label, tree in codes:
        key = label.split()[0]
        mine = read_history(train(tree, key, args, work))
        what = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--date=iso", "--format=%ad %s", key],
                              check=True, capture_output=True, text=True).stdout.strip()
        row = {"code": label, "commit": what[:160],
               "against": {p: compare(mine, h, args.epochs) for p, h in against.items()}}
        probed = work / f"probe-{key}.npz"
        subprocess.run([str(ROOT / "scripts" / "env-run"), "env", f"PYTHONPATH={tree}", "python3", str(pathlib.Path(
            __file__).resolve()), "--scenario", args.scenario, "--mesh", args.mesh, "--N", str(args.N), "--seed",
            str(args.seed), "--tree", str(tree), "--probe-out", str(probed)], check=True, capture_output=True, cwd=ROOT)
        if rows:  # at θ0, against the previous code: which part of the loss + gradient changed?
            row["probe_vs_previous"] = _probe_differences(work / f"probe-{rows[-1]['code'].split()[0]}.npz", probed)
        if tree == ROOT:  # this checkout twice: is one code version deterministic?
            row["repeat"] = compare(mine, read_history(train(tree, key + "-again", args, work)), args.epochs)
        rows.append(row)
        print(f"{label}: repeated run {row.get('repeat')}; "
              + "; ".join(f"{p}: {c}" for p, c in row["against"].items()), flush=True)
    names = list(against)
    pairs = [{"runs": [a, b], **divergence(against[a]["relative_rmse"], against[b]["relative_rmse"])}
             for i, a in enumerate(names) for b in names[i + 1:]]
    for pair in pairs:
        print(f"{pair['runs'][0]} vs {pair['runs'][1]}: {pair}", flush=True)
    out = RESULTS / "reproducibility.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scenario": args.scenario, "mesh": args.mesh, "N": args.N, "seed": args.seed,
                               "epochs": args.epochs, "rows": rows, "pairs": pairs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
