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
import time
from typing import Any, Protocol

import numpy as np

from femnpde.fem.solver import SolverError
from femnpde.io.checkpoint import save_checkpoint
from femnpde.io.history import History
from femnpde.optim import make_optimizer, make_schedule, minimize_lbfgs, schedule_options

__all__ = ["FirstOrderStep", "LBFGSStep", "Step", "TrainingLoop", "make_step"]


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
    """

    def __init__(self, rf: Any, misfit: Any, history: History, progress: Any, checkpoint_path: pathlib.Path,
                 every: int, comm: Any) -> None:
        self.rf, self.misfit, self.history, self.progress = rf, misfit, history, progress
        self.checkpoint_path, self.every, self.comm = checkpoint_path, every, comm
        self.step: Step | None = None
        self.epoch = 0
        self.best_loss = np.inf
        self.best_rmse = np.inf
        self.t_start = time.perf_counter()

    def evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """J and ∇J at θ; a non-finite loss is a solver failure."""
        J, grad = self.rf.value_and_gradient(theta)
        if not np.isfinite(J):
            raise SolverError(f"the loss is {J} at epoch {self.epoch}")
        return J, grad

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
                        optimizer_state=optimizer_state, schedule_state=schedule_state)

    def run(self, step: Step, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Run ``step`` for epochs ``start..stop-1``; a solver failure names the epoch and the checkpoint kept."""
        self.step, self.epoch = step, start
        try:
            return step.run(self, theta, start, stop)
        except SolverError as err:
            raise SolverError(
                f"training failed at epoch {self.epoch}: {err}. The last good checkpoint is kept in "
                f"{self.checkpoint_path}; continue with --resume {self.checkpoint_path.parent}"
            ) from err


class FirstOrderStep:
    """Gradient descent or Adam with an optional learning-rate schedule (stepped with the loss)."""

    def __init__(self, optimizer: Any, schedule: Any = None) -> None:
        self.optimizer, self.schedule = optimizer, schedule

    def run(self, loop: TrainingLoop, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        for _ in range(start, stop):
            J, grad = loop.evaluate(theta)
            loop.record(J, grad, self.optimizer.lr)
            self.optimizer.step(theta, grad)
            if self.schedule is not None:
                self.schedule.step(J)
            loop.checkpoint(theta, force=loop.epoch == stop)
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
    """L-BFGS (scipy's L-BFGS-B through :func:`femnpde.optim.minimize_lbfgs`); one iteration per epoch."""

    def __init__(self, memory: int) -> None:
        self.memory = memory

    def run(self, loop: TrainingLoop, theta: np.ndarray, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return theta

        def callback(k: int, params: np.ndarray, J: float, grad: np.ndarray) -> bool:
            loop.rf(params)  # the row describes the accepted iterate (no sweep unless a trial came after it)
            loop.record(J, grad, float("nan"))
            loop.checkpoint(params)
            return loop.epoch >= stop

        result = minimize_lbfgs(loop.rf.value_and_gradient, theta, max_iterations=stop - start, callback=callback,
                                memory=self.memory)
        theta = np.array(result.params, dtype=np.float64)
        loop.checkpoint(theta, force=True)
        return theta

    def state(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return {"kind": "lbfgs"}, None

    def load_state(self, optimizer_state: dict | None, schedule_state: dict | None) -> None:
        """L-BFGS restarts its memory on resume (nothing to restore)."""


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
