"""``femnpde sweep``: the width study, one training run per (N, seed), resumable.

A sweep directory holds one run directory per width N (``N<N>``), or per
width and seed (``N<N>-seed<s>``) when seeds are given, and

* ``summary.csv`` / ``summary.md`` — one row per run;
* ``rmse_vs_N.png`` — the best relative RMSE against N (median and range
  over the seeds).

Each run directory is a ``femnpde train`` run plus ``result.json``, written
atomically when the run has finished: its summary and its resolved
configuration.  Re-running a sweep with the same arguments

* skips a run whose ``result.json`` holds the same configuration;
* extends a finished run whose configuration differs only in a larger
  ``run.iterations`` (it resumes from the final checkpoint);
* resumes an unfinished run (``config.toml`` and ``checkpoint.npz``, no
  ``result.json``) from its checkpoint, which reproduces the uninterrupted
  history; an unfinished run killed before its first checkpoint restarts;
* refuses (:class:`ValueError`, exit 2, naming the run directory and the
  differing keys) a run of another configuration, unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import pathlib
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from mpi4py import MPI

from femnpde._mpi import on_root, rank0_print
from femnpde.app.loading import load_config
from femnpde.app.schema import dump_config
from femnpde.app.training import config_differences, train
from femnpde.app.validation import validate
from femnpde.io.files import RunDirectory
from femnpde.io.history import History
from femnpde.io.lock import LOCK_FILE, RunLock
from femnpde.io.plots import plot_width_study

__all__ = ["sweep", "SweepRun", "RESULT_FILE", "run_name", "read_result"]

#: The file a finished run of a sweep holds (its summary and configuration).
RESULT_FILE = "result.json"


@dataclass
class SweepRun:
    """One finished run of a sweep.

    Attributes:
        N: Neurons.
        seed: The network seed (``network.seed``).
        epochs: Epochs trained.
        final_rmse: Relative RMSE at the trained parameters.
        best_rmse: Best relative RMSE of the run.
        final_loss: Loss at the trained parameters.
        wall_time: Wall time of the epochs, summed over the run's segments [s].
        s_per_epoch: Median wall time of one epoch [s].
        status: What this sweep did: ``"trained"``, ``"resumed"``, ``"extended"`` or ``"skipped"``.
        config: The run's resolved configuration (TOML).
        load_average: The machine's 1-minute load average when the run finished
            (None: not recorded), to judge its timings.
    """

    N: int
    seed: int
    epochs: int
    final_rmse: float
    best_rmse: float
    final_loss: float
    wall_time: float
    s_per_epoch: float
    status: str
    config: str
    load_average: float | None = None


def run_name(N: int, seed: int | None) -> str:
    """The run directory's name in a sweep: ``N<N>`` or ``N<N>-seed<seed>``."""
    return f"N{N}" if seed is None else f"N{N}-seed{seed}"


def read_result(run_dir: str | pathlib.Path) -> SweepRun:
    """The :class:`SweepRun` of a finished run directory (its ``result.json``).

    Raises:
        ValueError: The file is missing or not a result of this version (the message names it).
    """
    path = pathlib.Path(run_dir) / RESULT_FILE
    try:
        data = json.loads(path.read_text())
        return SweepRun(**data)
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a readable sweep result ({err}); re-run the sweep with --overwrite") from None


def _inspect(run_dir: pathlib.Path) -> dict:
    """What ``run_dir`` holds (rank 0): kind ``new`` | ``done`` | ``partial`` | ``started`` | ``other``."""
    if not run_dir.exists():
        return {"kind": "new"}
    if not run_dir.is_dir():
        return {"kind": "other"}
    if (run_dir / RESULT_FILE).is_file():
        return {"kind": "done", "result": asdict(read_result(run_dir))}
    if (run_dir / "config.toml").is_file():
        saved = (run_dir / "config.toml").read_text()
        return {"kind": "partial" if (run_dir / "checkpoint.npz").is_file() else "started", "config": saved}
    return {"kind": "new" if not any(p.name != LOCK_FILE for p in run_dir.iterdir()) else "other"}


def _epoch_time(wall_time) -> tuple[float, float]:
    """(summed wall time, median epoch time) of a history's wall-time column, which restarts at each resumed segment."""
    wall = np.asarray(wall_time, dtype=float)
    if wall.size == 0:
        return 0.0, float("nan")
    steps = np.diff(wall, prepend=0.0)
    restarts = steps < 0  # a resumed segment starts again at its own first epoch's time
    steps[restarts] = wall[restarts]
    return float(steps.sum()), float(np.median(steps[1:] if steps.size > 1 else steps))


def _run_one(config, run_dir: pathlib.Path, overrides: list[str], N: int, seed: int, quiet: bool, comm,
             overwrite: bool, write_outputs: bool) -> SweepRun:
    """Train, resume, extend or skip one run of a sweep (collective)."""
    cfg = load_config(config, overrides)
    fingerprint = dump_config(cfg)
    state = on_root(comm, lambda: _inspect(run_dir), f"inspecting {run_dir}")
    kind = state["kind"]
    mode = "train"
    if kind in ("done", "partial", "started"):
        saved_text = state["result"]["config"] if kind == "done" else state["config"]
        # Resolved again: a key added since the run was written takes its default on both sides.
        saved = tomllib.loads(dump_config(validate(tomllib.loads(saved_text))))
        given = tomllib.loads(fingerprint)
        diffs = config_differences(given, saved, "sweep gives")
        if kind == "done" and not diffs:
            done_epochs = state["result"]["epochs"]
            if given["run"]["iterations"] == saved["run"]["iterations"]:
                return SweepRun(**{**state["result"], "status": "skipped"})
            if given["run"]["iterations"] > done_epochs:
                mode = "extend"
            else:
                diffs = [f"run.iterations: run has {saved['run']['iterations']!r} (finished {done_epochs} epochs), "
                         f"sweep gives {given['run']['iterations']!r} (fewer)"]
        elif kind == "partial" and not diffs:
            mode = "resume"
        elif kind == "started" and not diffs:
            mode = "restart"  # this sweep's own run, killed before its first checkpoint
        if diffs:
            if not overwrite:
                raise ValueError(
                    f"femnpde sweep: {run_dir} holds a run of another configuration (" + "; ".join(diffs)
                    + "): re-run with the same arguments, choose another --out, or replace it with --overwrite"
                )
            mode = "train"
    if mode in ("resume", "extend"):
        train(config, resume=run_dir, overrides=overrides, quiet=quiet, comm=comm, write_outputs=write_outputs)
    else:
        train(config, out=run_dir, overrides=overrides, quiet=quiet, comm=comm, write_outputs=write_outputs,
              overwrite=overwrite or mode == "restart")
    status = {"train": "trained", "restart": "trained", "resume": "resumed", "extend": "extended"}[mode]

    def summarise() -> dict:
        hist = History.read(run_dir / "history.csv")
        wall, per_epoch = _epoch_time(hist["wall_time"])
        rmse = np.asarray(hist["relative_rmse"], dtype=float)
        loss = np.asarray(hist["loss"], dtype=float)
        record = SweepRun(N=N, seed=seed, epochs=int(rmse.size), final_rmse=float(rmse[-1]),
                          best_rmse=float(rmse.min()), final_loss=float(loss[-1]), wall_time=wall,
                          s_per_epoch=per_epoch, status=status, config=fingerprint,
                          load_average=os.getloadavg()[0])
        return asdict(record)

    record = SweepRun(**on_root(comm, summarise, f"summarising {run_dir}"))
    RunDirectory(run_dir, comm).write_text(RESULT_FILE, json.dumps(asdict(record), indent=1) + "\n")
    return record


def sweep(
    config: str | pathlib.Path,
    widths: Sequence[int],
    out: str | pathlib.Path | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    overwrite: bool = False,
    seeds: Sequence[int] | None = None,
    write_outputs: bool = True,
) -> list[dict]:
    """The width study: one training run per N (and seed); resumable (see the module docstring).

    Args:
        config: The TOML configuration.
        widths: The neuron counts N.
        out: The sweep directory (default ``runs/<config stem>-sweep``).
        overrides: ``key=value`` overrides applied to every run.
        quiet: No progress bars or tables.
        comm: Communicator.
        overwrite: Replace runs of another configuration (else refused).
        seeds: Network seeds (``network.seed``); one run per (N, seed).  None:
            the configuration's seed, run directories ``N<N>``.
        write_outputs: Write every run's fields and plots.

    Returns:
        One dict per run (:class:`SweepRun` fields, without ``config``), in
        the order N, then seed.

    Raises:
        ValueError: Bad input, or a run directory holding a run of another
            configuration (without ``overwrite``).
    """
    out = pathlib.Path(out) if out is not None else pathlib.Path("runs") / (pathlib.Path(config).stem + "-sweep")
    with RunLock(out, comm):  # one sweep writes a sweep directory (exit 2 naming the holder)
        rundir = RunDirectory(out, comm)
        base_seed = int(load_config(config, overrides)["network"]["seed"])
        runs: list[SweepRun] = []
        for N in widths:
            for seed in (seeds if seeds is not None else [None]):
                extra = [f"network.neurons={N}"] + ([] if seed is None else [f"network.seed={seed}"])
                runs.append(_run_one(config, out / run_name(N, seed), [*overrides, *extra], N,
                                     base_seed if seed is None else seed, quiet, comm, overwrite, write_outputs))
        rows = [{k: v for k, v in asdict(r).items() if k != "config"} for r in runs]
        lines = ["N,seed,epochs,final_relative_rmse,best_relative_rmse,final_loss,wall_time_s,s_per_epoch,status"]
        lines += [
            f"{r['N']},{r['seed']},{r['epochs']},{r['final_rmse']:.6e},{r['best_rmse']:.6e},{r['final_loss']:.6e},"
            f"{r['wall_time']:.2f},{r['s_per_epoch']:.4g},{r['status']}"
            for r in rows
        ]
        rundir.write_text("summary.csv", "\n".join(lines) + "\n")
        table = ["| N | seed | epochs | final rel. RMSE | best rel. RMSE | wall time [s] | run |", "|---|---|---|---|---|---|---|"]
        table += [
            f"| {r['N']} | {r['seed']} | {r['epochs']} | {r['final_rmse']:.4g} | {r['best_rmse']:.4g} | "
            f"{r['wall_time']:.1f} | {r['status']} |"
            for r in rows
        ]
        rundir.write_text("summary.md", "\n".join(table) + "\n")
        widths_u = list(dict.fromkeys(widths))
        best = {N: [r["best_rmse"] for r in rows if r["N"] == N] for N in widths_u}
        curves = {"best (median over seeds)" if seeds else "best": [float(np.median(best[N])) for N in widths_u]}
        if seeds is not None and len(seeds) > 1:
            curves["best (min over seeds)"] = [min(best[N]) for N in widths_u]
            curves["best (max over seeds)"] = [max(best[N]) for N in widths_u]
        else:
            curves["final"] = [float(np.median([r["final_rmse"] for r in rows if r["N"] == N])) for N in widths_u]
        plot_width_study(widths_u, curves, out / "rmse_vs_N.png", comm, title=f"width study: {pathlib.Path(config).stem}")
        if not quiet:
            rank0_print(comm, "\n".join(table))
        comm.Barrier()  # every rank is done with the directory before the lock goes
    return rows
