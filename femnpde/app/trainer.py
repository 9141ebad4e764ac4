"""The training loop: one loop, a pluggable step (first-order optimizer + schedule, or L-BFGS).

:class:`TrainingLoop` owns what every step shares: recording an epoch in the
history and the progress bar, the best values so far, and checkpoints.  A
step (:class:`FirstOrderStep`, :class:`LBFGSStep`, or any object with the
:class:`Step` protocol) decides how θ moves: ``step.run(loop, theta, start,
stop)`` evaluates ``loop.rf`` and calls ``loop.record`` once per epoch and
``loop.checkpoint`` when due.

Epoch ``k`` evaluates J and ∇J at θ_k, records them, then takes the step to
θ_{k+1}; the checkpoint after epoch k stores θ_{k+1} and ``epoch = k + 1``
(the next epoch to run).
"""

from __future__ import annotations

import pathlib
import signal
import threading
import time
from typing import Any, Protocol

import numpy as np

from femnpde.fem.solver import SolverError
from femnpde.io.checkpoint import save_checkpoint
from femnpde.io.history import History
from femnpde._mpi import rank0_print
from femnpde.optim import LBFGSB, make_optimizer, make_schedule, schedule_options

__all__ = ["DIVERGENCE_FACTOR", "FirstOrderStep", "LBFGSStep", "Step", "StopSignals", "TrainingInterrupted", "TrainingLoop", "make_step"]


#: Training stops as diverged (a solver failure, exit 3) when the loss exceeds this factor times the best loss so far.
DIVERGENCE_FACTOR = 1e6


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint (``femnpde train`` exits with 128 + signal)."""

    def __init__(self, signum: int, epoch: int, checkpoint_path: pathlib.Path) -> None:
        self.signum = int(signum)
        super().__init__(
            f"{signal.Signals(signum).name} received: stopped after epoch {epoch} with a checkpoint in "
            f"{checkpoint_path}; continue with --resume {checkpoint_path.parent}"
        )


class StopSignals:
    """SIGUSR1 / SIGTERM during training ask for a checkpoint and a stop at the end of the epoch.

    A batch system's wall-time warning (Slurm ``--signal``) reaches the ranks
    at slightly different times, so the flag is agreed on with one allreduce
    per epoch: every rank stops after the same epoch.  Handlers are installed
    only in the main thread and restored on exit.

    Args:
        comm: The communicator of the run.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self._received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self._received = signum

    def received(self) -> int:
        """The signal number any rank received (0: none); collective."""
        if self._comm is None or self._comm.size == 1:
            return int(self._received)
        from mpi4py import MPI

        return int(self._comm.allreduce(self._received, op=MPI.MAX))


class Step(Protocol):
    """How the parameters move (one implementation per optimizer family)."""

    def run(self, loop: TrainingLoop, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run epochs ``start..stop-1``; return the final parameters (``loop.epoch`` = epochs done)."""

    def state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The optimizer and schedule state for a checkpoint."""

    def load_state(self, optimizer_state: dict | None, schedule_state: dict | None) -> None:
        """Restore the state saved by :meth:`state`."""


class TrainingLoop:
    """Records epochs, tracks the best values and writes checkpoints for a step.

    Args:
        rf: The reduced functional (``value_and_gradient``, ``states``).
        misfit: The run's misfit (relative RMSE and max error).
        history: The CSV history.
        progress: The progress bar (``update(loss, rmse)``).
        checkpoint_path: Where checkpoints go.
        every: Checkpoint every this many epochs.
        comm: The communicator.
        extra: Stored in every checkpoint (e.g. the run's configuration).
        resumed_from: The epoch of the checkpoint this run resumed from (it
            is this run's), or None for a new run.
    """

    def __init__(self, rf: Any, misfit: Any, history: History, progress: Any, checkpoint_path: pathlib.Path,
                 every: int, comm: Any, extra: dict[str, Any] | None = None, resumed_from: int | None = None) -> None:
        self.rf, self.misfit, self.history, self.progress = rf, misfit, history, progress
        self.checkpoint_path, self.every, self.comm = checkpoint_path, every, comm
        self.extra = extra
        #: The epoch of the last checkpoint this run wrote (or resumed from); None: none yet.
        self.checkpoint_epoch = resumed_from
        self.step: Step | None = None
        self.epoch = 0
        self.best_loss = np.inf
        self.best_rmse = np.inf
        self.t_start = time.perf_counter()
        self.signal = 0
        self._signals: StopSignals | None = None

    def evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """J and ∇J at θ, checked by :meth:`check`."""
        J, grad = self.rf.value_and_gradient(theta)
        self.check(J, grad)
        return J, grad

    def check(self, J: float, grad: np.ndarray) -> None:
        """Divergence is a solver failure: a non-finite loss or gradient, or a loss above
        :data:`DIVERGENCE_FACTOR` times the best loss so far."""
        if not np.isfinite(J):
            raise SolverError(f"the loss is {J} at epoch {self.epoch} (diverged)")
        if not np.all(np.isfinite(grad)):
            raise SolverError(f"the gradient is not finite at epoch {self.epoch} (diverged; loss {J:.6e})")
        if np.isfinite(self.best_loss) and J > DIVERGENCE_FACTOR * self.best_loss:
            raise SolverError(
                f"the loss {J:.6e} at epoch {self.epoch} exceeds {DIVERGENCE_FACTOR:.0e} times the best loss so far "
                f"({self.best_loss:.6e}): training diverged; lower optimizer.lr"
            )

    def record(self, J: float, grad: np.ndarray, lr: float) -> None:
        """Record epoch ``self.epoch`` (loss, errors, gradient norm, rate, wall time) and advance it."""
        rmse = self.misfit.relative_rmse(J)
        self.history.append(
            epoch=self.epoch,
            loss=J,
            relative_rmse=rmse,
            relative_max_error=self.rf.relative_max_error(),
            gradient_norm=float(np.linalg.norm(grad)),
            learning_rate=lr,
            wall_time=time.perf_counter() - self.t_start,
        )
        self.best_loss = min(self.best_loss, J)
        self.best_rmse = min(self.best_rmse, rmse)
        self.progress.update(J, rmse)
        self.epoch += 1

    def checkpoint(self, params: np.ndarray, force: bool = False) -> None:
        """Write a checkpoint (θ and the step's state, next epoch ``self.epoch``) if due or ``force``."""
        if not force and self.epoch % self.every != 0:
            return
        optimizer_state, schedule_state = self.step.state()
        save_checkpoint(self.checkpoint_path, self.comm, epoch=self.epoch, params=params,
                        optimizer_state=optimizer_state, schedule_state=schedule_state, extra=self.extra)
        self.checkpoint_epoch = self.epoch

    def interrupted(self) -> bool:
        """Whether a rank received SIGUSR1/SIGTERM (collective: call once per epoch on every rank)."""
        if self._signals is not None and not self.signal:
            self.signal = self._signals.received()
        return bool(self.signal)

    def run(self, step: Step, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run ``step`` for epochs ``start..stop-1``; a solver failure names the epoch and the checkpoint kept.

        Raises:
            SolverError: A solve failed (the last good checkpoint is kept).
            TrainingInterrupted: SIGUSR1/SIGTERM arrived; a checkpoint of the
                last finished epoch was written.
        """
        self.step, self.epoch = step, start
        try:
            with StopSignals(self.comm) as self._signals:
                theta = step.run(self, theta, start, stop)
        except SolverError as err:
            if self.checkpoint_epoch is None:
                kept = (f"No checkpoint was written (the first was due after epoch {self.every}); "
                        f"nothing to resume: fix the cause and start again")
            else:
                kept = (f"The last good checkpoint (next epoch {self.checkpoint_epoch}) is kept in "
                        f"{self.checkpoint_path}; after fixing the cause, continue with --resume "
                        f"{self.checkpoint_path.parent}")
            raise SolverError(f"training failed at epoch {self.epoch}: {err}. {kept}") from err
        finally:
            self._signals = None
        if self.signal:
            raise TrainingInterrupted(self.signal, self.epoch, self.checkpoint_path)
        return theta


def _bounds(rf: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``rf.bounds`` (trainable physical parameters), or None when θ is unbounded."""
    bounds = getattr(rf, "bounds", None)
    if bounds is None or not (np.any(np.isfinite(bounds[0])) or np.any(np.isfinite(bounds[1]))):
        return None
    return bounds


class FirstOrderStep:
    """Gradient descent or Adam with an optional learning-rate schedule (stepped with the loss)."""

    def __init__(self, optimizer: Any, schedule: Any = None) -> None:
        self.optimizer, self.schedule = optimizer, schedule

    def run(self, loop: TrainingLoop, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        for _ in range(start, stop):
            J, grad = loop.evaluate(theta)
            loop.record(J, grad, self.optimizer.lr)
            self.optimizer.step(theta, grad)
            bounds = _bounds(loop.rf)
            if bounds is not None:  # projected step: physical parameters stay within their bounds
                np.clip(theta, bounds[0], bounds[1], out=theta)
            if self.schedule is not None:
                self.schedule.step(J)
            loop.checkpoint(theta, force=loop.epoch == stop)
            if loop.interrupted():
                loop.checkpoint(theta, force=True)
                return theta
        loop.epoch = stop
        return theta

    def state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return self.optimizer.state_dict(), self.schedule.state_dict() if self.schedule is not None else None

    def load_state(self, optimizer_state: dict | None, schedule_state: dict | None) -> None:
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)
        if self.schedule is not None and schedule_state:
            self.schedule.load_state_dict(schedule_state)


class LBFGSStep:
    """L-BFGS (scipy's L-BFGS-B through :class:`femnpde.optim.LBFGSB`); one iteration per epoch.

    Its checkpointed state is the whole L-BFGS state, so a resumed run continues the uninterrupted
    run's trajectory; a checkpoint without it (femnpde before session 6) restarts the memory, said on
    rank 0.
    """

    def __init__(self, memory: int) -> None:
        self.lbfgs = LBFGSB(memory)
        self._resumed_without_memory = False

    def run(self, loop: TrainingLoop, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return theta
        self.lbfgs.bounds = _bounds(loop.rf)
        if start > 0 and (self._resumed_without_memory or not self.lbfgs.resumes_from(theta)):
            rank0_print(loop.comm, f"L-BFGS: the checkpoint holds no L-BFGS state for its parameters; "
                                   f"the curvature memory restarts at epoch {start}")

        def callback(k: int, params: np.ndarray, J: float, grad: np.ndarray) -> bool:
            loop.check(J, grad)
            loop.rf(params)  # the row describes the accepted iterate (no sweep unless a trial came after it)
            loop.record(J, grad, float("nan"))
            loop.checkpoint(params)
            return loop.epoch >= stop or loop.interrupted()

        result = self.lbfgs.minimize(loop.rf.value_and_gradient, theta, max_iterations=stop - start,
                                     callback=callback)
        theta = np.array(result.params, dtype=np.float64)
        loop.checkpoint(theta, force=True)
        return theta

    def state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return self.lbfgs.state_dict(), None

    def load_state(self, optimizer_state: dict | None, schedule_state: dict | None) -> None:
        """Restore the L-BFGS state (a checkpoint without one: the memory restarts)."""
        if optimizer_state:
            self.lbfgs.load_state_dict(optimizer_state)
        self._resumed_without_memory = not optimizer_state or "x" not in optimizer_state


def make_step(cfg: dict, lr: float) -> FirstOrderStep | LBFGSStep:
    """The step of a resolved configuration (every schedule option of the schema is passed through)."""
    ocfg = cfg["optimizer"]
    kind = ocfg["kind"]
    if kind == "lbfgs":
        return LBFGSStep(ocfg["lbfgs_memory"])
    options = {"weight_decay": ocfg["weight_decay"]}
    if kind == "adam":
        options.update(betas=tuple(ocfg["betas"]), eps=ocfg["eps"])
    optimizer = make_optimizer(kind, lr, **options)
    scfg = ocfg["schedule"]
    allowed = schedule_options(scfg["kind"])
    schedule = make_schedule(optimizer, scfg["kind"], **{k: v for k, v in scfg.items() if k in allowed})
    return FirstOrderStep(optimizer, schedule)
