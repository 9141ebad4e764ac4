"""The records a :class:`~femnpde.fem.problem.ParabolicProblem` is built from: its time grid and Dirichlet conditions.

Both are re-exported by :mod:`femnpde.fem.problem`, where users import them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TimeGrid", "Dirichlet"]


@dataclass(frozen=True)
class TimeGrid:
    """A uniform time grid ``t_n = n T / n_steps``, n = 0..n_steps.

    Attributes:
        T: Final time (> 0).
        n_steps: Number of time steps (>= 1).
    """

    T: float = 1.0
    n_steps: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.T, numbers.Real) and np.isfinite(self.T) and self.T > 0):
            raise ValueError(f"TimeGrid: T={self.T!r} is not valid; the final time must be a positive number")
        if not (isinstance(self.n_steps, numbers.Integral) and self.n_steps >= 1):
            raise ValueError(f"TimeGrid: n_steps={self.n_steps!r} is not valid; it must be an integer >= 1")

    @property
    def dt(self) -> float:
        """The time step."""
        return float(self.T) / int(self.n_steps)

    @property
    def times(self) -> np.ndarray:
        """All time levels, shape ``(n_steps + 1,)``."""
        return np.arange(self.n_steps + 1, dtype=np.float64) * self.dt


@dataclass
class Dirichlet:
    """A Dirichlet condition ``u = value`` on part of the boundary.

    Attributes:
        where: Which boundary facets: ``"boundary"`` (the whole boundary), a
            callable ``x -> bool array`` locating facets geometrically, or a
            pair ``(facet_tags, tag)`` (an int tag or a sequence of tags).
        value: A number; a function of time ``value(t) -> float``; or a
            function ``value(t, x) -> array`` of time and the points ``x``
            (shape ``(3, npts)``), as for ``Function.interpolate``.
        time_dependent: Whether ``value`` takes ``t``.  Defaults to True for
            callables.
        name: Used in error messages.
    """

    where: Any = "boundary"
    value: float | Callable[..., Any] = 0.0
    time_dependent: bool | None = None
    name: str = ""
