"""Memory estimates of a run before its arrays are allocated (bad input: exit 2 naming the key).

A run keeps every time level of the state, the adjoint, the data and the
source in memory, and the network evaluates ``N`` neurons at every source
point.  :func:`check_memory` estimates these arrays per rank from the mesh
size, ``time.n_steps`` and ``network.neurons`` (an estimate: factors for
copies and the finite-element structures are rounded up) and raises a
:class:`~femnpde.app.schema.ConfigError` naming the dominant key when the
estimate exceeds the memory available on the node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from femnpde.app.schema import ConfigError

__all__ = ["MemoryEstimate", "available_memory", "check_memory", "estimate_memory", "memory_budget"]

_BYTES = 8  # float64
#: Time-level arrays of the state space kept per run (states, adjoint, data, noise-free field, work).
_STATE_COPIES = 5
#: Time-level arrays of the source space (g_θ, g*, ∂J/∂g, work).
_SOURCE_COPIES = 4
#: Bytes per mesh cell of DOLFINx's mesh, dofmaps and sparsity (generous).
_CELL_BYTES = 2048


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak memory of a run on one rank, by contribution (bytes)."""

    mesh: float
    states: float
    network: float

    @property
    def total(self) -> float:
        """The sum of the contributions."""
        return self.mesh + self.states + self.network


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def estimate_memory(cfg: Mapping[str, Any], n_cells: int, n_vertices: int, tdim: int, ranks: int) -> MemoryEstimate:
    """The memory of a run with a mesh of ``n_cells`` cells and ``n_vertices`` vertices (global) per rank.

    Args:
        cfg: The resolved configuration.
        n_cells: Global number of cells.
        n_vertices: Global number of vertices.
        tdim: Topological dimension.
        ranks: Number of ranks the mesh is distributed over.
    """
    pcfg = cfg["pde"]
    levels = cfg["time"]["n_steps"] + 1
    dofs = n_vertices * pcfg["degree"] ** tdim / ranks  # P_k has about k^d dofs per vertex
    if pcfg["source"] == "quadrature":
        points = n_cells * math.comb(pcfg["source_degree"] // 2 + tdim, tdim) / ranks
    else:
        points = n_vertices * pcfg["source_degree"] ** tdim / ranks
    neurons = cfg["network"]["neurons"]
    return MemoryEstimate(
        mesh=float(n_cells) / ranks * _CELL_BYTES * max(1, pcfg["degree"]) ** tdim,
        states=_BYTES * levels * (_STATE_COPIES * dofs + _SOURCE_COPIES * points),
        network=_BYTES * neurons * (3.0 * points + 2.0 * levels + 16.0),
    )


def available_memory() -> float:
    """The memory available to this process in bytes (Linux ``MemAvailable``, else physical memory, else inf)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return float(os.sysconf("SC_PHYS_PAGES")) * os.sysconf("SC_PAGE_SIZE")
    return math.inf


def check_memory(estimate: MemoryEstimate, budget: float, ranks: int, where: str) -> None:
    """Raise if the per-rank ``estimate`` exceeds the per-rank ``budget``.

    Args:
        estimate: The per-rank estimate.
        budget: Bytes available per rank (the node's available memory over
            the ranks sharing it; the smallest over the communicator).
        ranks: The number of ranks (for the message).
        where: The mesh the estimate is for (for the message).

    Raises:
        ConfigError: Naming the dominant key, the estimate and the available memory.
    """
    if estimate.total <= budget:
        return
    parts = {"mesh size (mesh.cells or the mesh file)": estimate.mesh,
             "time.n_steps (every time level is kept)": estimate.states,
             "network.neurons (activations at every source point)": estimate.network}
    key = max(parts, key=parts.get)
    detail = ", ".join(f"{k.split(' ')[0]}: {_gib(v)}" for k, v in parts.items())
    raise ConfigError(
        f"the run needs about {_gib(estimate.total)} of memory per rank ({detail}; {where}, {ranks} rank(s)), but "
        f"only {_gib(budget)} per rank is available: reduce {key}, or use more nodes",
        key.split(" ")[0],
    )


def memory_budget(comm: Any) -> float:
    """The memory available per rank: the node's available memory over its ranks, smallest over ``comm`` (collective)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        local = available_memory() / node.size
    finally:
        node.Free()
    return comm.allreduce(local, op=MPI.MIN)
