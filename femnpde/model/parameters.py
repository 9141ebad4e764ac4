"""Trainable physical parameters: named scalar constants of the residual in θ.

A :class:`PhysicalParameter` names a constant of the residual (a key of
``ParabolicProblem(constants=...)``, e.g. the diffusivity ``gamma``), its
initial value, whether it is trained and optional bounds.  The reduced
functional appends the trainable ones to the model's parameters,
``θ = [model parameters, c_1, .., c_k]``; their gradient
``dJ/dc = Σ_n λ^n · ∂F^n/∂c`` comes from the UFL residual (see
:meth:`femnpde.fem.solver.ThetaSolver.adjoint`).  Bounds are honoured by
L-BFGS-B and by the projected first-order optimisers of the training driver.

θ holds ``c / scale`` (``scale`` defaults to ``|initial|``, or 1 if that is
0): the entries are O(1) like the network's, which the optimisers' step
sizes and L-BFGS' initial Hessian guess assume (a diffusivity of 0.01 next
to O(1) weights otherwise makes L-BFGS crawl).  ``rf.split(θ)`` returns the
physical values.

In a run configuration::

    [parameters]
    gamma = { initial = 0.02, trainable = true, bounds = [1e-4, 1] }
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PhysicalParameter", "check_parameters", "parameter_bounds"]


@dataclass(frozen=True)
class PhysicalParameter:
    """A named scalar constant of the residual.

    Attributes:
        name: The constant's name (a key of the problem's ``constants``).
        initial: Initial value (the value in the problem when not trainable).
        trainable: Whether it is part of θ.
        bounds: ``(lower, upper)``; None for no bound on that side.
        scale: θ holds ``value / scale``; default ``|initial|`` (1 if 0).
    """

    name: str
    initial: float
    trainable: bool = True
    bounds: tuple[float | None, float | None] = (None, None)
    scale: float | None = None

    @property
    def theta_scale(self) -> float:
        """The scale actually used (``scale``, else ``|initial|``, else 1)."""
        if self.scale is not None:
            return float(self.scale)
        return abs(float(self.initial)) or 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"PhysicalParameter: name {self.name!r} is not a Python identifier")
        if not math.isfinite(float(self.initial)):
            raise ValueError(f"PhysicalParameter {self.name}: initial = {self.initial!r} is not finite")
        lo, hi = self.bounds
        if lo is not None and hi is not None and not float(lo) < float(hi):
            raise ValueError(f"PhysicalParameter {self.name}: bounds {list(self.bounds)} need lower < upper")
        if self.scale is not None and not (math.isfinite(float(self.scale)) and float(self.scale) > 0):
            raise ValueError(f"PhysicalParameter {self.name}: scale = {self.scale!r} must be a finite number > 0")
        if (lo is not None and self.initial < lo) or (hi is not None and self.initial > hi):
            raise ValueError(
                f"PhysicalParameter {self.name}: initial = {self.initial!r} is outside the bounds {list(self.bounds)}"
            )


def check_parameters(parameters: Sequence[PhysicalParameter], constants: Sequence[str]) -> list[PhysicalParameter]:
    """Validate parameters against the problem's constant names.

    Raises:
        ValueError: A name repeats or is not a constant of the problem (names the valid ones).
    """
    params = list(parameters)
    names = [p.name for p in params]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"physical parameters: {dup} given more than once")
    unknown = [n for n in names if n not in constants]
    if unknown:
        raise ValueError(
            f"physical parameters {unknown} are not constants of the problem; constants: {sorted(constants)}"
        )
    return params


def parameter_bounds(
    n_model: int, parameters: Sequence[PhysicalParameter]
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of θ (``-inf``/``inf`` where unbounded; scaled like θ)."""
    train = [p for p in parameters if p.trainable]
    lo = np.full(n_model + len(train), -np.inf)
    hi = np.full(n_model + len(train), np.inf)
    for k, p in enumerate(train):
        if p.bounds[0] is not None:
            lo[n_model + k] = float(p.bounds[0]) / p.theta_scale
        if p.bounds[1] is not None:
            hi[n_model + k] = float(p.bounds[1]) / p.theta_scale
    return lo, hi
