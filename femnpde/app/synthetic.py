"""Synthetic data: the discrete solution for a target source, and partition-independent noise.

:func:`synthetic_field` solves the run's own discrete problem with the target
source ``g*`` and returns a *copy* of the owned state values, then clears the
solver's storage, so the reduced functional never sees the data solve's
states.  :func:`add_field_noise` adds ``noise · max|data| · ξ`` with ``ξ``
drawn from ``np.random.default_rng(seed)`` for the whole global array, level
by level, in an order of the dofs that does not depend on the partition: the
data is the same on any number of ranks.  Point data (sensors) gets its noise
from :func:`femnpde.obs.points.add_noise` (replicated values, one draw).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from femnpde._mpi import bounding_box
from femnpde.app.scenarios import target_source
from femnpde.fem.problem import ParabolicProblem
from femnpde.model.reduced import FunctionSource

__all__ = ["add_field_noise", "canonical_dof_index", "synthetic_field", "target_for"]


def target_for(problem: ParabolicProblem, name: str) -> FunctionSource:
    """The named target source ``g*`` on ``problem``'s source space (bounding box from the mesh)."""
    mesh = problem.mesh
    bbox = bounding_box(mesh.comm, mesh.geometry.x[:, : mesh.geometry.dim])
    return FunctionSource(problem, target_source(name, problem.time.T, bbox))


def synthetic_field(solver: Any, problem: ParabolicProblem, target_values: np.ndarray) -> np.ndarray:
    """The owned dof values of every level of the solution with source ``target_values`` (a copy).

    The solver's state storage is cleared afterwards.
    """
    states = solver.forward(target_values)
    data = np.array(states.to_array()[:, : problem.n_owned], dtype=np.float64, copy=True)
    states.clear()
    return data


def canonical_dof_index(problem: ParabolicProblem) -> tuple[np.ndarray, int]:
    """A partition-independent index of the owned solution dofs and the global dof count.

    Dofs are ordered by their coordinates (rounded to 1e-9 of the mesh size,
    lexicographically), which does not depend on how the mesh is distributed.
    """
    comm = problem.comm
    n_owned = problem.n_owned
    gdim = problem.mesh.geometry.dim
    x = problem.V.tabulate_dof_coordinates()[:n_owned, :gdim]
    lo, hi = bounding_box(comm, x)
    tol = 1e-9 * max(float(np.max(hi - lo)), 1e-300)
    keys = np.rint((x - lo) / tol).astype(np.int64)
    all_keys = comm.allgather(keys)
    offset = sum(len(k) for k in all_keys[: comm.rank])
    stacked = np.concatenate(all_keys, axis=0)
    order = np.lexsort(stacked.T[::-1])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return position[offset : offset + n_owned], len(order)


def add_field_noise(problem: ParabolicProblem, data: np.ndarray, noise: float, seed: int) -> None:
    """``data += noise · max|data| · ξ`` in place, ξ drawn for the global array in a canonical dof order."""
    comm = problem.comm
    scale = comm.allreduce(float(np.max(np.abs(data), initial=0.0)), op=MPI.MAX)
    sigma = noise * scale
    if sigma == 0.0:
        return
    index, n_global = canonical_dof_index(problem)
    rng = np.random.default_rng(seed)
    for n in range(data.shape[0]):
        xi = rng.standard_normal(n_global)
        data[n] += sigma * xi[index]
