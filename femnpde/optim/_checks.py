"""Argument and state-dict checks shared by the optimizers and schedules (internal)."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__: list[str] = []


def _real(name: str, value: Any) -> float:
    """Return ``value`` as a finite float or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out


def _positive(name: str, value: Any) -> float:
    out = _real(name, value)
    if not out > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def _non_negative(name: str, value: Any) -> float:
    out = _real(name, value)
    if not out >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return out


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    out = int(value)
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return out


def _check_params_grad(params: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Validate an in-place update target and return ``grad`` as float64."""
    if not isinstance(params, np.ndarray):
        raise ValueError(
            f"params must be a 1-D float64 numpy array (updated in place), "
            f"got {type(params).__name__}"
        )
    if params.dtype != np.float64 or params.ndim != 1:
        raise ValueError(
            f"params must be a 1-D float64 numpy array (updated in place), "
            f"got dtype={params.dtype} with shape {params.shape}"
        )
    if not params.flags.writeable:
        raise ValueError("params must be a writeable array (it is updated in place)")
    g = np.asarray(grad)
    if g.shape != params.shape:
        raise ValueError(
            f"grad must have the same shape as params {params.shape}, got shape {g.shape}"
        )
    if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)):
        raise ValueError(f"grad must be a real-valued array, got dtype={g.dtype}")
    return g.astype(np.float64, copy=False)


def _get(state: Mapping[str, Any], key: str) -> Any:
    try:
        return state[key]
    except KeyError:
        raise ValueError(f"state_dict is missing the key {key!r}") from None


def _check_kind(state: Mapping[str, Any], expected: str) -> None:
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict must be a mapping, got {type(state).__name__}")
    kind = str(_get(state, "kind"))
    if kind != expected:
        raise ValueError(f"state_dict['kind'] is {kind!r} but this object expects {expected!r}")


def _state_float(state: Mapping[str, Any], key: str) -> float:
    return float(np.asarray(_get(state, key)))


def _state_int(state: Mapping[str, Any], key: str) -> int:
    return int(np.asarray(_get(state, key)))


class _HasLR(Protocol):
    lr: float


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "lr"):
        raise ValueError(
            f"optimizer must have a settable 'lr' attribute, got {type(optimizer).__name__}"
        )


def _option_names(cls: type, skip: tuple[str, ...]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", *skip)]


def _check_options(cls: type, skip: tuple[str, ...], what: str, options: Mapping[str, Any]) -> None:
    valid = _option_names(cls, skip)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, bad))} for {what}; "
            f"valid options: {', '.join(valid) if valid else '(none)'}"
        )
