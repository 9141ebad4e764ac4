"""Synthetic data: the discrete solution for a target source, and partition-independent noise.

:func:`synthetic_field` solves the run's own discrete problem with the target
source ``g*`` step by step (:meth:`ThetaSolver.forward_step` from the
previous level) and collects the owned state values into its own array: the
solver's state storage is neither written, read nor cleared, so the reduced
functional never sees the data solve's states.  Noise is added by
:mod:`femnpde.obs.noise`.
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
    """The owned dof values of every level of the solution with source ``target_values``.

    The levels are solved with ``solver``'s steps (its forms, matrices and
    solvers) into an array of this function's own; the solver's state storage
    (the training's) is not used.  Afterwards ``problem.u`` holds the last level.
    """
    target_values = np.asarray(target_values)
    n_owned, n_levels = problem.n_owned, problem.time.n_steps + 1
    expected = (n_levels, problem.n_owned_source)
    if target_values.shape != expected:
        raise ValueError(f"synthetic_field: target_values have shape {target_values.shape}, expected {expected}")
    data = np.empty((n_levels, n_owned))
    u = problem.u.x.array
    u[:] = problem.u0.x.array
    data[0] = u[:n_owned]
    for n in range(1, n_levels):
        solver.forward_step(n, target_values, u)
        data[n] = u[:n_owned]
    return data
