"""Training runs: ``femnpde train`` and ``femnpde forward`` (``femnpde sweep`` is :mod:`femnpde.app.sweep`).

A run directory holds

* ``config.toml`` — the resolved configuration;
* ``history.csv`` — epoch, loss, relative RMSE (``sqrt(J)/max|h|``), relative
  max error, gradient norm, learning rate, wall time;
* ``checkpoint.npz`` — parameters and optimizer/schedule state, written
  atomically every ``run.checkpoint_every`` epochs and at the end, so a run
  that fails keeps its last good checkpoint; ``--resume DIR`` continues from
  it and reproduces the uninterrupted history;
* ``fields/`` — u, h, g_θ, g* (per output: ``g_theta_k``, ``g_star_k``) and the
  adjoint over time (VTX or XDMF);
* ``history.png``, ``u_vs_h.png``, ``g_vs_gstar.png`` (with m > 1 outputs ``g_vs_gstar_k.png``
  for each output k) — plots (rank 0);
* ``.lock`` — while a process writes the directory (:class:`femnpde.io.lock.RunLock`).

The loop itself (first-order or L-BFGS step, records, checkpoints) is
:mod:`femnpde.app.trainer`.
"""

from __future__ import annotations

import copy
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from femnpde._mpi import on_root, rank0_print
from femnpde._optional import available, missing_message
from femnpde.app.build import build_run
from femnpde.app.loading import load_config
from femnpde.app.progress import Progress
from femnpde.app.schema import dump_config
from femnpde.app.trainer import TrainingLoop, make_step
from femnpde.fem.solver import SolverError
from femnpde.io.checkpoint import load_checkpoint
from femnpde.io.fielddata import write_field_data
from femnpde.io.fields import write_fields
from femnpde.io.files import RunDirectory
from femnpde.io.history import History
from femnpde.io.lock import LOCK_FILE, RunLock
from femnpde.io.plots import plot_comparison, plot_history

__all__ = ["train", "forward", "TrainResult"]

RMSE_NOTE = (
    "relative_rmse = sqrt(J)/max|h| with J = 1/2 sum_n w_n dt ||u^n - h^n||^2_L2 (the FEM loss; "
    "the paper's reference code uses the same quantity with grid sums); "
    "relative_max_error = max_{n,j} |u^n_j - h^n_j| / max|h|"
)


class TrainResult(dict):
    """Summary of a training run (a dict: epochs, final/best loss and RMSE, wall time, out)."""


def _resolve_out(config_path, out, suffix: str = "") -> pathlib.Path:
    if out is not None:
        return pathlib.Path(out)
    return pathlib.Path("runs") / (pathlib.Path(config_path).stem + suffix)


#: The files a run writes in its directory (a directory holding one of them holds a run).
RUN_FILES = ("config.toml", "history.csv", "checkpoint.npz")


def _prepare_run_dir(out: pathlib.Path, comm, overwrite: bool, resume: bool) -> None:
    """Refuse a directory holding another run (unless ``overwrite``); remove stale files (rank 0; collective).

    A new run (not ``resume``) needs an empty or new directory; with
    ``overwrite`` the previous run's config, history and checkpoint are
    deleted first, so nothing of it can be mistaken for this run's.  Temporary
    files left by a kill during an atomic write (``.checkpoint.npz.*.tmp``)
    are removed in every case.
    """

    def prepare() -> None:
        if out.is_dir():
            for name in RUN_FILES:
                for stray in out.glob(f".{name}.*.tmp"):
                    stray.unlink(missing_ok=True)
        if resume or not out.exists():
            return
        if not out.is_dir():
            raise ValueError(f"--out {out}: exists and is not a directory; give a new or empty directory")
        entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)  # the lock is this run's
        if not entries:
            return
        if not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(
                f"--out {out}: the directory is not empty (holds {shown}); a new run needs a new or empty "
                f"directory: continue that run with --resume {out}, replace it with --overwrite, or choose another --out"
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)

    on_root(comm, prepare, "preparing the run directory", broadcast=False)


def _config_fingerprint(cfg: dict) -> str:
    """The configuration as stored in a checkpoint (TOML), to check a resume against."""
    return dump_config(cfg)


def config_differences(given: dict, saved: dict, given_name: str = "given") -> list[str]:
    """The keys in which two resolved configurations differ, except the iteration budget.

    ``optimizer.schedule.T_max`` defaults to the iteration budget, so it is
    not compared either.  Each entry reads ``key: run has X, <given_name> Y``.
    """
    a, b = copy.deepcopy(given), copy.deepcopy(saved)
    for d in (a, b):
        d["run"].pop("iterations", None)
        d.get("optimizer", {}).get("schedule", {}).pop("T_max", None)
    diffs: list[str] = []

    def walk(x: dict, y: dict, prefix: str = "") -> None:
        for key in sorted(set(x) | set(y)):
            path = f"{prefix}{key}"
            if isinstance(x.get(key), dict) and isinstance(y.get(key), dict):
                walk(x[key], y[key], path + ".")
            elif x.get(key) != y.get(key):
                diffs.append(f"{path}: run has {y.get(key)!r}, {given_name} {x.get(key)!r}")

    walk(a, b)
    return diffs


def _check_resume_config(cfg: dict, saved: dict, run_dir: pathlib.Path, source: str = "config.toml") -> None:
    """The config of a resumed run must equal the saved one, except the iteration budget.

    ``optimizer.schedule.T_max`` defaults to the iteration budget, so it is not
    compared either; the resumed schedule keeps the run's own (its state is in
    the checkpoint).
    """
    diffs = config_differences(cfg, saved)
    if diffs:
        raise ValueError(
            f"--resume {run_dir}: the configuration differs from the run's {source} "
            f"(only run.iterations may change): " + "; ".join(diffs)
        )


def _optional_outputs(comm) -> dict[str, bool]:
    """Which optional outputs can be written (before the run); one warning on rank 0 for each that cannot."""
    have = {module: available(module) for module in ("adios4dolfinx", "matplotlib")}
    for module, ok in have.items():
        if not ok:
            rank0_print(comm, f"femnpde: warning: {missing_message(module)}; they are skipped", file=sys.stderr)
    return have


def _write_outputs(run, out: pathlib.Path, comm, fmt: str, have: dict[str, bool]) -> list[pathlib.Path]:
    """Final fields (u, h, g_θ, g*, adjoint) and the comparison plots (those ``have`` allows).

    With m > 1 network outputs, g_θ and g* are written per output: ``g_theta_0``, ``g_star_0``, ...
    """
    problem = run.problem
    rf = run.rf
    u_all = rf.all_states()
    n_local = u_all.shape[1]
    n_owned = problem.n_owned
    fields_V = {"u": u_all}
    h_local = None
    if run.field_data is not None:  # the full-field data (synthetic runs)
        h_local = np.zeros_like(u_all)
        h_local[:, :n_owned] = run.field_data
        fields_V["h"] = h_local
    if rf.adjoint_states is not None:
        fields_V["adjoint"] = rf.adjoint_states.to_array()
    fields_G = {"g_theta": rf.source_values}
    if run.target_values is not None:
        fields_G["g_star"] = run.target_values
    times = problem.time.times
    written = []
    written += write_fields(out / "fields" / "fields", problem, {**fields_V, **fields_G}, times, fmt=fmt,
                            spaces=dict.fromkeys(fields_G, "G"))
    # The state as a readable checkpoint: the field data of another run (data.kind = "file").
    if have["adios4dolfinx"]:
        written.append(write_field_data(out / "fields" / "u.bp", problem, u_all, name="u"))
    if not have["matplotlib"]:
        return written
    plot_times = run.cfg["run"]["plot_times"]
    idx = sorted({int(np.argmin(np.abs(times - t))) for t in plot_times})
    if h_local is not None:
        plot_comparison(out / "u_vs_h.png", problem, u_all, h_local, idx, labels=("u", "h"), comm=comm,
                        title="state u (trained) vs data h")
    if (run.target_values is not None and problem.source_kind == "lagrange"
            and problem.G.dofmap.index_map.size_local == n_owned):
        m = problem.n_sources  # the m values of a node are consecutive (blocked): output k is [:, k::m]
        for k in range(m):
            g_local = np.zeros((len(times), n_local))
            gs_local = np.zeros((len(times), n_local))
            g_local[:, :n_owned] = rf.source_values[:, k::m]
            gs_local[:, :n_owned] = run.target_values[:, k::m]
            name, what = ("g_vs_gstar.png", "") if m == 1 else (f"g_vs_gstar_{k}.png", f"[{k}]")
            plot_comparison(out / name, problem, g_local, gs_local, idx, labels=(f"g_theta{what}", f"g*{what}"),
                            comm=comm, title=f"network {'output' if what else 'source'} g_theta{what} vs target g*{what}")
    return written


def _preflight_gradient_check(rf, theta: np.ndarray, comm, quiet: bool) -> None:
    """Taylor test + FD check at ``theta`` on the run's problem; SolverError (exit 3) with the figures on failure."""
    from femnpde.model.verification import check_gradient

    result = check_gradient(rf, theta)
    if not result.passed:
        raise SolverError(f"the gradient check before the first epoch failed:\n{result.report()}")
    if not quiet:
        rank0_print(
            comm,
            f"femnpde train: gradient check passed (min Taylor rate {result.taylor.min_rate:.4f}, "
            f"best FD agreement {result.fd.worst:.2e})",
        )


def train(
    config: str | pathlib.Path,
    out: str | pathlib.Path | None = None,
    resume: str | pathlib.Path | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    write_outputs: bool = True,
    overwrite: bool = False,
    check_gradient: bool | None = None,
) -> TrainResult:
    """Train the network of a configured neural PDE model.

    Args:
        config: The TOML configuration.
        out: The run directory (default ``runs/<config stem>``).
        resume: A run directory to continue from its last checkpoint.
        overrides: ``key=value`` overrides.
        quiet: No progress bar.
        comm: Communicator.
        write_outputs: Write fields and plots at the end.
        overwrite: Replace the run held in a non-empty ``out`` (else refused).
        check_gradient: Check the gradient (Taylor + finite differences) at the
            initial θ before the first epoch; default ``run.check_gradient``.

    Returns:
        A summary of the run.

    Raises:
        ValueError: Bad input: the configuration, a non-empty ``out`` without
            ``overwrite``, a checkpoint that does not fit the run.
        SolverError: A solve failed (the message names the checkpoint kept,
            if this run wrote one).
    """
    cfg = load_config(config, overrides)
    if resume is not None:
        run_dir = pathlib.Path(resume)
        saved_path = run_dir / "config.toml"
        if not saved_path.is_file():
            raise ValueError(f"--resume {run_dir}: no config.toml there; is it a femnpde run directory?")
        ck_path = run_dir / "checkpoint.npz"
        if not ck_path.is_file():
            raise ValueError(f"--resume {run_dir}: no checkpoint.npz there; nothing to resume from")
        saved = load_config(saved_path)
        _check_resume_config(cfg, saved, run_dir)
        saved["run"]["iterations"] = cfg["run"]["iterations"]
        cfg = saved
        out = run_dir
    out = _resolve_out(config, out)
    with RunLock(out, comm):  # one process writes a run directory (exit 2 naming the holder)
        _prepare_run_dir(pathlib.Path(out), comm, overwrite, resume is not None)
        have = _optional_outputs(comm) if write_outputs else {}
        rundir = RunDirectory(out, comm)
        with build_run(cfg, comm) as run:
            rundir.write_text("config.toml", dump_config(cfg))
            if check_gradient is None:
                check_gradient = cfg["run"]["check_gradient"]
            result = _train_run(run, cfg, out, resume is not None, quiet, comm, check_gradient)
            if write_outputs:
                _write_outputs(run, out, comm, cfg["run"]["field_format"], have)
                if have["matplotlib"]:
                    plot_history(out / "history.csv", out / "history.png", comm, title=f"{pathlib.Path(config).stem}")
        comm.Barrier()  # every rank is done with the directory before the lock goes
    if not quiet:
        rank0_print(
            comm,
            f"femnpde train: done {result['epochs']} epochs in {result['wall_time']:.1f} s; loss "
            f"{result['final_loss']:.4e}, relative RMSE {result['final_rmse']:.4e} (best {result['best_rmse']:.4e}); "
            f"outputs in {out}",
        )
        if result["parameters"]:
            rank0_print(comm, "femnpde train: physical parameters " + ", ".join(
                f"{k} = {v:.10g}" for k, v in result["parameters"].items()))
    comm.Barrier()  # every output (rank 0's plots included) exists when train returns
    return result


def _train_run(
    run, cfg: dict, out: pathlib.Path, resume: bool, quiet: bool, comm, check_gradient: bool = False
) -> TrainResult:
    """The epochs of a built run (from its checkpoint if ``resume``; after a gradient check if asked), then the state at the trained θ."""
    rf, misfit = run.rf, run.misfit
    step = make_step(cfg, run.lr)
    n_iter = cfg["run"]["iterations"]
    ck_path = out / "checkpoint.npz"
    theta = run.rf.initial_theta()
    start = 0
    if resume:
        ck = load_checkpoint(ck_path, comm)
        theta = checkpoint_params(ck, ck_path, run.rf.n_params)
        saved = (ck.get("extra") or {}).get("config")
        if saved is not None:  # checkpoints before this field carry no configuration
            import tomllib

            from femnpde.app.validation import validate

            _check_resume_config(cfg, validate(tomllib.loads(saved)), out, source=f"checkpoint {ck_path}")
        start = int(ck["epoch"])
        step.load_state(ck.get("optimizer_state"), ck.get("schedule_state"))
    history = History(out / "history.csv", comm, header_comment=RMSE_NOTE, overwrite=not resume)
    if resume:
        history.truncate_after(start - 1)
    if not quiet:
        pde = cfg["pde"].get("residual") or cfg["pde"].get("preset")
        rank0_print(
            comm,
            f"femnpde train: {pde}, {run.network!r}, {run.rf.n_params} parameters, "
            f"{cfg['optimizer']['kind']} lr={run.lr:.4g}, epochs {start}..{n_iter}, {comm.size} rank(s) -> {out}",
        )
        rank0_print(comm, f"femnpde train: {run.solver.storage_plan.describe()}")
    if check_gradient:
        _preflight_gradient_check(rf, theta, comm, quiet)
    with Progress(n_iter, comm, quiet=quiet, initial=start) as progress:
        loop = TrainingLoop(rf, misfit, history, progress, ck_path, cfg["run"]["checkpoint_every"], comm,
                            extra={"config": _config_fingerprint(cfg)}, resumed_from=start if resume else None)
        theta = loop.run(step, theta, start, n_iter)
    wall = time.perf_counter() - loop.t_start
    # Final state at the trained parameters (with the adjoint for output).
    J_final = rf(theta)
    rf.derivative(theta)
    return TrainResult(
        epochs=loop.epoch,
        final_loss=J_final,
        final_rmse=misfit.relative_rmse(J_final),
        best_loss=min(loop.best_loss, J_final),
        best_rmse=min(loop.best_rmse, misfit.relative_rmse(J_final)),
        wall_time=wall,
        out=str(out),
        n_params=rf.n_params,
        parameters=rf.split(theta)[1],
    )


def checkpoint_params(ck: dict, path, n_params: int) -> np.ndarray:
    """The network parameters of a loaded checkpoint, checked against the configured network.

    Raises:
        ValueError: The checkpoint's parameters do not have the configured
            network's size, or are not finite (the message names the file).
    """
    theta = np.asarray(ck["params"])
    if theta.ndim != 1 or theta.size != n_params or not np.issubdtype(theta.dtype, np.floating):
        raise ValueError(
            f"checkpoint {path}: its parameters have shape {theta.shape} and dtype {theta.dtype}, the configured "
            f"network has {n_params} float parameters (network.neurons, the mesh dimension and the checkpoint must "
            "belong to the same run)"
        )
    bad = np.flatnonzero(~np.isfinite(theta))
    if bad.size:
        raise ValueError(
            f"checkpoint {path} is corrupt: {bad.size} of its {theta.size} parameters are not finite (first at "
            f"index {bad[0]}: {theta[bad[0]]}); start a new run instead of resuming"
        )
    epoch = ck.get("epoch")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"checkpoint {path} is corrupt: epoch {epoch!r} is not a non-negative integer")
    return np.array(theta, dtype=np.float64)


def forward(
    config: str | pathlib.Path,
    out: str | pathlib.Path | None = None,
    overrides: Sequence[str] = (),
    params: str | pathlib.Path | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> dict:
    """Solve the configured problem (at the initial or checkpointed parameters) and write the fields."""
    cfg = load_config(config, overrides)
    out = _resolve_out(config, out, "-forward")
    have = _optional_outputs(comm)
    with RunLock(out, comm):
        RunDirectory(out, comm).write_text("config.toml", dump_config(cfg))
        with build_run(cfg, comm) as run:
            theta = run.rf.initial_theta()
            if params is not None:
                theta = checkpoint_params(load_checkpoint(params, comm), params, run.rf.n_params)
            J = run.rf(theta)
            run.rf.derivative(theta)
            _write_outputs(run, out, comm, cfg["run"]["field_format"], have)
            rmse = run.misfit.relative_rmse(J)
        comm.Barrier()
    rank0_print(comm, f"femnpde forward: loss {J:.6e}, relative RMSE {rmse:.6e}; fields in {out}")
    comm.Barrier()
    return {"loss": J, "relative_rmse": rmse, "out": str(out)}
