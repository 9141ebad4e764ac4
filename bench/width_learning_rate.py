"""Is the width study's learning rate too large off the rectangle? (issue 17: Allen–Cahn does not fall with N)

Serial; short Adam runs (the study's plateau schedule) of one (scenario, mesh, N,
seed) with the learning rate scaled by each ``--factors`` entry, equal epochs:

    scripts/env-run python3 bench/width_learning_rate.py --scenario allen-cahn-imex --mesh annulus --N 100 \\
        --epochs 500 --factors 1,0.5,0.25
    scripts/env-run python3 bench/width_learning_rate.py --scenario allen-cahn-imex --mesh box --N 500 \\
        --epochs 100 --factors 1,0.25,0.0625

The study trains with lr = 0.01·N^(1/3) (the paper's rule) for every scenario and
mesh.  Off the rectangle, Allen–Cahn's best relative RMSE at 1000 epochs grows
with N and its histories oscillate (the value rises by more than 10 % from one
epoch to the next tens of times; the last epochs sit far above the best).  If
the step is too large for that problem, a smaller factor trains better at equal
epochs and oscillates less; this script measures it.  Per factor it records the
start, the best value so far at each of ``--marks``, the final value, the number
of epochs whose value rises by more than 10 % over the previous one, the largest
value after epoch 0 and the learning rate at the end (the plateau schedule's).
The runs are ``femnpde sweep`` runs in ``--runs`` (resumable).  Writes
``bench/results/width/learning_rate-<scenario>-<mesh>-N<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import time

import numpy as np
from _paper import MESHES, SCENARIOS, bench_module, study

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "width"


def history_summary(rmse: np.ndarray, lr: np.ndarray, marks: list[int], grad: np.ndarray | None = None) -> dict:
    """What one run's history says: best so far at the marks, oscillations, the final learning rate."""
    rmse = np.asarray(rmse, dtype=float)
    best = np.minimum.accumulate(rmse)
    return {
        "epochs": int(rmse.size), "start": float(rmse[0]), "final": float(rmse[-1]), "best": float(best[-1]),
        "best_epoch": int(np.argmin(rmse)),
        "best_at": {str(m): float(best[m - 1]) for m in marks if m <= rmse.size},
        "rises_over_10_percent": int(np.sum(rmse[1:] > 1.1 * rmse[:-1])),
        "max_after_start": float(np.max(rmse[1:])) if rmse.size > 1 else float(rmse[0]),
        "first_epochs": [float(v) for v in rmse[:6]],
        "final_learning_rate": float(lr[-1]),
        "first_gradient_norms": [float(v) for v in grad[:6]] if grad is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=SCENARIOS, default="allen-cahn-imex")
    parser.add_argument("--mesh", choices=MESHES, default="annulus")
    parser.add_argument("--N", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--factors", default="1,0.5,0.25", help="multipliers of the study's lr = 0.01·N^(1/3)")
    parser.add_argument("--marks", default="50,100,200,300,500,1000")
    parser.add_argument("--runs", default=str(ROOT / ".scratch" / "width_lr"))
    parser.add_argument("--against", help="the study's run directory of this configuration (factor 1): how fast do "
                        "the two histories (other code versions: round-off apart) drift apart?")
    args = parser.parse_args()
    from mpi4py import MPI

    from femnpde.app.loading import load_config
    from femnpde.app.sweep import sweep
    from femnpde.io.history import History

    config, overrides = study.config_of(args.scenario, args.mesh)
    base_lr = float(load_config(config, overrides)["optimizer"]["lr"])
    marks = [int(m) for m in args.marks.split(",")]
    out = RESULTS / f"learning_rate-{args.scenario}-{args.mesh}-N{args.N}.json"
    before = {r["factor"]: r for r in json.loads(out.read_text())["rows"]} if out.is_file() else {}
    rows = []
    for factor in (float(f) for f in args.factors.split(",")):
        runs = pathlib.Path(args.runs) / f"{args.scenario}-{args.mesh}-lr{factor:g}"
        cpu0 = time.process_time()
        (done,) = sweep(config, [args.N], out=runs, seeds=[args.seed], quiet=True, comm=MPI.COMM_SELF,
                        write_outputs=False,
                        overrides=[*overrides, f"optimizer.lr={base_lr * factor!r}", f"run.iterations={args.epochs}",
                                   f"run.checkpoint_every={min(100, args.epochs)}"])
        hist = History.read(runs / f"N{args.N}-seed{args.seed}" / "history.csv")
        row = {"factor": factor, "lr": base_lr * factor * args.N ** (1.0 / 3.0),
               **history_summary(hist["relative_rmse"], hist["learning_rate"], marks, hist["gradient_norm"]),
               "wall_time_s": done["wall_time"], "s_per_epoch": done["s_per_epoch"], "status": done["status"],
               # CPU time of the training in this process; a finished run re-read keeps the figure recorded before
               "cpu_time_s": (time.process_time() - cpu0 if done["status"] != "skipped"
                              else before.get(factor, {}).get("cpu_time_s"))}
        if args.against and factor == 1.0:
            there = pathlib.Path(args.against)
            study_rmse = np.asarray(History.read(there / "history.csv")["relative_rmse"], float)
            drift = bench_module("width_reproducibility").divergence(np.asarray(hist["relative_rmse"], float), study_rmse)
            row["against_study_run"] = {"run": f"{there.parent.name}/{there.name}", **drift}
        rows.append(row)
        print(f"{args.scenario} {args.mesh} N={args.N} lr x{factor:g} ({row['lr']:.4g}): best {row['best']:.4f} "
              f"(epoch {row['best_epoch']}), final {row['final']:.4f}, {row['rises_over_10_percent']} rises > 10 %, "
              f"best at marks {row['best_at']}; {row['wall_time_s']:.0f} s wall, CPU {row['cpu_time_s']} s", flush=True)
    data = {"scenario": args.scenario, "mesh": args.mesh, "N": args.N, "seed": args.seed, "epochs": args.epochs,
            "base_lr": "0.01·N^(1/3) (the study's)", "rows": rows,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
