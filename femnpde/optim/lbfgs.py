"""L-BFGS over a replicated parameter vector: :func:`minimize_lbfgs` drives scipy's L-BFGS-B."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from femnpde.optim._checks import _integer, _non_negative

__all__ = ["LBFGSResult", "minimize_lbfgs"]


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

    Runs ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``.  With the
    default ``gtol = ftol = 0`` the run lasts ``max_iterations`` iterations
    unless the line search can no longer make progress.

    ``callback(iteration, params, loss, grad)`` is called once per completed
    iteration with the accepted iterate, its loss and its gradient;
    ``iteration`` is the zero-based index of that iteration (so after the
    last call ``iteration + 1 == n_iterations``).  The loss and gradient come
    from a small cache of the most recent evaluations, so the callback costs
    no extra evaluation of ``fun_and_grad``.  If the callback returns a truthy
    value the run stops after that iteration and the result holds that
    iterate.  ``params`` and ``grad`` passed to the callback are copies.

    Determinism: given a deterministic ``fun_and_grad``, the run is
    deterministic (scipy's L-BFGS-B is a sequential algorithm).  Its dense
    linear algebra goes through BLAS; with very large parameter vectors,
    bitwise agreement across MPI ranks additionally needs the same BLAS
    threading configuration (e.g. ``OPENBLAS_NUM_THREADS``) on every rank.

    Checkpointing: L-BFGS keeps its curvature memory inside scipy and has no
    ``state_dict``.  Resuming from a checkpoint calls this function again
    with the saved parameters as ``x0``, which restarts the curvature memory
    (the first resumed step is a scaled steepest-descent step); the resumed
    run is deterministic but not bitwise identical to an uninterrupted one.

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
    from scipy.optimize import minimize  # lazy: only L-BFGS needs scipy

    max_iterations = _integer("max_iterations", max_iterations, 1)
    memory = _integer("memory", memory, 1)
    gtol = _non_negative("gtol", gtol)
    ftol = _non_negative("ftol", ftol)
    if max_evaluations is None:
        maxfun = sys.maxsize
    else:
        maxfun = _integer("max_evaluations", max_evaluations, 1)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {callback!r}")
    try:
        x_start = np.array(x0, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValueError(f"x0 must be a 1-D array of real numbers, got {x0!r}") from None
    if x_start.ndim != 1 or x_start.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x_start.shape}")
    if not np.all(np.isfinite(x_start)):
        raise ValueError("x0 must contain only finite values")

    n_evaluations = 0
    cache: deque[tuple[np.ndarray, float, np.ndarray]] = deque(maxlen=4)

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_evaluations
        key = np.array(x, dtype=np.float64, copy=True)
        loss, grad = fun_and_grad(key.copy())
        n_evaluations += 1
        g = np.array(grad, dtype=np.float64, copy=True)
        if g.shape != key.shape:
            raise ValueError(
                f"fun_and_grad returned a gradient of shape {g.shape}, expected {key.shape}"
            )
        f = float(loss)
        cache.append((key, f, g))
        return f, g.copy()

    iteration = 0
    stopped_by_callback = False

    def scipy_callback(intermediate_result: Any) -> None:
        nonlocal iteration, stopped_by_callback
        index = iteration
        iteration += 1
        if callback is None:
            return
        x = np.asarray(intermediate_result.x)
        hit = next(((f, g) for key, f, g in reversed(cache) if np.array_equal(key, x)), None)
        # a cache miss is not expected with L-BFGS-B; evaluate rather than guess
        f, g = evaluate(x) if hit is None else hit
        if callback(index, x.copy(), f, g.copy()):
            stopped_by_callback = True
            raise StopIteration

    scipy_bounds = None
    if bounds is not None:
        lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), x_start.shape) for b in bounds)
        if np.any(x_start < lo) or np.any(x_start > hi):
            raise ValueError("x0 lies outside the bounds")
        scipy_bounds = list(zip(np.where(np.isinf(lo), None, lo), np.where(np.isinf(hi), None, hi)))
    res = minimize(
        evaluate,
        x_start,
        method="L-BFGS-B",
        jac=True,
        bounds=scipy_bounds,
        callback=scipy_callback,
        options={
            "maxiter": max_iterations,
            "maxfun": maxfun,
            "maxcor": memory,
            "gtol": gtol,
            "ftol": ftol,
        },
    )
    n_iterations = int(res.nit)
    if stopped_by_callback:
        success = True
        message = f"stopped by callback after {n_iterations} iteration(s)"
    else:
        success = bool(res.success) or n_iterations >= max_iterations
        message = str(res.message)
    return LBFGSResult(
        params=np.array(res.x, dtype=np.float64, copy=True),
        n_iterations=n_iterations,
        n_evaluations=n_evaluations,
        success=success,
        message=message,
    )
