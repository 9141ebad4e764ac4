"""Activations evaluated in place, and their derivatives from their outputs.

Only activation *outputs* ``s = sigma(z)`` need to be kept for a backward
pass: every derivative is computed from the output (``tanh' = 1 - s**2``,
``sigmoid' = s (1 - s)``, ``softplus' = 1 - exp(-s)``).  ``tanh`` and
``sigmoid`` go through ``np.exp`` (several times faster than ``np.tanh``
where numpy lacks a SIMD ``tanh``), ``softplus`` is
``max(z, 0) + log1p(exp(-|z|))``; all are overflow-free with absolute errors
below 1e-15.  Callers suppress numpy's overflow/underflow warnings.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "activate_inplace", "derivative_from_output"]

ACTIVATIONS: tuple[str, ...] = ("tanh", "sigmoid", "softplus")


# ---------------------------------------------------------------------------
# activations (in place) and their derivatives from the outputs
# ---------------------------------------------------------------------------
#
# tanh and sigmoid are evaluated through np.exp, which is several times faster
# than np.tanh on CPUs where numpy has no SIMD tanh (e.g. AVX2); the absolute
# error is a few ulp of 1 (< 1e-15), which is what matters for the network
# output (a sum of O(1) terms).  exp overflow to inf gives the exact limits
# (-1 for tanh, 0 for sigmoid); callers suppress the overflow and
# underflow warnings (also when the user has set np.seterr(all="raise")).


def activate_inplace(
    z: np.ndarray, activation: str, tmp: np.ndarray | None = None
) -> None:
    """Overwrite pre-activations ``z`` with ``sigma(z)``.

    Args:
        z: Float64 array, modified in place.
        activation: One of :data:`ACTIVATIONS`.
        tmp: Optional scratch array of the same shape (used by softplus).
    """
    if activation == "tanh":
        # tanh(z) = 2 / (1 + exp(-2 z)) - 1
        z *= -2.0
        np.exp(z, out=z)
        z += 1.0
        np.divide(2.0, z, out=z)
        z -= 1.0
    elif activation == "sigmoid":
        # sigmoid(z) = 1 / (1 + exp(-z))
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        np.reciprocal(z, out=z)
    elif activation == "softplus":
        # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): no overflow.
        if tmp is None:
            tmp = np.empty_like(z)
        np.abs(z, out=tmp)
        np.negative(tmp, out=tmp)
        np.exp(tmp, out=tmp)
        np.log1p(tmp, out=tmp)
        np.maximum(z, 0.0, out=z)
        z += tmp
    else:  # pragma: no cover - guarded by the constructor
        raise ValueError(f"unknown activation {activation!r}")


def derivative_from_output(s: np.ndarray, out: np.ndarray, activation: str) -> None:
    """Write ``sigma'(z)`` into ``out`` given the activation output ``s = sigma(z)``.

    Args:
        s: Activation outputs.
        out: Array of the same shape as ``s`` receiving the derivative.
        activation: One of :data:`ACTIVATIONS`.
    """
    if activation == "tanh":
        np.multiply(s, s, out=out)
        np.subtract(1.0, out, out=out)
    elif activation == "sigmoid":
        np.subtract(1.0, s, out=out)
        out *= s
    elif activation == "softplus":
        # softplus'(z) = sigmoid(z) = 1 - exp(-softplus(z)); s >= 0, no overflow.
        np.negative(s, out=out)
        np.exp(out, out=out)
        np.subtract(1.0, out, out=out)
    else:  # pragma: no cover - guarded by the constructor
        raise ValueError(f"unknown activation {activation!r}")
