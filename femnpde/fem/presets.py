"""Residual presets of the paper: the heat and Allen–Cahn equations.

A preset is a factory returning a spatial residual
``residual(u, v, g, t, x) -> ufl.Form`` (:data:`Residual`) for
:class:`~femnpde.fem.problem.ParabolicProblem`; :data:`PRESETS` names them
for the configuration (``[problem] preset``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import ufl

__all__ = ["Residual", "heat", "allen_cahn", "PRESETS"]

#: Signature of a spatial residual: ``residual(u, v, g, t, x) -> ufl.Form``.
Residual = Callable[[Any, Any, Any, Any, Any], ufl.Form]


def heat(gamma: float = 0.01) -> Residual:
    """Heat equation preset: ``∂t u − γΔu = g``.

    Args:
        gamma: Diffusivity (> 0), or a UFL expression (e.g. a trainable
            ``dolfinx.fem.Constant``).

    Returns:
        The residual ``γ ∇u·∇v − g v``.
    """
    if isinstance(gamma, numbers.Real) and not gamma > 0:  # a UFL constant (trainable) is not checked
        raise ValueError(f"heat: gamma={gamma!r} must be > 0")

    def residual(u, v, g, t, x):
        return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx

    return residual


def allen_cahn(gamma: float = 0.01, epsilon: float = 0.32) -> Residual:
    """Allen–Cahn preset: ``∂t u − γΔu + ε⁻²(u³ − u) = g``.

    Args:
        gamma: Diffusivity (> 0).
        epsilon: Interface parameter (> 0).

    Returns:
        The residual ``γ ∇u·∇v + ε⁻²(u³ − u) v − g v``.
    """
    if isinstance(gamma, numbers.Real) and not gamma > 0:
        raise ValueError(f"allen_cahn: gamma={gamma!r} must be > 0")
    if isinstance(epsilon, numbers.Real) and not epsilon > 0:
        raise ValueError(f"allen_cahn: epsilon={epsilon!r} must be > 0")

    def residual(u, v, g, t, x):
        return (
            gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            + epsilon**-2 * (u**3 - u) * v * ufl.dx
            - g * v * ufl.dx
        )

    return residual


#: Named presets: name -> (factory, allowed parameter names).
PRESETS: dict[str, tuple[Callable[..., Residual], tuple[str, ...]]] = {
    "heat": (heat, ("gamma",)),
    "allen-cahn": (allen_cahn, ("gamma", "epsilon")),
}
