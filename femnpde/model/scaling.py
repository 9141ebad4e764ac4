"""The learning rate of the mean-field scaling (:func:`reference_learning_rate`)."""

from __future__ import annotations

import math
from numbers import Real

from femnpde.model._network_checks import _check_beta, _check_n_neurons

__all__ = ["reference_learning_rate"]


def reference_learning_rate(base_lr: float, n_neurons: int, beta: float) -> float:
    """Learning rate ``base_lr * N ** (2 beta - 1)`` of the mean-field scaling.

    With the output scaled by ``N**-beta`` every parameter's gradient is
    ``O(N**-beta)``, so one gradient step changes the output by
    ``lr * sum_i |dg/dtheta_i|**2 = O(lr * N**(1 - 2 beta))``; the factor
    ``N**(2 beta - 1)`` keeps that change ``O(1)`` as ``N`` grows.

    Args:
        base_lr: Base learning rate (> 0).
        n_neurons: Number of neurons ``N`` (integer >= 1).
        beta: Scaling exponent, ``0 < beta <= 1``.

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: If an argument is invalid.
    """
    if (
        isinstance(base_lr, bool)
        or not isinstance(base_lr, Real)
        or not math.isfinite(float(base_lr))
        or base_lr <= 0
    ):
        raise ValueError(f"base_lr must be a finite number > 0, got {base_lr!r}")
    n = _check_n_neurons(n_neurons)
    b = _check_beta(beta)
    return float(base_lr) * float(n) ** (2.0 * b - 1.0)
