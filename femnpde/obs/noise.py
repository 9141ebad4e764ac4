"""Noise on observations, reproducible and identical on any number of ranks.

* :func:`add_noise` -- replicated data (sensor values): one draw for the whole array;
* :func:`add_field_noise` -- distributed field data: ``noise · max|data| · ξ``
  with ``ξ`` of a dof at a level a pure function of ``(seed, the dof's
  coordinates, the level)`` (:func:`keyed_normals`: a counter-based
  generator, SplitMix64 applied as a hash, then Box–Muller).  Each rank draws
  only the variates of the dofs it owns, with no communication and no work
  that grows with the global size, and a dof gets the same variate on any
  number of ranks.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from mpi4py import MPI

from femnpde._mpi import bounding_box

__all__ = ["add_field_noise", "add_noise", "coordinate_keys", "keyed_normals"]


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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 2.0**-53


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on an array of uint64 (wrapping arithmetic)."""
    z = (z + _GOLDEN).astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def keyed_normals(seed: int, keys: np.ndarray, level: int) -> np.ndarray:
    """Standard normal variates, one per row of ``keys``, for time level ``level``.

    Args:
        seed: The user's seed (any integer).
        keys: Integer keys, shape ``(m,)`` or ``(m, k)``; rows that are equal
            give equal variates.
        level: A further key component (the time level).

    Returns:
        Shape ``(m,)``, float64.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if keys.ndim == 1:
        keys = keys[:, None]
    with np.errstate(over="ignore"):
        h = np.full(keys.shape[0], np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        h = _mix(h)
        for j in range(keys.shape[1]):
            h = _mix(h ^ keys[:, j].astype(np.uint64))
        h = _mix(h ^ np.uint64(int(level) & 0xFFFFFFFFFFFFFFFF))
        h2 = _mix(h ^ _GOLDEN)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_M53  # (0, 1]
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * _TWO_M53  # [0, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def coordinate_keys(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer keys of points: coordinates relative to the box ``[lo, hi]`` rounded to 1e-9 of its size.

    Equal on every rank for the same point (``lo``/``hi`` are the global
    bounding box), so they key a dof independently of the partition.
    """
    tol = 1e-9 * max(float(np.max(np.asarray(hi) - np.asarray(lo))), 1e-300)
    return np.rint((np.asarray(x) - lo) / tol).astype(np.int64)


def add_field_noise(problem: Any, data: np.ndarray, noise: float, seed: int) -> None:
    """``data += noise · max|data| · ξ`` in place, ``ξ^n_j = keyed_normals(seed, key(x_j), n)``.

    ``data`` holds the owned dof values of every level, shape
    ``(n_levels, n_owned)``.  The key of a dof is its coordinate rounded to
    1e-9 of the global bounding box (:func:`coordinate_keys`), so every rank
    draws only the variates of its own dofs (O(local) work; the only
    communication is the reduction of ``max|data|`` and of the bounding box)
    and the noisy data is the same on any number of ranks.  Dofs must have
    distinct coordinates (scalar Lagrange spaces).

    Args:
        problem: Provides ``comm``, ``n_owned``, ``mesh.geometry.dim`` and
            ``V.tabulate_dof_coordinates()``.
        data: The clean data (modified).
        noise: Relative noise level (>= 0).
        seed: Seed.
    """
    comm = problem.comm
    scale = comm.allreduce(float(np.max(np.abs(data), initial=0.0)), op=MPI.MAX)
    sigma = noise * scale
    if sigma == 0.0:
        return
    gdim = problem.mesh.geometry.dim
    x = problem.V.tabulate_dof_coordinates()[: problem.n_owned, :gdim]
    lo, hi = bounding_box(comm, x)
    keys = coordinate_keys(x, lo, hi)
    for n in range(data.shape[0]):
        data[n] += sigma * keyed_normals(seed, keys, n)
