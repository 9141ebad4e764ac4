"""``femnpde smoke``: a minimal backward-Euler heat solve on the unit square.

Its final L2 norm must be identical (to round-off) on any number of ranks.
"""

from __future__ import annotations

import numpy as np
import dolfinx.fem
import dolfinx.mesh
import ufl
from mpi4py import MPI

from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, heat
from femnpde.model.reduced import FunctionSource
from femnpde.fem.solver import ThetaSolver

__all__ = ["smoke_solve"]


def smoke_solve(comm: MPI.Comm = MPI.COMM_WORLD, n: int = 32, n_steps: int = 20) -> float:
    """Solve ∂t u − Δu = 1 on the unit square, u = 0 on the boundary, u0 = sin(πx) sin(πy).

    Args:
        comm: Communicator.
        n: Cells per side.
        n_steps: Backward Euler steps up to T = 0.1.

    Returns:
        ‖u(T)‖_{L2}, the same on every rank.
    """
    mesh = dolfinx.mesh.create_unit_square(comm, n, n)
    problem = ParabolicProblem(
        mesh,
        heat(1.0),
        time=TimeGrid(0.1, n_steps),
        initial_condition=lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]),
        dirichlet=[Dirichlet("boundary", 0.0)],
    )
    solver = ThetaSolver(problem, "femnpde_smoke_")
    states = solver.forward(FunctionSource(problem, lambda t, x: np.ones(x.shape[1])).values())
    u = dolfinx.fem.Function(problem.V)
    u.x.array[:] = states.load(n_steps)
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(u * u * ufl.dx))
    solver.destroy()
    return float(np.sqrt(comm.allreduce(local, op=MPI.SUM)))
