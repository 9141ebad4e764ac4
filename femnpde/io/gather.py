"""Gathering owned dof values, coordinates and plot triangles of a scalar space to rank 0 (collective).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femnpde._mpi import collective_check, comm_rank, comm_size

__all__ = ['gather_owned', 'gather_triangles']


def _owned_part(
    values: np.ndarray, V: Any, what: str
) -> tuple[np.ndarray | None, str | None]:
    imap = V.dofmap.index_map
    n_owned = imap.size_local
    n_local = n_owned + imap.num_ghosts
    values = np.asarray(values)
    if V.dofmap.index_map_bs != 1:
        return (
            None,
            f"{what}: only scalar spaces are supported (block size {V.dofmap.index_map_bs})",
        )
    if values.ndim not in (1, 2) or values.shape[-1] not in (n_owned, n_local):
        return None, (
            f"{what}: values of shape {values.shape} do not fit the space: the last axis must hold "
            f"the {n_local} local (owned + ghost) or {n_owned} owned dof values"
        )
    return np.ascontiguousarray(values[..., :n_owned], dtype=np.float64), None


def gather_owned(
    problem_space_values: np.ndarray, V: Any, comm: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Gather the owned dof values and coordinates of a scalar space to rank 0 (collective).

    Args:
        problem_space_values: Local values on ``V``, shape ``(n_local,)`` or
            ``(k, n_local)`` (owned + ghost entries; owned-only arrays are
            accepted too).
        V: The (scalar) function space.
        comm: The communicator of ``V``'s mesh.

    Returns:
        On rank 0, ``(coords, values)`` in global dof order: ``coords`` of
        shape ``(N, gdim)`` and ``values`` of shape ``(N,)`` or ``(k, N)``,
        with ``N`` the global number of dofs.  ``None`` on the other ranks.

    Raises:
        ValueError: On every rank, if the values do not fit ``V`` on some rank.
    """
    owned, error = _owned_part(problem_space_values, V, "gather_owned")
    collective_check(comm, error)
    imap = V.dofmap.index_map
    n_owned = imap.size_local
    gdim = V.mesh.geometry.dim
    coords = np.ascontiguousarray(V.tabulate_dof_coordinates()[:n_owned, :gdim])
    start = imap.local_range[0]
    parts = (
        [(start, coords, owned)]
        if comm_size(comm) == 1
        else comm.gather((start, coords, owned), root=0)
    )
    if comm_rank(comm) != 0:
        return None
    n_global = imap.size_global
    X = np.empty((n_global, gdim))
    U = np.empty(owned.shape[:-1] + (n_global,))
    for s, c, v in parts:
        X[s : s + c.shape[0]] = c
        U[..., s : s + c.shape[0]] = v
    return X, U


def gather_triangles(V: Any, comm: Any) -> np.ndarray | None:
    """Triangles (global dof indices) covering a 2D mesh, gathered to rank 0.

    Lagrange dofs on triangles: degree 1 uses the cells, degree 2 splits each
    cell into four sub-triangles, higher degrees use the vertex dofs only.
    Quadrilaterals are split into two triangles through their vertex dofs.
    Returns None (on rank 0) when the cell type is not supported.
    """
    mesh = V.mesh
    tdim = mesh.topology.dim
    cell_name = mesh.topology.cell_type.name
    n_cells = mesh.topology.index_map(tdim).size_local
    dofs = V.dofmap.list[:n_cells]
    if "triangle" in cell_name:
        if dofs.shape[1] == 6 and V.ufl_element().degree == 2:
            # basix P2 triangle: vertices 0, 1, 2; edge dofs 3 (v1 v2), 4 (v0 v2), 5 (v0 v1).
            local = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2], [5, 3, 4]])
        else:
            local = np.array([[0, 1, 2]])
    elif "quadrilateral" in cell_name:
        local = np.array([[0, 1, 3], [0, 3, 2]])
    else:
        local = None
    tris = None
    if local is not None:
        loc = dofs[:, local].reshape(-1, 3)
        tris = V.dofmap.index_map.local_to_global(
            loc.reshape(-1).astype(np.int32)
        ).reshape(-1, 3)
    parts = [tris] if comm_size(comm) == 1 else comm.gather(tris, root=0)
    if comm_rank(comm) != 0:
        return None
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts).astype(np.int64)
