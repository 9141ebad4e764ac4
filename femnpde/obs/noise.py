"""Noise on observations, reproducible and identical on any number of ranks.

* :func:`add_noise` -- replicated data (sensor values): one draw for the whole array;
* :func:`add_field_noise` -- distributed field data: ``noise · max|data| · ξ``
  with ``ξ`` drawn from ``np.random.default_rng(seed)`` for the whole global
  array, level by level, in an order of the dofs that does not depend on the
  partition (:func:`canonical_dof_index`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from mpi4py import MPI

from femnpde._mpi import bounding_box

__all__ = ["add_field_noise", "add_noise", "canonical_dof_index"]


def add_noise(data: np.ndarray, relative_std: float, seed: int) -> np.ndarray:
    """``data`` plus Gaussian noise with standard deviation ``relative_std · max|data|``.

    The noise depends only on ``seed`` and the shape of ``data``, so it is
    reproducible and identical on all ranks.  ``nan`` entries (unobserved
    levels) stay ``nan`` and are ignored in ``max|data|``.

    Args:
        data: The clean data.
        relative_std: Noise level relative to ``max|data|`` (>= 0).
        seed: Seed of the random generator.

    Returns:
        A new array of the same shape.
    """
    if not isinstance(relative_std, numbers.Real) or not math.isfinite(relative_std) or relative_std < 0:
        raise ValueError(f"add_noise: relative_std={relative_std!r} must be a finite number >= 0")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"add_noise: seed={seed!r} must be an integer")
    arr = np.array(data, dtype=np.float64)
    finite = np.abs(arr[np.isfinite(arr)])
    scale = float(relative_std) * (float(finite.max()) if finite.size else 0.0)
    rng = np.random.default_rng(int(seed))
    return arr + scale * rng.standard_normal(arr.shape)


def canonical_dof_index(problem: Any) -> tuple[np.ndarray, int]:
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


def add_field_noise(problem: Any, data: np.ndarray, noise: float, seed: int) -> None:
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
