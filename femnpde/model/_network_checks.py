"""Argument checks of :class:`~femnpde.model.network.ShallowNetwork`.

Each check returns the value converted to its canonical type or raises a
``ValueError`` that names the argument, the bad value and the allowed values.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from femnpde.model.activations import ACTIVATIONS

__all__ = [
    "_is_int",
    "_check_n_neurons",
    "_check_input_dim",
    "_check_beta",
    "_check_activation",
    "_check_max_cache_bytes",
    "_check_seed",
]


def _is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``bool`` excluded)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_n_neurons(n_neurons: Any) -> int:
    """``n_neurons`` as an int.

    Raises:
        ValueError: Unless it is an integer >= 1.
    """
    if not _is_int(n_neurons) or n_neurons < 1:
        raise ValueError(f"n_neurons must be an integer >= 1, got {n_neurons!r}")
    return int(n_neurons)


def _check_input_dim(input_dim: Any) -> int:
    """``input_dim`` as an int.

    Raises:
        ValueError: Unless it is 1, 2 or 3.
    """
    if not _is_int(input_dim) or input_dim not in (1, 2, 3):
        raise ValueError(f"input_dim must be 1, 2 or 3, got {input_dim!r}")
    return int(input_dim)


def _check_beta(beta: Any) -> float:
    """``beta`` as a float.

    Raises:
        ValueError: Unless it is a finite real number with ``0 < beta <= 1``.
    """
    if (
        isinstance(beta, bool)
        or not isinstance(beta, Real)
        or not math.isfinite(float(beta))
        or not 0.0 < float(beta) <= 1.0
    ):
        raise ValueError(
            f"beta must be a real number with 0 < beta <= 1 "
            f"(the mean-field analysis uses 1/2 < beta < 1), got {beta!r}"
        )
    return float(beta)


def _check_activation(activation: Any) -> str:
    """``activation`` as a str.

    Raises:
        ValueError: Unless it is one of :data:`ACTIVATIONS`.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return str(activation)


def _check_max_cache_bytes(max_cache_bytes: Any) -> int:
    """``max_cache_bytes`` as an int.

    Raises:
        ValueError: Unless it is an integer >= 0.
    """
    if not _is_int(max_cache_bytes) or max_cache_bytes < 0:
        raise ValueError(
            f"max_cache_bytes must be an integer >= 0, got {max_cache_bytes!r}"
        )
    return int(max_cache_bytes)


def _check_seed(seed: Any) -> int | None:
    """``seed`` as an int, or None.

    Raises:
        ValueError: Unless it is None or a non-negative integer.
    """
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return None if seed is None else int(seed)
