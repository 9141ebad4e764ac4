"""Synthetic data: the discrete solution for a target source, and partition-independent noise.

:func:`synthetic_field` solves the run's own discrete problem with the target
source ``g*`` and returns a *copy* of the owned state values, then clears the
solver's storage, so the reduced functional never sees the data solve's
states.  Noise is added by :mod:`femnpde.obs.noise`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femnpde._mpi import bounding_box
from femnpde.app.scenarios import target_source
from femnpde.fem.problem import ParabolicProblem
from femnpde.model.reduced import FunctionSource

__all__ = ["synthetic_field", "target_for"]


def target_for(problem: ParabolicProblem, name: str) -> FunctionSource:
    """The named target source ``g*`` on ``problem``'s source space (bounding box from the mesh)."""
    mesh = problem.mesh
    bbox = bounding_box(mesh.comm, mesh.geometry.x[:, : mesh.geometry.dim])
    return FunctionSource(problem, target_source(name, problem.time.T, bbox))


def synthetic_field(solver: Any, problem: ParabolicProblem, target_values: np.ndarray) -> np.ndarray:
    """The owned dof values of every level of the solution with source ``target_values`` (a copy).

    The levels are collected during the forward sweep (a checkpointing
    storage does not keep them); the solver's state storage is cleared
    afterwards.
    """
    data = np.empty((problem.time.n_steps + 1, problem.n_owned))
    data[0] = problem.u0.x.array[: problem.n_owned]
    u = problem.u.x.array

    def collect(n: int) -> None:
        data[n] = u[: problem.n_owned]

    solver.forward(target_values, step_callback=collect).clear()
    return data
