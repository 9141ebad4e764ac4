"""Gradient verification: the Taylor test and a finite-difference check.

Taylor test: for a smooth J, ``r(h) = |J(θ + h δθ) − J(θ) − h ∇J(θ)·δθ| = O(h²)``;
the rates ``log2(r(h_k) / r(h_k/2))`` tend to 2 when the gradient is the
gradient of J (a biased gradient gives rate 1).  A small bias (say 1e-5
relative) only shows in the rates below the crossover step ``h ≈ bias ·
|∇J·δθ| / |J''|``, usually far below the steps used, so the rates alone can
pass a wrong gradient.

Finite-difference check: the central differences
``(J(θ + h d) − J(θ − h d)) / (2h)`` for steps ``h = 1e-2 … 1e-6`` are compared
with the adjoint's ``∇J(θ)·d``; the best relative agreement over the steps
(truncation error ``O(h²)`` against round-off ``O(ε J / h)``) is about 1e-10
for an exact gradient, and stays at the bias for a biased one.  A gradient is
accepted when the best agreement of every direction is at most
:data:`FD_TOLERANCE`.

Both tests evaluate J at perturbed parameters; when ``J`` is a
:class:`~femnpde.model.reduced.ReducedFunctional` (which sets the network's
parameters to the θ it evaluates), they restore the network's parameters to
their value before the test, as pyadjoint's ``taylor_test`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FD_TOLERANCE",
    "RATE_RANGE",
    "TaylorResult",
    "FDResult",
    "GradientCheck",
    "taylor_test",
    "finite_difference_check",
    "check_gradient",
]

#: Largest accepted best relative error of the finite-difference check (an
#: exact gradient reaches about 1e-10; a quadrature mismatch between the
#: residual and its derivatives gave 1e-8 … 1e-5).
FD_TOLERANCE = 1e-7

#: Accepted Taylor rates: every rate >= the lower bound, the last (smallest-step) rate <= the upper bound.
RATE_RANGE = (1.9, 2.1)

_TINY = 1e-300


@dataclass
class TaylorResult:
    """Outcome of a Taylor test.

    Attributes:
        steps: The step sizes h_k.
        remainders: ``|J(θ + h δθ) − J(θ) − h ∇J·δθ|`` per step.
        rates: Convergence rates between consecutive steps.
        J: J(θ).
        gradient_norm: ‖∇J(θ)‖₂.
        directional_derivative: ∇J(θ)·δθ.
    """

    steps: np.ndarray
    remainders: np.ndarray
    rates: np.ndarray
    J: float
    gradient_norm: float
    directional_derivative: float

    @property
    def min_rate(self) -> float:
        """The smallest rate."""
        return float(np.min(self.rates))

    def passed(self, rate_range: tuple[float, float] = RATE_RANGE) -> bool:
        """Whether the gradient is not zero, every rate is >= ``rate_range[0]`` and the last rate is in range.

        The rates of an exact gradient approach 2 from either side as h
        shrinks (from above when the third-order term of J dominates at the
        largest steps), so the upper bound applies to the last (smallest-step) rate.
        """
        lo, hi = rate_range
        return bool(self.gradient_norm > 0 and np.all(self.rates >= lo) and self.rates[-1] <= hi)


@dataclass
class FDResult:
    """Outcome of a finite-difference check of a gradient.

    Attributes:
        steps: The step sizes h.
        adjoint: ``∇J(θ)·d`` from the gradient, shape ``(n_directions,)``.
        fd: Central differences ``(J(θ + h d) − J(θ − h d)) / (2h)``, shape
            ``(n_directions, n_steps)``.
        errors: ``|fd − adjoint| / max(|adjoint|, tiny)``, shape
            ``(n_directions, n_steps)``.
        best: The smallest error over the steps, per direction.
    """

    steps: np.ndarray
    adjoint: np.ndarray
    fd: np.ndarray
    errors: np.ndarray
    best: np.ndarray

    @property
    def worst(self) -> float:
        """The largest best error over the directions."""
        return float(np.max(self.best))

    def passed(self, tol: float = FD_TOLERANCE) -> bool:
        """Whether the best agreement of every direction is at most ``tol``."""
        return bool(np.all(np.isfinite(self.best)) and self.worst <= tol)


@contextlib.contextmanager
def restored_parameters(J) -> Iterator[None]:
    """Restore the network parameters of ``J`` (if it has ``J.network``) on exit."""
    network = getattr(J, "network", None)
    saved = None if network is None else np.array(network.params, dtype=np.float64, copy=True)
    try:
        yield
    finally:
        if saved is not None:
            network.params = saved


def _gradient(J, theta: np.ndarray, gradient: np.ndarray | None) -> np.ndarray:
    if gradient is None:
        gradient = J.derivative(theta)
    return np.asarray(gradient, dtype=np.float64)


def taylor_test(
    J: Callable[[np.ndarray], float],
    theta: np.ndarray,
    dtheta: np.ndarray,
    gradient: np.ndarray | None = None,
    h0: float = 1e-2,
    n_steps: int = 5,
) -> TaylorResult:
    """Second-order Taylor remainder test of a gradient.

    The network parameters of ``J`` (a :class:`femnpde.model.reduced.ReducedFunctional`)
    are restored afterwards.

    Args:
        J: The functional (e.g. a :class:`femnpde.model.reduced.ReducedFunctional`,
            whose ``derivative()`` is used when ``gradient`` is not given).
        theta: Where to test.
        dtheta: The perturbation direction (the same on all ranks).
        gradient: ∇J(θ); default ``J.derivative(theta)``.
        h0: The largest step.
        n_steps: Number of steps (halved each time), >= 2.

    Returns:
        The remainders and rates (close to 2 for an exact gradient).
    """
    if n_steps < 2:
        raise ValueError(f"taylor_test: n_steps={n_steps} must be >= 2")
    theta = np.array(theta, dtype=np.float64, copy=True)
    dtheta = np.asarray(dtheta, dtype=np.float64)
    with restored_parameters(J):
        J0 = float(J(theta))
        gradient = _gradient(J, theta, gradient)
        dJ = float(np.dot(gradient, dtheta))
        steps = h0 * 0.5 ** np.arange(n_steps)
        rem = np.array([abs(float(J(theta + h * dtheta)) - J0 - h * dJ) for h in steps])
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.log2(rem[:-1] / rem[1:])
    return TaylorResult(
        steps=steps,
        remainders=rem,
        rates=rates,
        J=J0,
        gradient_norm=float(np.linalg.norm(gradient)),
        directional_derivative=dJ,
    )


def finite_difference_check(
    rf,
    theta: np.ndarray,
    directions: np.ndarray | None = None,
    *,
    steps: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    n_directions: int = 2,
    seed: int = 0,
    gradient: np.ndarray | None = None,
) -> FDResult:
    """Compare the gradient with central finite differences along a few directions.

    The network parameters of ``rf`` are restored afterwards.

    Args:
        rf: The functional: ``rf(θ) -> float`` and ``rf.derivative(θ)`` (unless
            ``gradient`` is given), e.g. a :class:`femnpde.model.reduced.ReducedFunctional`.
        theta: Where to check.
        directions: The directions d, shape ``(n_directions, n_params)`` (or one
            direction ``(n_params,)``); they must be the same on every rank.
            Default: ``n_directions`` standard normal vectors from
            ``numpy.random.default_rng(seed)`` (the same on every rank).
        steps: The step sizes h (> 0).
        n_directions: Number of random directions when ``directions`` is None (>= 1).
        seed: Seed of the random directions.
        gradient: ∇J(θ); default ``rf.derivative(theta)``.

    Returns:
        The directional derivatives, the central differences and their relative errors.
    """
    theta = np.array(theta, dtype=np.float64, copy=True)
    steps_arr = np.asarray(steps, dtype=np.float64).reshape(-1)
    if steps_arr.size == 0 or not np.all(np.isfinite(steps_arr) & (steps_arr > 0)):
        raise ValueError(f"finite_difference_check: steps={list(steps)} are not valid; give positive step sizes")
    if directions is None:
        if not (isinstance(n_directions, (int, np.integer)) and n_directions >= 1):
            raise ValueError(f"finite_difference_check: n_directions={n_directions!r} must be an integer >= 1")
        directions = np.random.default_rng(seed).standard_normal((int(n_directions), theta.size))
    directions = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    if directions.ndim != 2 or directions.shape[1] != theta.size:
        raise ValueError(
            f"finite_difference_check: directions have shape {np.shape(directions)}, expected "
            f"(n_directions, {theta.size})"
        )
    with restored_parameters(rf):
        gradient = _gradient(rf, theta, gradient)
        adjoint = directions @ gradient
        fd = np.empty((directions.shape[0], steps_arr.size))
        for i, d in enumerate(directions):
            for k, h in enumerate(steps_arr):
                fd[i, k] = (float(rf(theta + h * d)) - float(rf(theta - h * d))) / (2.0 * h)
    errors = np.abs(fd - adjoint[:, None]) / np.maximum(np.abs(adjoint[:, None]), _TINY)
    return FDResult(steps=steps_arr, adjoint=adjoint, fd=fd, errors=errors, best=errors.min(axis=1))


@dataclass
class GradientCheck:
    """Taylor test and finite-difference check of one gradient (see :func:`check_gradient`).

    Attributes:
        taylor: The Taylor test.
        fd: The finite-difference check.
        tol: The FD tolerance applied.
        rate_range: The accepted Taylor rates.
    """

    taylor: TaylorResult
    fd: FDResult
    tol: float = FD_TOLERANCE
    rate_range: tuple[float, float] = RATE_RANGE

    def failures(self) -> list[str]:
        """Why the check fails (empty when it passes)."""
        out = []
        if not self.taylor.gradient_norm > 0:
            out.append("the gradient is zero")
        lo, hi = self.rate_range
        if self.taylor.gradient_norm > 0 and not self.taylor.passed(self.rate_range):
            out.append(
                f"a Taylor rate is below {lo} or the last rate above {hi}: "
                f"{np.array2string(self.taylor.rates, precision=4)}"
            )
        if not self.fd.passed(self.tol):
            out.append(f"the best finite-difference agreement {self.fd.worst:.3e} is worse than {self.tol:g}")
        return out

    @property
    def passed(self) -> bool:
        """Whether the gradient is nonzero, every rate is in range and the FD agreement within ``tol``."""
        return not self.failures()

    def report(self) -> str:
        """The figures as text: J, gradient norm, Taylor table, FD table, verdict."""
        t, f = self.taylor, self.fd
        lines = [
            f"J(theta)        = {t.J:.15e}",
            f"|dJ/dtheta|     = {t.gradient_norm:.15e}",
            f"dJ/dtheta . d   = {t.directional_derivative:.15e}",
            "Taylor test:",
            f"{'h':>10} {'remainder':>14} {'rate':>7}",
        ]
        for k, (h, r) in enumerate(zip(t.steps, t.remainders)):
            rate = f"{t.rates[k - 1]:7.4f}" if k > 0 else ""
            lines.append(f"{h:10.3e} {r:14.6e} {rate}")
        lines.append("finite differences (J(theta + h d) - J(theta - h d)) / 2h against the adjoint dJ.d:")
        lines.append(f"{'h':>10} " + " ".join(f"{'rel. error d' + str(i + 1):>15}" for i in range(f.adjoint.size)))
        for k, h in enumerate(f.steps):
            lines.append(f"{h:10.3e} " + " ".join(f"{f.errors[i, k]:15.3e}" for i in range(f.adjoint.size)))
        lines.append(f"{'adjoint':>10} " + " ".join(f"{a:15.6e}" for a in f.adjoint))
        lines.append(f"{'best':>10} " + " ".join(f"{b:15.3e}" for b in f.best))
        lo, hi = self.rate_range
        lines.append(
            f"min rate {t.min_rate:.4f}, last rate {t.rates[-1]:.4f} (accepted: all >= {lo}, last <= {hi}), "
            f"worst best FD error {f.worst:.3e} "
            f"(accepted <= {self.tol:g})"
        )
        failures = self.failures()
        lines.append("PASS" if not failures else "FAIL: " + "; ".join(failures))
        return "\n".join(lines)


def check_gradient(
    rf,
    theta: np.ndarray,
    *,
    seed: int = 0,
    h0: float = 1e-2,
    taylor_steps: int = 5,
    fd_steps: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    n_directions: int = 2,
    tol: float = FD_TOLERANCE,
) -> GradientCheck:
    """The Taylor test and the finite-difference check of ``rf``'s gradient at ``theta``.

    One gradient is computed and used by both; the network parameters are
    restored afterwards.  The directions come from ``numpy.random.default_rng``
    seeded with ``seed + 1`` (Taylor) and ``seed + 2`` (FD), the same on every rank.

    Args:
        rf: A :class:`femnpde.model.reduced.ReducedFunctional` (or any ``rf(θ)``
            with ``rf.derivative(θ)``).
        theta: Where to check.
        seed: Seed of the directions.
        h0: Largest Taylor step.
        taylor_steps: Number of Taylor steps (halving), >= 2.
        fd_steps: The finite-difference steps.
        n_directions: Number of FD directions.
        tol: FD tolerance (:data:`FD_TOLERANCE`).

    Returns:
        Both results; ``.passed`` and ``.report()``.
    """
    theta = np.array(theta, dtype=np.float64, copy=True)
    with restored_parameters(rf):
        gradient = _gradient(rf, theta, None)
        dtheta = np.random.default_rng(seed + 1).standard_normal(theta.size)
        taylor = taylor_test(rf, theta, dtheta, gradient=gradient, h0=h0, n_steps=taylor_steps)
        fd = finite_difference_check(
            rf, theta, steps=fd_steps, n_directions=n_directions, seed=seed + 2, gradient=gradient
        )
    return GradientCheck(taylor=taylor, fd=fd, tol=tol)
