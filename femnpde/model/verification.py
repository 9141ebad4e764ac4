"""Gradient verification: the Taylor test.

For a smooth J, ``r(h) = |J(θ + h δθ) − J(θ) − h ∇J(θ)·δθ| = O(h²)``; the rates
``log2(r(h_k) / r(h_k/2))`` tend to 2 exactly when the gradient is the exact
gradient of J (a biased gradient gives rate 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["TaylorResult", "taylor_test"]


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


def taylor_test(
    J: Callable[[np.ndarray], float],
    theta: np.ndarray,
    dtheta: np.ndarray,
    gradient: np.ndarray | None = None,
    h0: float = 1e-2,
    n_steps: int = 5,
) -> TaylorResult:
    """Second-order Taylor remainder test of a gradient.

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
    theta = np.asarray(theta, dtype=np.float64).copy()
    dtheta = np.asarray(dtheta, dtype=np.float64)
    J0 = float(J(theta))
    if gradient is None:
        gradient = J.derivative(theta)
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
