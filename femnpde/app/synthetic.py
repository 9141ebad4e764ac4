"""Synthetic data: the discrete solution for a target source, and partition-independent noise.

:func:`synthetic_field` solves the run's own discrete problem with the target
source ``g*`` step by step (:meth:`ThetaSolver.forward_step` from the
previous level) and collects the owned state values into its own array: the
solver's state storage is neither written, read nor cleared, so the reduced
functional never sees the data solve's states.  Noise is added by
:mod:`femnpde.obs.noise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from femnpde._mpi import bounding_box
from femnpde.app.scenarios import target_source
from femnpde.fem.problem import ParabolicProblem
from femnpde.model.reduced import FunctionSource

__all__ = ["synthetic_field", "target_for"]


def target_for(problem: ParabolicProblem, target: str | Sequence[str]) -> FunctionSource:
    """The target source ``g*`` of ``data.target`` on ``problem``'s source space (bounding box from the mesh).

    Args:
        problem: The problem; with ``n_sources = m > 1`` the target has m outputs.
        target: A target name, or a list of ``m`` names, one per network-fed
            coefficient ``g[0], ..., g[m-1]``.  A single name with ``m > 1``
            feeds ``g[0]``; the targets of the other outputs are zero.
    """
    mesh = problem.mesh
    m = problem.n_sources
    bbox = bounding_box(mesh.comm, mesh.geometry.x[:, : mesh.geometry.dim])
    names = [target] if isinstance(target, str) else list(target)
    if m == 1 and len(names) == 1:
        return FunctionSource(problem, target_source(names[0], problem.time.T, bbox))
    if len(names) == 1:
        names += ["zero"] * (m - 1)
    if len(names) != m:
        raise ValueError(f"target_for: {len(names)} target names {names} for n_sources = {m}; give one per output")
    functions = [target_source(name, problem.time.T, bbox) for name in names]

    def stacked(t: float, x: np.ndarray) -> np.ndarray:
        return np.stack([np.broadcast_to(f(t, x), (x.shape[1],)) for f in functions])

    return FunctionSource(problem, stacked)


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
