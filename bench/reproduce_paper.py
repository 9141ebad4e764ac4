"""Width study of the paper's scenarios at a fixed budget of iterations, next to the reference figures.

Run inside the environment (serially; each run is a full training):

    scripts/env-run python3 bench/reproduce_paper.py --scenario heat --N 10 100 500 --epochs 1000
    scripts/env-run python3 bench/reproduce_paper.py --scenario allen-cahn --N 100 --epochs 1000
    scripts/env-run python3 bench/reproduce_paper.py --scenario heat --N 100 --lbfgs 300

For each scenario and width N it trains ``demos/paper_<scenario>.toml`` (Adam
with the width-scaled learning rate and the plateau schedule, as the paper)
and records the best relative RMSE so far (the paper plots the running
minimum) at 500, 1000, 2000 and 5000 epochs (those within the budget).  The
relative RMSE is ``sqrt(J)/max|h|`` of the FEM loss (P1, h = 0.025, 64
backward-Euler steps); the reference code's is the same quantity on its
finite-difference grid.  With ``--lbfgs K`` it also runs L-BFGS for K
iterations and reports how many iterations L-BFGS needs to reach Adam's best
value at the largest budget.

Writes ``<out>/<scenario>.md`` (a table with the reference figures from
../shared/notes/paper-scenario.md), ``<out>/<scenario>_rmse.png`` (running-min
relative RMSE vs epoch per N) and ``<out>/<scenario>.json``.  Run directories go
to ``--runs`` (default ``.scratch/paper-runs``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from mpi4py import MPI

from femnpde.io.output import History
from femnpde.app.training import train

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Reference code (explicit FD, PyTorch, float32), 'difficult' target, seed 42: relative RMSE
#: (running min) at {start, 500, 1000, 2000, 5000} epochs (../shared/notes/paper-scenario.md).
REFERENCE = {
    "heat": {
        10: {0: 0.095, 500: 0.0298, 1000: 0.0154, 2000: 0.0132, 5000: 0.0120},
        100: {0: 0.149, 500: 0.0189, 1000: 0.0167, 2000: 0.0077, 5000: 0.0040},
        500: {0: 0.166, 500: 0.0184, 1000: 0.0118, 2000: 0.0075},
    },
    "allen-cahn": {100: {0: 0.267, 500: 0.0277, 1000: 0.0205, 2000: 0.0120}},
}
MARKS = (500, 1000, 2000, 5000)


def running_min(values: np.ndarray) -> np.ndarray:
    return np.minimum.accumulate(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["heat", "allen-cahn"], default="heat")
    parser.add_argument("--N", nargs="+", type=int, default=[10, 100, 500])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--lbfgs", type=int, default=0, help="also run L-BFGS for this many iterations")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--runs", default=str(ROOT / ".scratch" / "paper-runs"))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    config = ROOT / "demos" / f"paper_{args.scenario.replace('-', '_')}.toml"
    out = pathlib.Path(args.out)
    runs = pathlib.Path(args.runs)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    results = {"scenario": args.scenario, "epochs": args.epochs, "ranks": comm.size, "runs": {}}
    for N in args.N:
        run_dir = runs / f"{args.scenario}-N{N}-adam"
        t0 = time.perf_counter()
        train(
            config,
            out=run_dir,
            overrides=[f"network.neurons={N}", f"run.iterations={args.epochs}", f"run.checkpoint_every={args.epochs}"],
            quiet=True,
            comm=comm,
            write_outputs=False,
            overwrite=True,
        )
        wall = time.perf_counter() - t0
        rmse = History.read(run_dir / "history.csv")["relative_rmse"]
        best = running_min(rmse)
        entry = {
            "start": float(rmse[0]),
            "at": {m: float(best[m - 1]) for m in MARKS if m <= len(best)},
            "final_best": float(best[-1]),
            "wall_time_s": wall,
            "s_per_epoch": wall / args.epochs,
            "curve": best.tolist(),
        }
        results["runs"][N] = entry
        if comm.rank == 0:
            print(f"{args.scenario} N={N}: start {entry['start']:.4f}, best {entry['final_best']:.4g} "
                  f"after {args.epochs} epochs, {wall:.0f} s", flush=True)
    if args.lbfgs:
        N = args.N[len(args.N) // 2] if len(args.N) > 1 else args.N[0]
        run_dir = runs / f"{args.scenario}-N{N}-lbfgs"
        t0 = time.perf_counter()
        train(
            config,
            out=run_dir,
            overrides=[f"network.neurons={N}", "optimizer.kind='lbfgs'", "optimizer.schedule.kind='none'",
                       f"run.iterations={args.lbfgs}", f"run.checkpoint_every={args.lbfgs}"],
            quiet=True,
            comm=comm,
            write_outputs=False,
            overwrite=True,
        )
        wall = time.perf_counter() - t0
        best = running_min(History.read(run_dir / "history.csv")["relative_rmse"])
        target = results["runs"][N]["final_best"]
        hit = np.flatnonzero(best <= target)
        results["lbfgs"] = {
            "N": N,
            "iterations": args.lbfgs,
            "final_best": float(best[-1]),
            "iterations_to_adam_best": int(hit[0]) + 1 if hit.size else None,
            "adam_best": target,
            "wall_time_s": wall,
        }
        if comm.rank == 0:
            print(f"L-BFGS N={N}: best {best[-1]:.4g} after {args.lbfgs} iterations; iterations to Adam's "
                  f"{args.epochs}-epoch best {target:.4g}: {results['lbfgs']['iterations_to_adam_best']}",
                  flush=True)
    if comm.rank != 0:
        return
    ref = REFERENCE[args.scenario]
    marks = [m for m in MARKS if m <= args.epochs]
    head = "| N | start (femnpde / ref) | " + " | ".join(f"{m} epochs (femnpde / ref)" for m in marks) + " | s/epoch |"
    lines = [
        f"Width study, {args.scenario}, 'difficult' target, Adam + plateau schedule as the paper, "
        f"{comm.size} rank(s); best relative RMSE so far (sqrt(J)/max|h|).",
        "",
        head,
        "|" + "---|" * (len(marks) + 3),
    ]
    for N, e in results["runs"].items():
        r = ref.get(N, {})
        cells = [f"{e['start']:.4f} / {r.get(0, float('nan')):.4f}"]
        for m in marks:
            cells.append(f"{e['at'].get(m, float('nan')):.4f} / {r[m]:.4f}" if m in r else f"{e['at'].get(m, float('nan')):.4f} / –")
        lines.append(f"| {N} | " + " | ".join(cells) + f" | {e['s_per_epoch']:.3f} |")
    if "lbfgs" in results:
        lb = results["lbfgs"]
        k = lb["iterations_to_adam_best"]
        reach = f"after {k} iterations" if k is not None else f"not within {lb['iterations']} iterations"
        lines += [
            "",
            f"L-BFGS (scipy, N={lb['N']}): best {lb['final_best']:.4g} after {lb['iterations']} iterations "
            f"({lb['wall_time_s']:.0f} s); reaches Adam's {args.epochs}-epoch best ({lb['adam_best']:.4g}) {reach}.",
        ]
    (out / f"{args.scenario}.md").write_text("\n".join(lines) + "\n")
    (out / f"{args.scenario}.json").write_text(json.dumps(
        {**results, "runs": {str(k): {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in results["runs"].items()}},
        indent=1,
    ))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for N, e in results["runs"].items():
        ax.semilogy(np.arange(len(e["curve"])), e["curve"], label=f"N = {N}")
        for m, v in ref.get(N, {}).items():
            if 0 < m <= args.epochs:
                ax.plot([m], [v], "kx")
    ax.set_xlabel("epoch")
    ax.set_ylabel("relative RMSE (running min)")
    ax.set_title(f"{args.scenario}: femnpde (lines) vs reference code (x)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{args.scenario}_rmse.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
