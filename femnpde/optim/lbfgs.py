"""L-BFGS over a replicated parameter vector: scipy's L-BFGS-B driven step by step, its state owned here.

:class:`LBFGSB` calls scipy's L-BFGS-B routine (``setulb``, the reverse-
communication kernel that ``scipy.optimize.minimize(method="L-BFGS-B")``
loops over) itself, so the whole optimizer state (the correction pairs and
the routine's saved scalars) is a :meth:`LBFGSB.state_dict` that a checkpoint
can hold: a run resumed from it follows the uninterrupted run's trajectory
bitwise.  The iterates are those of ``scipy.optimize.minimize``.  The
kernel is ``scipy.optimize._lbfgsb.setulb`` with the arguments of scipy's
C implementation of L-BFGS-B (scipy >= 1.15; the environment has 1.17).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from femnpde.optim._checks import _check_kind, _integer, _non_negative

__all__ = ["LBFGSB", "LBFGSResult", "minimize_lbfgs"]


@dataclass
class LBFGSResult:
    """Outcome of :func:`minimize_lbfgs`.

    Attributes:
        params: Final (last accepted) iterate, a new float64 array.
        n_iterations: Number of completed L-BFGS iterations.
        n_evaluations: Number of calls to ``fun_and_grad``.
        success: True if the run converged (``gtol``/``ftol`` test),
            reached ``max_iterations`` or was stopped by the callback; False
            if L-BFGS-B stopped abnormally (e.g. the line search could not
            make progress) or hit ``max_evaluations``.
        message: Human-readable termination reason (scipy's message, or a
            note that the callback stopped the run).
    """

    params: np.ndarray
    n_iterations: int
    n_evaluations: int
    success: bool
    message: str


#: The routine's arrays that make up its state between two calls (besides x, f, g).
_WORK = ("wa", "iwa", "task", "ln_task", "lsave", "isave", "dsave")
#: Line-search steps per iteration (scipy's default ``maxls``).
_MAX_LINE_SEARCH = 20


class LBFGSB:
    """scipy's L-BFGS-B with a state that can be saved and restored (resume = the same trajectory).

    The state after each accepted iterate (:meth:`state_dict`) holds the
    iterate, its loss and gradient, the correction pairs and the routine's
    saved scalars.  :meth:`minimize` continues from a loaded state when its
    ``x0`` is that state's iterate, and starts afresh otherwise.

    Args:
        memory: Number of stored correction pairs (scipy's ``maxcor``), >= 1.
        gtol: Stop when the largest projected gradient component is <= gtol (>= 0).
        ftol: Stop when the relative reduction of the loss is <= ftol (>= 0).
        bounds: Optional ``(lower, upper)`` arrays (``-inf``/``inf`` where unbounded).
    """

    kind = "lbfgs"

    def __init__(self, memory: int = 10, gtol: float = 0.0, ftol: float = 0.0,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.memory = _integer("memory", memory, 1)
        self.gtol = _non_negative("gtol", gtol)
        self.ftol = _non_negative("ftol", ftol)
        self.bounds = bounds
        self._saved: dict[str, Any] | None = None  # the state at the last accepted iterate

    def state_dict(self) -> dict[str, Any]:
        """The state at the last accepted iterate (only ``kind`` and ``memory`` before the first)."""
        state: dict[str, Any] = {"kind": self.kind, "memory": self.memory}
        if self._saved is not None:
            state.update({k: np.array(v, copy=True) for k, v in self._saved.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (one without an iterate makes the next run start afresh).

        Raises:
            ValueError: If ``state`` is of another kind, was written with another ``memory``, or is
                incomplete.
        """
        _check_kind(state, self.kind)
        if "x" not in state:
            self._saved = None
            return
        memory = int(state.get("memory", -1))
        if memory != self.memory:
            raise ValueError(f"L-BFGS state: written with memory {memory}, this run has memory {self.memory} "
                             f"(optimizer.lbfgs_memory must stay the same on resume)")
        missing = [k for k in ("x", "f", "g", *_WORK) if k not in state]
        if missing:
            raise ValueError(f"L-BFGS state: missing {missing}")
        self._saved = {k: np.array(state[k], copy=True) for k in ("x", "f", "g", *_WORK)}

    def resumes_from(self, x0: np.ndarray) -> bool:
        """Whether :meth:`minimize` from ``x0`` continues the loaded state (``x0`` is its iterate)."""
        return self._saved is not None and np.array_equal(self._saved["x"], np.asarray(x0, dtype=np.float64))

    def _fresh(self, x: np.ndarray) -> dict[str, Any]:
        n, m = x.size, self.memory
        return {
            "x": x, "f": np.array(0.0), "g": np.zeros(n),
            "wa": np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m), "iwa": np.zeros(3 * n, dtype=np.int32),
            "task": np.zeros(2, dtype=np.int32), "ln_task": np.zeros(2, dtype=np.int32),
            "lsave": np.zeros(4, dtype=np.int32), "isave": np.zeros(44, dtype=np.int32), "dsave": np.zeros(29),
        }

    def _bound_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """scipy's ``(low_bnd, upper_bnd, nbd)``: nbd 0 free, 1 lower, 2 both, 3 upper."""
        lo, hi, nbd = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int32)
        if self.bounds is not None:
            lower, upper = (np.broadcast_to(np.asarray(b, dtype=np.float64), (n,)) for b in self.bounds)
            has_lo, has_hi = np.isfinite(lower), np.isfinite(upper)
            lo[has_lo], hi[has_hi] = lower[has_lo], upper[has_hi]
            nbd[:] = np.where(has_lo, np.where(has_hi, 2, 1), np.where(has_hi, 3, 0))
        return lo, hi, nbd

    def minimize(
        self,
        fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
        x0: np.ndarray,
        max_iterations: int,
        callback: Callable[[int, np.ndarray, float, np.ndarray], bool | None] | None = None,
        max_evaluations: int | None = None,
    ) -> LBFGSResult:
        """Run up to ``max_iterations`` iterations from ``x0`` (see :func:`minimize_lbfgs`)."""
        from scipy.optimize import _lbfgsb  # lazy: only L-BFGS needs scipy (the kernel of scipy's L-BFGS-B)

        max_iterations = _integer("max_iterations", max_iterations, 1)
        maxfun = sys.maxsize if max_evaluations is None else _integer("max_evaluations", max_evaluations, 1)
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable or None, got {callback!r}")
        x_start = _start_vector(x0)
        lo, hi, nbd = self._bound_arrays(x_start.size)
        if self.bounds is not None:
            lower, upper = (np.broadcast_to(np.asarray(b, dtype=np.float64), x_start.shape) for b in self.bounds)
            if np.any(x_start < lower) or np.any(x_start > upper):
                raise ValueError("x0 lies outside the bounds")
        if self.resumes_from(x_start):
            st = {k: np.array(v, copy=True) for k, v in self._saved.items()}
        else:
            st = self._fresh(x_start)
        x, f, g = st["x"], float(st["f"]), st["g"]
        factr = self.ftol / np.finfo(float).eps
        n_evaluations = n_iterations = 0
        stopped_by_callback = False
        last = None  # the last evaluation (scipy's ScalarFunction caches it too)
        while True:
            _lbfgsb.setulb(self.memory, x, lo, hi, nbd, f, g, factr, self.gtol, st["wa"], st["iwa"], st["task"],
                           st["lsave"], st["isave"], st["dsave"], _MAX_LINE_SEARCH, st["ln_task"])
            task = int(st["task"][0])
            if task == 3 and last is not None and np.array_equal(last[0], x):  # FG again at the same x
                f, g = last[1], last[2].copy()
            elif task == 3:  # FG: the loss and gradient at x
                f, grad = fun_and_grad(x.copy())
                n_evaluations += 1
                g = np.array(grad, dtype=np.float64, copy=True)
                if g.shape != x.shape:
                    raise ValueError(f"fun_and_grad returned a gradient of shape {g.shape}, expected {x.shape}")
                f = float(f)
                last = (x.copy(), f, g.copy())
            elif task == 1:  # NEW_X: an accepted iterate; the state to save
                self._saved = {"x": x.copy(), "f": np.array(f), "g": g.copy(),
                               **{k: st[k].copy() for k in _WORK}}
                index, n_iterations = n_iterations, n_iterations + 1
                if callback is not None and callback(index, x.copy(), f, g.copy()):
                    stopped_by_callback = True
                    break
                if n_iterations >= max_iterations or n_evaluations > maxfun:
                    break
            else:
                break
        if stopped_by_callback:
            success, message = True, f"stopped by callback after {n_iterations} iteration(s)"
        elif task == 1:
            limit = n_iterations >= max_iterations
            success = limit
            message = "STOP: TOTAL NO. OF " + ("ITERATIONS REACHED LIMIT" if limit else "F,G EVALUATIONS EXCEEDS LIMIT")
        else:
            success = task == 4
            message = _status(st["task"])
        return LBFGSResult(params=x.copy(), n_iterations=n_iterations, n_evaluations=n_evaluations,
                           success=success, message=message)


def _start_vector(x0: Any) -> np.ndarray:
    try:
        x = np.array(x0, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValueError(f"x0 must be a 1-D array of real numbers, got {x0!r}") from None
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 must contain only finite values")
    return x


def _status(task: np.ndarray) -> str:
    """scipy's termination message for the routine's ``task``."""
    from scipy.optimize._lbfgsb_py import status_messages, task_messages

    return f"{status_messages[int(task[0])]}: {task_messages.get(int(task[1]), '')}"


def minimize_lbfgs(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iterations: int,
    callback: Callable[[int, np.ndarray, float, np.ndarray], bool | None] | None = None,
    gtol: float = 0.0,
    ftol: float = 0.0,
    memory: int = 10,
    max_evaluations: int | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> LBFGSResult:
    """Minimise a smooth function with L-BFGS (scipy's L-BFGS-B, unbounded unless ``bounds``).

    The iterates are those of ``scipy.optimize.minimize(method="L-BFGS-B",
    jac=True)``.  With the default ``gtol = ftol = 0`` the run lasts
    ``max_iterations`` iterations unless the line search can no longer make
    progress.

    ``callback(iteration, params, loss, grad)`` is called once per completed
    iteration with the accepted iterate, its loss and its gradient;
    ``iteration`` is the zero-based index of that iteration (so after the
    last call ``iteration + 1 == n_iterations``); it costs no extra
    evaluation.  If the callback returns a truthy value the run stops after
    that iteration and the result holds that iterate.  ``params`` and
    ``grad`` passed to the callback are copies.

    Determinism: given a deterministic ``fun_and_grad``, the run is
    deterministic (a sequential algorithm).  Its dense linear algebra goes
    through BLAS; with very large parameter vectors, bitwise agreement across
    MPI ranks additionally needs the same BLAS threading configuration (e.g.
    ``OPENBLAS_NUM_THREADS``) on every rank.

    Checkpointing: this function starts afresh; to resume a run on its
    trajectory use an :class:`LBFGSB` and its ``state_dict``.

    Args:
        fun_and_grad: Returns ``(loss, gradient)`` at a parameter vector.
            It receives its own copy of the vector.
        x0: Starting point (1-D, converted to float64; not modified).
        max_iterations: Maximum number of L-BFGS iterations, >= 1.
        callback: Optional per-iteration callback, see above.
        gtol: Stop when the largest gradient component is <= gtol (>= 0).
        ftol: Stop when the relative reduction of the loss is <= ftol
            (>= 0; scipy's ``ftol``).
        memory: Number of stored correction pairs (scipy's ``maxcor``), >= 1.
        max_evaluations: Optional cap on evaluations of ``fun_and_grad``
            (scipy's ``maxfun``, checked at the end of each iteration); None
            means no cap beyond ``max_iterations``.
        bounds: Optional ``(lower, upper)`` arrays of the shape of ``x0``
            (``-inf``/``inf`` where unbounded), e.g. ``ReducedFunctional.bounds``.

    Returns:
        An :class:`LBFGSResult`.

    Raises:
        ValueError: On invalid arguments, or if ``fun_and_grad`` returns a
            gradient of the wrong shape.
    """
    return LBFGSB(memory, gtol, ftol, bounds).minimize(fun_and_grad, x0, max_iterations, callback, max_evaluations)
