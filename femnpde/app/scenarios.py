"""The paper's scenarios (Riedl, Sirignano, Spiliopoulos 2025) on the FEM side.

Domain D = [0, 0.5] × [0, 1], homogeneous Dirichlet boundary, T = 1,
u0 = 0.2 sin(2πx/0.5) sin(2πy), heat (γ = 0.01) or Allen–Cahn (γ = 0.01,
ε = 0.32), data generated with a named target source g*.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import dolfinx.mesh
from mpi4py import MPI

from femnpde import defaults as D
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, allen_cahn, heat

__all__ = ["LX", "LY", "TARGETS", "target_source", "moving_gaussian", "paper_mesh", "paper_initial_condition", "paper_problem"]

LX, LY = 0.5, 1.0


def _scaled(t, x, T):
    return t / T, x[0] / LX, x[1] / LY


def _difficult(t, x, T):
    tt, xx, yy = _scaled(t, x, T)
    return 800.0 * (1 - yy) ** 2 * ((0.2 + 0.6 * tt) - yy) ** 2 * yy**2 * (1 - xx) * xx


#: Named target sources g*(t, x, T) of the paper (x̃ = x/0.5, ỹ = y/1, t̃ = t/T);
#: ``x`` of shape ``(3, npts)`` (DOLFINx's convention).
TARGETS: dict[str, Callable[[float, np.ndarray, float], np.ndarray]] = {
    "linear_t": lambda t, x, T: np.full(x.shape[1], t / T),
    "linear_x": lambda t, x, T: x[0] / LX,
    "linear_y": lambda t, x, T: x[1] / LY,
    "quadratic_t": lambda t, x, T: np.full(x.shape[1], (t / T) ** 2),
    "quadratic_x": lambda t, x, T: (x[0] / LX) ** 2,
    "tanh_1": lambda t, x, T: np.tanh(1.5 - x[0] / LX - x[1] / LY + t / T),
    "tanh_2": lambda t, x, T: 0.3 * np.tanh(-t / T - x[0] / LX - x[1] / LY + 1.5)
    + 0.25 * np.tanh(t / T - 1.2 * x[0] / LX + 0.5 * x[1] / LY - 0.8),
    "difficult": _difficult,
    # Domain-agnostic (not from the paper): a Gaussian source circling the
    # centre of the mesh's bounding box once over [0, T]; see moving_gaussian().
    "moving_gaussian": None,
    # Zero (e.g. an output of a multi-output network that the data leave at 0).
    "zero": lambda t, x, T: np.zeros(x.shape[1]),
}


def moving_gaussian(T: float, bbox: tuple[np.ndarray, np.ndarray]) -> Callable[[float, np.ndarray], np.ndarray]:
    """A Gaussian bump ``5 exp(−|x − c(t)|² / (2 s²))`` whose centre circles the bounding box's centre.

    ``c(t) = m + r (cos 2πt/T, sin 2πt/T, 0)`` with ``m`` the box centre,
    ``r = 0.3 min(extent_x, extent_y)`` and ``s = 0.1 max(extent)``.

    Args:
        T: Final time (one revolution).
        bbox: ``(lower, upper)`` corners of the domain.
    """
    lo, hi = (np.asarray(b, dtype=np.float64) for b in bbox)
    centre = 0.5 * (lo + hi)
    extent = hi - lo
    radius = 0.3 * float(np.min(extent[:2]))
    width = 0.1 * float(np.max(extent))

    def g(t: float, x: np.ndarray) -> np.ndarray:
        c = centre.copy()
        c[0] += radius * np.cos(2 * np.pi * t / T)
        c[1] += radius * np.sin(2 * np.pi * t / T)
        d2 = np.sum((x[: len(c)] - c[:, None]) ** 2, axis=0)
        return 5.0 * np.exp(-d2 / (2 * width**2))

    return g


def target_source(
    name: str, T: float = 1.0, bbox: tuple[np.ndarray, np.ndarray] | None = None
) -> Callable[[float, np.ndarray], np.ndarray]:
    """The target ``g*(t, x)`` named ``name`` (one of :data:`TARGETS`).

    Args:
        name: The target's name.
        T: Final time (targets are functions of t/T).
        bbox: Domain bounding box, for ``moving_gaussian`` (default: the paper's rectangle).
    """
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}")
    if name == "moving_gaussian":
        return moving_gaussian(T, bbox if bbox is not None else (np.zeros(2), np.array([LX, LY])))
    f = TARGETS[name]
    return lambda t, x: f(t, x, T)


def paper_mesh(comm: MPI.Comm = MPI.COMM_WORLD, nx: int = 20, ny: int = 40) -> dolfinx.mesh.Mesh:
    """The rectangle [0, 0.5] × [0, 1] with nx × ny squares split into triangles (h = 0.025 by default)."""
    return dolfinx.mesh.create_rectangle(
        comm, [np.array([0.0, 0.0]), np.array([LX, LY])], [nx, ny], dolfinx.mesh.CellType.triangle
    )


def paper_initial_condition(x: np.ndarray) -> np.ndarray:
    """u0 = 0.2 sin(2π x / 0.5) sin(2π y / 1)."""
    return 0.2 * np.sin(2 * np.pi * x[0] / LX) * np.sin(2 * np.pi * x[1] / LY)


def paper_problem(
    pde: str = "heat",
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    mesh: dolfinx.mesh.Mesh | None = None,
    degree: int = 1,
    theta: float = 1.0,
    nonlinear: str = D.TIME_NONLINEAR,
    n_steps: int = 64,
    T: float = 1.0,
    gamma: float = 0.01,
    epsilon: float = 0.32,
    nx: int = 20,
    ny: int = 40,
    source: str = "lagrange",
) -> ParabolicProblem:
    """The paper's heat or Allen–Cahn problem on the rectangle (or on ``mesh``)."""
    if pde == "heat":
        residual = heat(gamma)
    elif pde in ("allen-cahn", "allen_cahn"):
        residual = allen_cahn(gamma, epsilon)
    else:
        raise ValueError(f"unknown pde {pde!r}; valid: heat, allen-cahn")
    if mesh is None:
        mesh = paper_mesh(comm, nx, ny)
    return ParabolicProblem(
        mesh,
        residual,
        degree=degree,
        time=TimeGrid(T, n_steps),
        theta=theta,
        nonlinear=nonlinear,
        initial_condition=paper_initial_condition,
        dirichlet=[Dirichlet("boundary", 0.0)],
        source=source,
    )
