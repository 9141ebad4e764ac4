"""Nonlinear test problems shared by the solver tests and bench/nonlinear_reference.py.

Each case builds a :class:`~femnpde.fem.problem.ParabolicProblem` with a
nonlinear residual: Allen–Cahn (P1/P2, backward Euler/Crank–Nicolson, a
quadrature source, 3D), nonlinear diffusion ``(a + b u²)∇u·∇v``, the network
inside a reaction coefficient and inside a nonlinear diffusion coefficient.
"""

from __future__ import annotations

import numpy as np
import ufl
import dolfinx.mesh
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import L2Misfit

__all__ = ["CASES", "build_problem", "reduced", "checks"]


def _nonlinear_diffusion(comm):
    mesh = dolfinx.mesh.create_unit_square(comm, 6, 6)

    def residual(u, v, g, t, x):
        return (0.02 + 0.5 * u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + (u * g - g) * v * ufl.dx

    return ParabolicProblem(
        mesh, residual, degree=2, time=TimeGrid(0.5, 6), theta=0.5,
        initial_condition=lambda x: 0.3 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]),
        dirichlet=[Dirichlet("boundary", 0.0)],
    )


def _network_in_reaction(comm):
    mesh = dolfinx.mesh.create_unit_square(comm, 6, 6)

    def residual(u, v, g, t, x):
        return (0.05 * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.sin(g) * u * v - (1 + t * x[0]) * v) * ufl.dx

    return ParabolicProblem(
        mesh, residual, time=TimeGrid(0.5, 5), theta=0.5,
        initial_condition=lambda x: x[0] * (1 - x[0]),
        dirichlet=[Dirichlet(lambda x: np.isclose(x[0], 0.0), lambda t: 0.1 * t)],
    )


def _network_in_diffusion(comm):
    mesh = dolfinx.mesh.create_unit_square(comm, 5, 5)

    def residual(u, v, g, t, x):
        k = 0.02 * (1 + g**2) + 0.1 * u**2
        return k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + (u**3 - 0.5 * g) * v * ufl.dx

    return ParabolicProblem(
        mesh, residual, time=TimeGrid(0.4, 5), theta=1.0,
        initial_condition=lambda x: 0.5 * x[0] * (1 - x[0]) * x[1],
        dirichlet=[Dirichlet(lambda x: np.isclose(x[1], 0.0), 0.0)],
    )


def _allen_cahn_3d(comm):
    from femnpde.fem.problem import allen_cahn

    mesh = dolfinx.mesh.create_unit_cube(comm, 3, 3, 3)
    return ParabolicProblem(
        mesh, allen_cahn(0.05, 0.5), time=TimeGrid(0.3, 4), theta=1.0,
        initial_condition=lambda x: 0.4 * np.sin(np.pi * x[0]) * x[1],
        dirichlet=[Dirichlet("boundary", 0.0)],
    )


#: name -> builder(comm) -> ParabolicProblem
CASES = {
    "ac_p1_be": lambda comm: paper_problem("allen-cahn", comm=comm, nx=5, ny=10, n_steps=8),
    "ac_p2_cn": lambda comm: paper_problem("allen-cahn", comm=comm, degree=2, theta=0.5, nx=5, ny=10, n_steps=8),
    "ac_quadrature": lambda comm: paper_problem("allen-cahn", comm=comm, nx=5, ny=10, n_steps=12, source="quadrature"),
    "ac_paper_861": lambda comm: paper_problem("allen-cahn", comm=comm),
    "ac_3d": _allen_cahn_3d,
    "nonlinear_diffusion_p2": _nonlinear_diffusion,
    "network_in_reaction": _network_in_reaction,
    "network_in_diffusion": _network_in_diffusion,
}


def build_problem(name: str, comm=MPI.COMM_WORLD) -> ParabolicProblem:
    """The problem of case ``name``."""
    return CASES[name](comm)


def reduced(problem, solver, n_neurons: int = 8, seed: int = 3):
    """A reduced functional with data from the 'difficult' target; returns (rf, θ0)."""
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    data = solver.forward(gstar).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data)
    net = ShallowNetwork(n_neurons, problem.mesh.geometry.dim, seed=seed)
    return ReducedFunctional(solver, NetworkSource(problem, net), misfit), net.params.copy()


def checks(name: str, comm=MPI.COMM_WORLD, prefix: str = "ref_") -> dict:
    """Loss, gradient, Taylor remainders (3 steps from h = 1e-2) and a central FD (h = 1e-5) of case ``name``."""
    from femnpde.fem.solver import ThetaSolver
    from femnpde.model.verification import taylor_test

    problem = build_problem(name, comm)
    solver = ThetaSolver(problem, f"{prefix}{name}_")
    rf, theta0 = reduced(problem, solver)
    J = rf(theta0)
    dJ = rf.derivative()
    dtheta = np.random.default_rng(5).standard_normal(theta0.size)
    tt = taylor_test(rf, theta0, dtheta, gradient=dJ, n_steps=3)
    h = 1e-5
    fd = (rf(theta0 + h * dtheta) - rf(theta0 - h * dtheta)) / (2 * h)
    solver.destroy()
    return {"J": J, "dJ": dJ.tolist(), "remainders": tt.remainders.tolist(), "rates": tt.rates.tolist(), "fd": fd,
            "dd": float(dJ @ dtheta)}
