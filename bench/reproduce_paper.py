"""The paper's width study (issue 17): runs as resumable ``femnpde sweep`` jobs, results, README tables.

Run inside the environment, serially (the 861-dof problem gains nothing from more ranks):

    # one sweep: Adam + the paper's plateau schedule, N x seeds, to a budget (resumable: re-run to continue)
    scripts/env-run python3 bench/reproduce_paper.py run --scenario heat --N 10,100,500 --seeds 42,1,2,3,4 --epochs 1000
    # the same on the annulus / the 3D box, Allen-Cahn, a 5000-epoch budget (group "long"), L-BFGS
    scripts/env-run python3 bench/reproduce_paper.py run --scenario heat --mesh annulus --N 10,100,500 --seeds 42
    scripts/env-run python3 bench/reproduce_paper.py run --scenario heat --N 10,100 --seeds 42 --epochs 5000 --group long
    scripts/env-run python3 bench/reproduce_paper.py run --scenario heat --N 10,100,500 --seeds 42 --lbfgs --epochs 1000
    # the whole study in priority order (each item resumable), with a report after each sweep
    scripts/env-run python3 bench/reproduce_paper.py plan [--stop-at 22:40]
    # results: bench/results/width/<scenario>-<mesh>.json, <scenario>-<mesh>_rmse_vs_N.png, README block
    scripts/env-run python3 bench/reproduce_paper.py report

A sweep's run directories live in ``--runs`` (default ``.scratch/width``), one
sweep directory per (scenario, mesh, group): ``heat-rectangle`` (Adam, the
seeds), ``heat-rectangle-long`` (longer budgets), ``heat-rectangle-lbfgs``.
``report`` reads every finished run (``result.json`` and ``history.csv``) and
writes, per (scenario, mesh), the JSON (per N and seed: start value, best
relative RMSE so far at 500/1000/2000/5000 epochs, s/epoch; L-BFGS:
iterations and wall time to reach the reference's 1000- and 5000-epoch
values), the plot of the best relative RMSE against N (median and range over
seeds, the reference as crosses) and the README block between
``<!-- width-study:begin -->`` and ``<!-- width-study:end -->``.  No figure
of that block is typed by hand.

The relative RMSE is ``sqrt(J)/max|h|`` of the FEM loss (P1, h = 0.025, 64
backward-Euler steps); the reference code's is the same quantity on its
finite-difference grid (explicit Euler, 64 levels).

Scenario ``allen-cahn-imex`` is the same Allen–Cahn problem with its cubic
term explicit (``time.nonlinear = "explicit"``; the linear part stays backward
Euler): its own data, its own sweep directories and tables, about 4x cheaper
per epoch than the default implicit scheme.  Runs recorded in
``bench/results/width/*.json`` whose run directories are gone stay in the
record (``report`` merges them; a run directory holding the same (N, seed)
for at least as many epochs replaces them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "width"
README = ROOT / "README.md"
BEGIN, END = "<!-- width-study:begin -->", "<!-- width-study:end -->"

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
#: The same Allen–Cahn problem with the cubic term explicit (``time.nonlinear = "explicit"``, IMEX): the
#: reference code's own scheme is fully explicit Euler, so its figures are the comparison here too.
REFERENCE["allen-cahn-imex"] = REFERENCE["allen-cahn"]
SCENARIOS = ("heat", "allen-cahn", "allen-cahn-imex")
MARKS = (500, 1000, 2000, 5000)
MESHES = {"rectangle": "the paper's rectangle (structured, 861 vertices)",
          "annulus": "meshes/annulus_holes (unstructured 2D, 1067 vertices)",
          "box": "meshes/box_cavity (3D, 686 vertices)"}
ALLEN_CAHN = ["pde.preset='allen-cahn'", "pde.epsilon=0.32"]
IMEX = ["time.nonlinear='explicit'"]


def config_of(scenario: str, mesh: str) -> tuple[pathlib.Path, list[str]]:
    """The configuration file and overrides of (scenario, mesh)."""
    pde, imex = scenario.removesuffix("-imex"), IMEX if scenario.endswith("-imex") else []
    if mesh == "rectangle":
        return ROOT / "demos" / f"paper_{pde.replace('-', '_')}.toml", imex
    return ROOT / "demos" / f"width_{mesh}_heat.toml", (ALLEN_CAHN if pde == "allen-cahn" else []) + imex


def sweep_dir(runs: pathlib.Path, scenario: str, mesh: str, group: str) -> pathlib.Path:
    """The sweep directory of (scenario, mesh, group): ``<scenario>-<mesh>[-<group>]``."""
    return runs / (f"{scenario}-{mesh}" + ("" if group == "adam" else f"-{group}"))


def run_sweep(scenario: str, mesh: str, widths: list[int], seeds: list[int], epochs: int, group: str,
              lbfgs: bool, runs: pathlib.Path, comm) -> list[dict]:
    """One resumable sweep (collective); returns its rows."""
    from femnpde.app.sweep import sweep

    config, overrides = config_of(scenario, mesh)
    overrides = [*overrides, f"run.iterations={epochs}"]
    if lbfgs:
        overrides += ["optimizer.kind='lbfgs'", "optimizer.schedule.kind='none'", f"run.checkpoint_every={epochs}"]
    else:
        overrides += ["run.checkpoint_every=100"]
    group = "lbfgs" if lbfgs else group
    return sweep(config, widths, out=sweep_dir(runs, scenario, mesh, group), overrides=overrides, quiet=True,
                 comm=comm, seeds=seeds, write_outputs=False)


# --------------------------------------------------------------------------- the plan
#: The study in priority order: (scenario, mesh, N, seeds, epochs, group, lbfgs).
SEEDS = [42, 1, 2, 3, 4]
PLAN = [
    ("heat", "rectangle", [10, 100], SEEDS, 1000, "adam", False),
    ("heat", "rectangle", [500], [42], 1000, "adam", False),
    # the 5 of 1000 draws whose start is closest to the reference's 0.095 (bench/width_initial_draws.py)
    ("heat", "rectangle", [10], [477, 703, 497, 781, 995], 2000, "matched", False),
    ("allen-cahn", "rectangle", [10], [42], 1000, "adam", False),
    ("heat", "rectangle", [10, 100], [42], 1000, "lbfgs", True),
    ("heat", "annulus", [10, 100], [42], 1000, "adam", False),
    ("heat", "box", [10, 100], [42], 1000, "adam", False),
    ("heat", "rectangle", [10], [42], 5000, "long", False),
    ("allen-cahn", "rectangle", [100], [42], 1000, "adam", False),
    ("heat", "rectangle", [100], [42], 5000, "long", False),
    ("heat", "rectangle", [500], [42], 400, "lbfgs", True),
    ("heat", "annulus", [500], [42], 1000, "adam", False),
    ("heat", "box", [500], [42], 1000, "adam", False),
    ("heat", "rectangle", [1000], [42], 1000, "adam", False),
    ("allen-cahn", "rectangle", [10], SEEDS[1:], 1000, "adam", False),
    ("heat", "rectangle", [500], SEEDS[1:], 1000, "adam", False),
    ("allen-cahn", "rectangle", [100], SEEDS[1:], 1000, "adam", False),
    ("heat", "rectangle", [10], list(range(5, 15)), 1000, "adam", False),
    ("allen-cahn", "annulus", [10, 100], [42], 1000, "adam", False),
    ("allen-cahn", "box", [10, 100], [42], 1000, "adam", False),
    ("allen-cahn", "rectangle", [500], [42], 1000, "adam", False),
]


def run_plan(runs: pathlib.Path, stop_at: datetime.datetime | None, comm, **where) -> None:
    """Run :data:`PLAN` in order, one resumable run at a time (N, then seed); JSON and plots after each."""
    for item in PLAN:
        scenario, mesh, widths, seeds, epochs, group, lbfgs = item
        for N, seed in ((N, seed) for N in widths for seed in seeds):
            what = f"{scenario} {mesh} N={N} seed {seed} {epochs} epochs {group}"
            if stop_at is not None and datetime.datetime.now(datetime.UTC) >= stop_at:
                print(f"plan: stop time reached; not started: {what}", flush=True)
                continue
            print(f"plan: {datetime.datetime.now(datetime.UTC):%H:%M:%S} {what}", flush=True)
            rows = run_sweep(scenario, mesh, [N], [seed], epochs, group, lbfgs, runs, comm)
            for r in rows:
                print(f"plan:   {scenario} {mesh} N={r['N']} seed={r['seed']} {r['status']} {r['epochs']} epochs, "
                      f"best {r['best_rmse']:.4g}, {r['s_per_epoch']:.3f} s/epoch", flush=True)
            if comm.rank == 0:
                report(runs, **where)


# --------------------------------------------------------------------------- collecting
def _history(run_dir: pathlib.Path) -> dict:
    from femnpde.io.history import History

    return History.read(run_dir / "history.csv")


def collect(runs: pathlib.Path) -> dict[tuple[str, str], dict]:
    """Every finished run under ``runs``, by (scenario, mesh): ``{"adam": [...], "lbfgs": [...]}``."""
    import tomllib

    from femnpde.app.sweep import RESULT_FILE, read_result

    out: dict[tuple[str, str], dict] = {}
    for result in sorted(runs.glob(f"*/N*/{RESULT_FILE}")):
        run_dir = result.parent
        rec = read_result(run_dir)
        cfg = tomllib.loads(rec.config)
        scenario = "allen-cahn" if cfg["pde"].get("preset") == "allen-cahn" else "heat"
        if cfg.get("time", {}).get("nonlinear") == "explicit":
            scenario += "-imex"
        mesh, _, sweep_group = run_dir.parent.name.removeprefix(f"{scenario}-").partition("-")
        hist = _history(run_dir)
        rmse = np.asarray(hist["relative_rmse"], dtype=float)
        best = np.minimum.accumulate(rmse)
        wall = np.asarray(hist["wall_time"], dtype=float)
        entry = {
            "N": rec.N, "seed": rec.seed, "epochs": rec.epochs, "start": float(rmse[0]),
            "best_at": {str(m): float(best[m - 1]) for m in MARKS if m <= rec.epochs},
            "final_best": float(best[-1]), "s_per_epoch": rec.s_per_epoch, "wall_time_s": rec.wall_time,
            "run": str(run_dir.relative_to(runs)), "group": sweep_group or "adam", "load_average": rec.load_average,
        }
        kind = cfg["optimizer"]["kind"]
        group = out.setdefault((scenario, mesh), {"adam": [], "lbfgs": [], "matched": []})
        if kind == "lbfgs":
            # wall time restarts at a resumed segment: summed per-iteration steps
            steps = np.diff(wall, prepend=0.0)
            steps[steps < 0] = wall[steps < 0]
            elapsed = np.cumsum(steps)
            reach = {}
            for m in (1000, 5000):
                target = REFERENCE.get(scenario, {}).get(rec.N, {}).get(m)
                if target is None:
                    continue
                hit = np.flatnonzero(best <= target)
                reach[str(m)] = {"reference": target,
                                 "iterations": int(hit[0]) + 1 if hit.size else None,
                                 "wall_time_s": float(elapsed[hit[0]]) if hit.size else None}
            entry["to_reference"] = reach
            group["lbfgs"].append(entry)
        elif entry["group"] == "matched":  # seeds chosen by their start value: not a random sample
            group["matched"].append(entry)
        elif kind == "adam":
            group["adam"].append(entry)
    for group in out.values():  # one entry per (N, seed): the longest run (runs are deterministic)
        keep: dict[tuple[int, int], dict] = {}
        group["repeated"] = []
        for e in group["adam"]:
            k = (e["N"], e["seed"])
            if k in keep:  # the same run twice (a 1000- and a 5000-epoch sweep): how far apart are they?
                a, b = keep[k], e
                common = min(a["epochs"], b["epochs"])
                ha = np.asarray(_history(runs / a["run"])["relative_rmse"][:common], dtype=float)
                hb = np.asarray(_history(runs / b["run"])["relative_rmse"][:common], dtype=float)
                group["repeated"].append({"N": e["N"], "seed": e["seed"], "epochs": common,
                                          "max_abs_difference": float(np.max(np.abs(ha - hb)))})
            if k not in keep or e["epochs"] > keep[k]["epochs"]:
                keep[k] = e
        group["adam"] = sorted(keep.values(), key=lambda e: (e["N"], e["seed"]))
        group["lbfgs"].sort(key=lambda e: e["N"])
    return out


def _stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def summarise(scenario: str, group: dict) -> dict:
    """Per N: median/min/max over seeds of the start and of the best value at each mark, with the reference."""
    per_N: dict[str, dict] = {}
    for N in sorted({e["N"] for e in group["adam"]}):
        runs = [e for e in group["adam"] if e["N"] == N]
        row = {"seeds": [e["seed"] for e in runs], "start": _stats([e["start"] for e in runs]),
               "s_per_epoch": _stats([e["s_per_epoch"] for e in runs]), "at": {},
               "load_average": _stats(loads) if (loads := [e["load_average"] for e in runs
                                                          if e.get("load_average") is not None]) else None,
               "reference": {str(k): v for k, v in REFERENCE.get(scenario, {}).get(N, {}).items()}}
        for m in MARKS:
            vals = [e["best_at"][str(m)] for e in runs if str(m) in e["best_at"]]
            if vals:
                row["at"][str(m)] = _stats(vals)
        per_N[str(N)] = row
    return per_N


# --------------------------------------------------------------------------- reporting
def _cell(s: dict | None, ref: float | None) -> str:
    if s is None:
        return "not run" + (f" / {ref:.4f}" if ref is not None else "")
    text = f"{s['median']:.4f}" if s["n"] == 1 else f"{s['median']:.4f} [{s['min']:.4f}, {s['max']:.4f}] (n={s['n']})"
    return text + (f" / {ref:.4f}" if ref is not None else " / –")


def _plot(scenario: str, mesh: str, per_N: dict, png: pathlib.Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    widths = sorted(int(N) for N in per_N)
    for m, colour in zip(MARKS, ("C0", "C1", "C2", "C3")):
        pts = [(N, per_N[str(N)]["at"][str(m)]) for N in widths if str(m) in per_N[str(N)]["at"]]
        if not pts:
            continue
        x = np.array([p[0] for p in pts], dtype=float)
        med = np.array([p[1]["median"] for p in pts])
        lo = med - np.array([p[1]["min"] for p in pts])
        hi = np.array([p[1]["max"] for p in pts]) - med
        ax.errorbar(x, med, yerr=[lo, hi], fmt="o-", color=colour, capsize=3, label=f"{m} epochs")
        ref = [(N, per_N[str(N)]["reference"].get(str(m))) for N in widths]
        ref = [(N, v) for N, v in ref if v is not None]
        if ref and mesh == "rectangle":
            ax.plot([r[0] for r in ref], [r[1] for r in ref], "x", color=colour, markersize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("neurons N")
    ax.set_ylabel("best relative RMSE so far")
    ax.set_title(f"{scenario}, {mesh}: median and range over seeds" + (" (x: reference)" if mesh == "rectangle" else ""),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _findings(results: dict[tuple[str, str], dict], extras: dict) -> list[str]:
    """Bullets computed from the results and the other bench JSON files (no figure typed by hand)."""
    out = []
    disc = extras.get("discretisation")
    for (scenario, mesh), data in sorted(results.items()):
        for r in data.get("repeated", []):
            out.append(f"{scenario}, {mesh}, N = {r['N']}, seed {r['seed']}: the {r['epochs']} common epochs of its two "
                       f"runs (two sweeps) differ by at most {r['max_abs_difference']:.1e} in relative RMSE.")
    for (scenario, mesh), data in sorted(results.items()):
        per_N = data["summary"]
        widths = sorted(int(N) for N in per_N)
        for m in MARKS:
            pts = [(N, per_N[str(N)]["at"][str(m)]["median"]) for N in widths if str(m) in per_N[str(N)]["at"]]
            if len(pts) < 2:
                continue
            falls = all(b[1] < a[1] for a, b in zip(pts, pts[1:]))
            out.append(f"{scenario}, {mesh}, {m} epochs: the median falls with N: {'yes' if falls else 'no'} ("
                       + ", ".join(f"N={N}: {v:.4f}" for N, v in pts) + ").")
        if mesh != "rectangle":
            continue
        for N in widths:
            row = per_N[str(N)]
            parts = []
            for m in MARKS:
                ref, st = row["reference"].get(str(m)), row["at"].get(str(m))
                if ref is None or st is None:
                    continue
                k = sum(e["best_at"][str(m)] <= ref for e in data["runs"] if e["N"] == N and str(m) in e["best_at"])
                parts.append(f"{m}: median {100 * (st['median'] / ref - 1):+.0f} % vs the reference, "
                             f"{k} of {st['n']} seeds at or below it")
            if parts:
                out.append(f"{scenario}, N = {N}: " + "; ".join(parts) + ".")
        runs10 = [e for e in data["runs"] if e["N"] == 10 and "1000" in e["best_at"]]
        ref10 = REFERENCE.get(scenario, {}).get(10)
        if ref10 and len(runs10) >= 3:
            starts = [e["start"] for e in runs10]
            at = [e["best_at"]["1000"] for e in runs10]
            lo = min(runs10, key=lambda e: abs(e["start"] - ref10[0]))
            gap = float(np.median(at)) - ref10[1000]
            k = sum(v <= ref10[1000] for v in at)
            verdict = f"{k} of {len(at)} random draws reach the reference's 1000-epoch value"
            out.append(
                f"{scenario}, N = 10, the gap at 1000 epochs (median {float(np.median(at)):.4f} vs {ref10[1000]:.4f}, "
                f"gap {gap:.4f}): over {len(runs10)} seeds the 1000-epoch values span {min(at):.4f}–{max(at):.4f} "
                f"(spread {max(at) - min(at):.4f}); the starts span {min(starts):.4f}–{max(starts):.4f} against the "
                f"reference's {ref10[0]:.3f}; rank correlation start vs 1000-epoch value {_spearman(starts, at):+.2f}; "
                f"the seed starting closest to the reference's start (seed {lo['seed']}, {lo['start']:.4f}) reaches "
                f"{lo['best_at']['1000']:.4f}; {verdict}.")
        matched = [e for e in data.get("matched", []) if e["N"] == 10]
        if ref10 and matched:
            parts = []
            for m in MARKS:
                vals = [e["best_at"][str(m)] for e in matched if str(m) in e["best_at"]]
                if vals and str(m) in map(str, ref10):
                    parts.append(f"{m} epochs {float(np.median(vals)):.4f} [{min(vals):.4f}, {max(vals):.4f}] vs "
                                 f"{ref10[m]:.4f}")
            starts = [e["start"] for e in matched]
            text = (f"{scenario}, N = 10, draws matched to the reference's start: the {len(matched)} of 1000 seeds "
                    f"whose start is closest to {ref10[0]:.3f} (`bench/width_initial_draws.py`; starts "
                    f"{min(starts):.4f}–{max(starts):.4f}, seeds {', '.join(str(e['seed']) for e in matched)}) reach "
                    + ("; ".join(parts) if parts else "(no budget finished)") + " (best so far: median [min, max])")
            m_at = [e["best_at"]["1000"] for e in matched if "1000" in e["best_at"]]
            if m_at and runs10:
                rnd = float(np.median([e["best_at"]["1000"] for e in runs10]))
                med = float(np.median(m_at))
                share = (rnd - med) / (rnd - ref10[1000]) if rnd > ref10[1000] else float("nan")
                text += (f"; at 1000 epochs their median {med:.4f} against the random draws' {rnd:.4f} and the "
                         f"reference's {ref10[1000]:.4f}: a start like the reference's closes {100 * share:.0f} % "
                         "of the gap")
            out.append(text + ".")
    if disc:
        fd = "explicit FD (the reference's scheme, as described)"
        fd63 = "explicit FD, source at t = n/63"
        out.append(
            "Discretisations (`bench/width_discretisation.py`, `bench/results/width/discretisation.json`): the data h of "
            "femnpde (P1, 64 backward-Euler steps) and of an explicit FD scheme on the reference's grid (the source "
            "at the level's time or at the reference's input times n/63) differ by "
            + " and ".join(f"{min(disc[s][fd], disc[s].get(fd63, disc[s][fd])):.4f}–"
                           f"{max(disc[s][fd], disc[s].get(fd63, disc[s][fd])):.4f} ({s})"
                           for s in ("heat", "allen-cahn") if s in disc)
            + " in the relative-RMSE measure; femnpde's own time-discretisation error (64 vs 256 steps) is "
            + " and ".join(f"{disc[s]['femnpde, 256 time steps']:.4f} ({s})" for s in ("heat", "allen-cahn") if s in disc)
            + ". Each code fits its own data (loss 0 at g* by construction), so at equal epochs the two "
            "figures belong to problems that differ at that level.")
    draws = extras.get("initial_draws-heat-N10")
    if draws:
        q = draws["quantiles"]
        out.append(f"heat, N = 10, initial draws (`bench/width_initial_draws.py`): over {len(draws['seeds'])} seeds the "
                   f"start value has median {q['0.5']:.4f} and quartiles {q['0.25']:.4f}–{q['0.75']:.4f}; seed 42 "
                   f"starts at {draws['seed_42']:.4f}, the reference's draw at {draws['reference_start']:.3f}.")
    for scenario in ("heat", "allen-cahn"):
        fit = extras.get(f"network_fit-{scenario}")
        if not fit:
            continue
        cells = []
        for row in fit["rows"]:
            ref = REFERENCE.get(scenario, {}).get(row["N"], {})
            cells.append(f"N = {row['N']}: {row['relative_rmse_at_fit']:.4f} after {row['iterations']} iterations "
                         f"(g* to {row['relative_l2_error_of_g']:.3f} relative l2"
                         + (f"; reference at 1000 / 5000 epochs {ref.get(1000, float('nan')):.4f} / "
                            f"{ref.get(5000, float('nan')):.4f}" if ref else "") + ")")
        out.append(f"{scenario}, expressiveness (`bench/width_network_fit.py`): g_θ fitted directly to g* (L-BFGS, seed "
                   f"{fit['seed']}'s start) gives the PDE relative RMSE " + "; ".join(cells)
                   + ": a width N allows at least these values, so they bound its floor from above.")
    return out + _why_findings(results, extras)


def _why_findings(results: dict[tuple[str, str], dict], extras: dict) -> list[str]:
    """Bullets of bench/width_learning_rate.py's and bench/width_reproducibility.py's JSON (issue 17's 'why')."""
    out = []
    for name in sorted(k for k in extras if k.startswith("learning_rate-")):
        lr = extras[name]
        mark = str(lr["epochs"])
        study = results.get((lr["scenario"], lr["mesh"]), {}).get("summary", {})
        cells = [f"×{r['factor']:g} (lr {r['lr']:.3g}): best {r['best']:.4f} at epoch {r['best_epoch']}, final "
                 f"{r['final']:.4f}, {r['rises_over_10_percent']} rises > 10 %, last lr {r['final_learning_rate']:.3g}"
                 for r in lr["rows"]]
        text = (f"{lr['scenario']}, {lr['mesh']}, N = {lr['N']}, seed {lr['seed']}, the learning rate "
                f"(`bench/width_learning_rate.py`, {lr['epochs']} epochs each, the study's lr = 0.01·N^(1/3) times a "
                "factor): " + "; ".join(cells))
        best = min(lr["rows"], key=lambda r: r["best"])
        one = next((r for r in lr["rows"] if r["factor"] == 1.0), None)
        if one is not None:
            text += (f". Lowest with ×{best['factor']:g}, {100 * (1 - best['best'] / one['best']):.0f} % below ×1"
                     if best is not one else ". The study's lr (×1) is the best of these")
            text += (f"; starts at {one['start']:.4f}, first epochs at ×1 "
                     + ", ".join(f"{v:.4f}" for v in one["first_epochs"][1:]))
            if one.get("first_gradient_norms"):
                text += f" (gradient norm at the start {one['first_gradient_norms'][0]:.3g})"
        others = [(int(N), row["at"][mark]["median"]) for N, row in study.items()
                  if mark in row["at"] and int(N) != lr["N"]]
        if others:
            text += (f"; the study's other widths at {mark} epochs (lr ×1): "
                     + ", ".join(f"N = {N}: {v:.4f}" for N, v in sorted(others)))
        drift = one.get("against_study_run") if one is not None else None
        if drift:
            first = drift["first_epoch_above"]
            text += (f"; the study's run of this configuration ({drift['run']}, another code version: round-off apart) "
                     "differs from ×1 by more than " + ", ".join(
                         f"{lvl} (relative) from epoch {e}" if e is not None else f"{lvl}: never"
                         for lvl, e in first.items()) + f" (largest {drift['max_relative_difference']:.2g})")
        out.append(text + ".")
    for name in sorted(k for k in extras if k.startswith("network_fit-")):
        fit = extras[name]
        if fit.get("mesh", "rectangle") == "rectangle" and fit["scenario"] in ("heat", "allen-cahn"):
            continue  # rendered with the rectangle's figures above
        study = results.get((fit["scenario"], fit["mesh"]), {}).get("summary", {})
        cells = []
        for row in fit["rows"]:
            at = study.get(str(row["N"]), {}).get("at", {}).get("1000")
            cells.append(f"N = {row['N']}: {row['relative_rmse_at_fit']:.4f} after {row['iterations']} iterations "
                         f"(g* to {row['relative_l2_error_of_g']:.3f} relative l2, so the PDE error is "
                         f"{row['relative_rmse_at_fit'] / row['relative_l2_error_of_g']:.2g}× the source's; "
                         f"start {row['relative_rmse_at_start']:.4f}"
                         + (f"; max|h| {row['max_abs_h']:.3g}" if "max_abs_h" in row else "")
                         + (f"; Adam at 1000 epochs {at['median']:.4f}" if at else "") + ")")
        out.append(f"{fit['scenario']}, {fit['mesh']}, expressiveness (`bench/width_network_fit.py --mesh "
                   f"{fit['mesh']}`): g_θ fitted directly to the target source (L-BFGS, seed {fit['seed']}'s start) "
                   "gives the PDE relative RMSE " + "; ".join(cells)
                   + ": a width N allows at least these values, so they bound its floor from above.")
    for name in sorted(k for k in extras if k.startswith("first_step-")):
        fs = extras[name]
        cells = []
        for w in fs["widths"]:
            one, st0 = w["steps"][0], w["start"]
            lower = [st for st in w["steps"] if st["relative_rmse"] < st0["relative_rmse"]]
            cells.append(f"N = {w['N']}: lr ×{one['factor']:g} changes the source by "
                         f"{one['relative_source_change']:.3g} of ‖g*‖ (max {one['max_abs_source_change']:.3g}), "
                         f"relative RMSE {st0['relative_rmse']:.4f} → "
                         f"{one['relative_rmse']:.4f}, max error {st0['relative_max_error']:.2f} → "
                         f"{one['relative_max_error']:.2f}; "
                         + (f"the largest step that lowers the RMSE: ×{lower[0]['factor']:g} (→ "
                            f"{lower[0]['relative_rmse']:.4f})" if lower else
                            f"no step down to ×{w['steps'][-1]['factor']:g} lowers it"))
        out.append(f"{fs['scenario']}, {fs['mesh']}, seed {fs['seed']}, Adam's first step "
                   f"(`bench/width_first_step.py`; every parameter moves by about lr; max|g*| "
                   f"{fs['widths'][0]['max_abs_target_source']:.3g}, max|h| {fs['widths'][0]['max_abs_h']:.3g}; "
                   "max error = max|u − h|/max|h|, 2 where u ≈ −h): "
                   + "; ".join(cells) + ".")
    rep = extras.get("reproducibility")
    if rep:
        parts = []
        runs = sorted({p for r in rep["rows"] for p in r["against"]})
        for run in runs:
            same = [r["code"].split()[0] for r in rep["rows"] if r["against"][run]["first_differing_epoch"] is None]
            diff = [f"{r['code'].split()[0]} from epoch {r['against'][run]['first_differing_epoch']} (at most "
                    f"{r['against'][run]['max_abs_rmse_difference']:.1e})"
                    for r in rep["rows"] if r["against"][run]["first_differing_epoch"] is not None]
            parts.append(f"{run} is reproduced bitwise by " + (", ".join(same) if same else "none of them")
                         + ("; it differs from " + ", ".join(diff) if diff else ""))
        repeat = [r for r in rep["rows"] if r.get("repeat")]
        text = (f"{rep['scenario']}, {rep['mesh']}, N = {rep['N']}, seed {rep['seed']}, which code produced each run "
                f"(`bench/width_reproducibility.py`, its first {rep['epochs']} epochs retrained by the code of "
                + ", ".join(f"{r['code']} [{r['commit'][:25]}]" for r in rep["rows"]) + "): " + "; ".join(parts))
        if repeat:
            rr = repeat[0]["repeat"]
            text += ("; this checkout run twice: " + ("bitwise equal" if rr["first_differing_epoch"] is None
                                                      else f"differs from epoch {rr['first_differing_epoch']}"))
        probes = [(r["code"].split()[0], r["probe_vs_previous"]) for r in rep["rows"] if r.get("probe_vs_previous")]
        if probes:
            text += ("; at the initial θ, largest relative difference to the previous code (0: bitwise equal) of the "
                     "loss / the source's grid values / the network's VJP of a fixed cotangent / the gradient: "
                     + ", ".join(f"{c} {d['loss']:.2g} / {d['source_grid_values']:.2g} / {d['network_vjp']:.2g} / "
                                 f"{d['gradient']:.2g}" for c, d in probes))
        for pair in rep.get("pairs", []):
            text += (f"; over their {pair['epochs']} common epochs {pair['runs'][0]} and {pair['runs'][1]} differ in "
                     "relative RMSE by more than " + ", ".join(
                         f"{lvl} from epoch {e}" if e is not None else f"{lvl} never"
                         for lvl, e in pair["first_epoch_above"].items())
                     + f" (largest {pair['max_relative_difference']:.2g}, relative)")
        out.append(text + ".")
    return out


#: What issue 17 asks for: (scenario, mesh) -> (widths, largest budget, seeds at 1000 epochs).
REQUESTED = {
    ("heat", "rectangle"): ([10, 100, 500, 1000], 5000, 5),
    ("allen-cahn", "rectangle"): ([10, 100, 500], 5000, 5),
    ("heat", "annulus"): ([10, 100, 500], 1000, 1),
    ("heat", "box"): ([10, 100, 500], 1000, 1),
    ("allen-cahn", "annulus"): ([10, 100, 500], 1000, 1),
    ("allen-cahn", "box"): ([10, 100, 500], 1000, 1),
}


def _not_run(results: dict[tuple[str, str], dict]) -> list[str]:
    """What the issue asks for and the finished runs do not cover."""
    out = []
    for (scenario, mesh), (widths, budget, n_seeds) in REQUESTED.items():
        per_N = results.get((scenario, mesh), {}).get("summary", {})
        for N in widths:
            row = per_N.get(str(N))
            n1000 = row["at"]["1000"]["n"] if row and "1000" in row["at"] else 0
            longest = max((m for m in MARKS if row and str(m) in row["at"]), default=0)
            if longest == 0:
                out.append(f"{scenario}, {mesh}, N = {N}: not run")
                continue
            gaps = []
            if n1000 < n_seeds:
                gaps.append(f"{n1000} of {n_seeds} seeds at 1000 epochs")
            if longest < budget:
                gaps.append(f"the {budget}-epoch budget (longest finished: {longest or 'none'})")
            if gaps:
                out.append(f"{scenario}, {mesh}, N = {N}: " + "; ".join(gaps))
    lbfgs = {e["N"] for e in results.get(("heat", "rectangle"), {}).get("lbfgs", [])}
    out += [f"heat, rectangle, N = {N}: the L-BFGS counts" for N in (10, 100, 500) if N not in lbfgs]
    return out


def _block(results: dict[tuple[str, str], dict], extras: dict | None = None) -> str:
    lines = [BEGIN, "", "<!-- generated by `scripts/env-run python3 bench/reproduce_paper.py report` from "
             "bench/results/width/*.json; do not edit by hand -->", ""]
    order = sorted(results, key=lambda k: (list(MESHES).index(k[1]), SCENARIOS.index(k[0])))
    for scenario, mesh in order:
        data = results[(scenario, mesh)]
        per_N = data["summary"]
        if not per_N and not data["lbfgs"]:
            continue
        lines += [f"**{scenario}, {MESHES[mesh]}** (Adam + plateau schedule; best relative RMSE so far: median "
                  f"[min, max] over n seeds" + (" / reference code, seed 42)" if mesh == "rectangle" else ")")
                  + f" — `bench/results/width/{scenario}-{mesh}.json`", ""]
        lines += ["| N | seeds | start | " + " | ".join(f"{m} epochs" for m in MARKS) + " | s/epoch |",
                  "|---|---|---|" + "---|" * len(MARKS) + "---|"]
        for N, row in sorted(per_N.items(), key=lambda kv: int(kv[0])):
            ref = row["reference"] if mesh == "rectangle" else {}
            cells = [_cell(row["start"], ref.get("0"))]
            cells += [_cell(row["at"].get(str(m)), ref.get(str(m))) for m in MARKS]
            load = row.get("load_average")
            lines.append(f"| {N} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells)
                         + f" | {row['s_per_epoch']['median']:.3f}"
                         + (f" (load {load['min']:.1f}–{load['max']:.1f})" if load else "") + " |")
        lines += ["", f"![{scenario} {mesh} width study](bench/results/width/{scenario}-{mesh}_rmse_vs_N.png)", ""]
        if data["lbfgs"]:
            lines += [f"L-BFGS (scipy L-BFGS-B, memory 10, seed {data['lbfgs'][0]['seed']}, {scenario}, {mesh}): "
                      "iterations and wall time to "
                      "reach the reference's 1000- and 5000-epoch values (Adam, float32); an iteration may take "
                      "several loss + gradient evaluations (line search), the wall time counts them all "
                      "(under the load of the table above)", "",
                      "| N | iterations run | best | to the 1000-epoch value | to the 5000-epoch value |",
                      "|---|---|---|---|---|"]
            for e in data["lbfgs"]:
                cells = []
                for m in ("1000", "5000"):
                    r = e["to_reference"].get(m)
                    if r is None:
                        cells.append("– (no reference)")
                    elif r["iterations"] is None:
                        cells.append(f"{r['reference']:.4f}: not within {e['epochs']} iterations")
                    else:
                        cells.append(f"{r['reference']:.4f}: {r['iterations']} iterations, {r['wall_time_s']:.0f} s")
                lines.append(f"| {e['N']} | {e['epochs']} | {e['final_best']:.4f} | " + " | ".join(cells) + " |")
            lines.append("")
    found = _findings(results, extras or {})
    if found:
        lines += ["Measured (generated from the JSON):", ""] + [f"* {f}" for f in found] + [""]
    missing = _not_run(results)
    if missing:
        lines += ["Not run (asked for by issue 17, not finished before the deadline on the shared machine):", ""]
        lines += [f"* {m}" for m in missing] + [""]
    lines.append(END)
    return "\n".join(lines)


def _entry_key(kind: str, e: dict) -> tuple:
    """What identifies one run within a kind (Adam, L-BFGS, matched draws): (N, seed), as :func:`collect` keeps them."""
    return (kind, e["N"], e["seed"])


def merge_archived(collected: dict[tuple[str, str], dict], results_dir: pathlib.Path) -> dict[tuple[str, str], dict]:
    """Add the runs recorded in ``results_dir``'s JSON that the runs directory no longer holds.

    The JSON files are the study's record: a run directory may be gone (another
    machine, a removed scratch folder) while its figures stay valid (runs are
    deterministic).  Per (N, seed) the longer run wins; at equal length the one
    in the runs directory.  Archived entries keep ``"archived": true``.
    """
    out = {k: {kind: list(v) for kind, v in g.items()} for k, g in collected.items()}
    for path in sorted(results_dir.glob("*-*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}: not valid JSON ({err}); restore it from git or remove it") from err
        if not isinstance(data, dict) or "scenario" not in data or "mesh" not in data or "summary" not in data:
            continue  # another kind of result (discretisation, initial draws, network fit)
        group = out.setdefault((data["scenario"], data["mesh"]),
                               {"adam": [], "lbfgs": [], "matched": [], "repeated": []})
        for kind, field in (("adam", "runs"), ("lbfgs", "lbfgs"), ("matched", "matched")):
            have = {_entry_key(kind, e): e for e in group.setdefault(kind, [])}
            for e in data.get(field, []):
                k = _entry_key(kind, e)
                if k in have and have[k]["epochs"] >= e["epochs"]:
                    continue
                if k in have:
                    group[kind].remove(have[k])
                group[kind].append({**e, "archived": True})
            group[kind].sort(key=lambda e: (e["N"], e["seed"]))
        seen = {(r["N"], r["seed"]) for r in group.setdefault("repeated", [])}
        group["repeated"] += [r for r in data.get("repeated", []) if (r["N"], r["seed"]) not in seen]
    return out


def report(runs: pathlib.Path, results_dir: pathlib.Path = RESULTS, readme: pathlib.Path | None = README) -> None:
    """Write the JSON and plots per (scenario, mesh) from the finished runs, and README's generated block (unless None).

    Runs recorded in the existing JSON but absent from ``runs`` are kept
    (:func:`merge_archived`), so a new runs directory extends the record.
    """
    collected = merge_archived(collect(runs), results_dir)
    results = {}
    results_dir.mkdir(parents=True, exist_ok=True)
    for (scenario, mesh), group in collected.items():
        per_N = summarise(scenario, group)
        data = {"scenario": scenario, "mesh": mesh, "description": MESHES[mesh],
                "relative_rmse": "sqrt(J)/max|h| of the FEM loss; best value so far (running minimum)",
                "marks": list(MARKS), "summary": per_N, "runs": group["adam"], "lbfgs": group["lbfgs"],
                "matched": group["matched"], "repeated": group.get("repeated", [])}
        (results_dir / f"{scenario}-{mesh}.json").write_text(json.dumps(data, indent=1) + "\n")
        if per_N:
            _plot(scenario, mesh, per_N, results_dir / f"{scenario}-{mesh}_rmse_vs_N.png")
        results[(scenario, mesh)] = data
    if readme is None:
        return
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    extras = {p.stem: json.loads(p.read_text()) for pattern in ("discretisation.json", "initial_draws-*.json",
                                                                  "network_fit-*.json", "learning_rate-*.json",
                                                                  "first_step-*.json", "reproducibility.json")
              for p in sorted(results_dir.glob(pattern))}
    readme.write_text(head + _block(results, extras) + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="one resumable sweep")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="heat",
                   help="allen-cahn-imex: Allen–Cahn with the cubic term explicit (time.nonlinear = 'explicit')")
    p.add_argument("--mesh", choices=list(MESHES), default="rectangle")
    p.add_argument("--N", default="10,100,500")
    p.add_argument("--seeds", default="42")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--group", default="adam", help="sweep directory suffix, e.g. 'long' for a longer budget")
    p.add_argument("--lbfgs", action="store_true", help="L-BFGS instead of Adam (--epochs = iteration cap)")
    p = sub.add_parser("plan", help="the whole study in priority order, a report after each sweep")
    p.add_argument("--stop-at", help="HH:MM (UTC): start no item after this time")
    sub.add_parser("report", help="JSON, plots and README block from the finished runs")
    for p in sub.choices.values():
        p.add_argument("--runs", default=str(ROOT / ".scratch" / "width"))
        p.add_argument("--results", default=str(RESULTS), help="where the JSON and plots go")
        p.add_argument("--readme", default=str(README), help="the README whose generated block is rewritten")
    args = parser.parse_args(argv)
    runs = pathlib.Path(args.runs)
    where = {"results_dir": pathlib.Path(args.results), "readme": pathlib.Path(args.readme)}
    if args.command == "report":
        report(runs, **where)
        return 0
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if args.command == "plan":
        stop = None
        if args.stop_at:
            hh, mm = (int(x) for x in args.stop_at.split(":"))
            stop = datetime.datetime.now(datetime.UTC).replace(hour=hh, minute=mm, second=0, microsecond=0)
        run_plan(runs, stop, comm, **{**where, "readme": None})  # README: `report` afterwards
    else:
        rows = run_sweep(args.scenario, args.mesh, [int(n) for n in args.N.split(",")],
                         [int(s) for s in args.seeds.split(",")], args.epochs, args.group, args.lbfgs, runs, comm)
        if comm.rank == 0:
            for r in rows:
                print(f"{args.scenario} {args.mesh} N={r['N']} seed={r['seed']}: {r['status']}, {r['epochs']} epochs, "
                      f"best {r['best_rmse']:.4g}, {r['s_per_epoch']:.3f} s/epoch", flush=True)
            report(runs, **where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
