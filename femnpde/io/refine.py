"""Uniform refinement of a tagged mesh, keeping its cell and facet tags."""

from __future__ import annotations

import dolfinx.la
import dolfinx.mesh
import numpy as np

__all__ = ["refine_uniformly"]

# DOLFINx's plaza refinement of a tetrahedron follows the longest edge of each face and breaks
# exact ties by the partition-dependent global vertex numbers, so a 3D mesh with tied faces
# (isosceles faces are common in gmsh meshes) refined on 2 ranks is not the mesh refined on 1.
# Refining a copy mapped by x -> (I + eps B) x with a generic B breaks those ties by geometry
# alone (decisions whose relative length difference exceeds ~eps are unchanged); the fine
# vertices are then put back at the exact coarse vertices and edge midpoints.
_TIE_EPS = 2.0**-20
_TIE_MAP = np.eye(3) + _TIE_EPS * np.array([[0.0, 0.311, 0.173], [0.229, 0.414, 0.071], [0.131, 0.293, 0.829]])


def _vertex_nodes(mesh: dolfinx.mesh.Mesh) -> np.ndarray:
    """Geometry node of each local vertex (P1 simplex geometry)."""
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim, 0)
    c2v = mesh.topology.connectivity(tdim, 0).array
    imap = mesh.topology.index_map(0)
    out = np.empty(imap.size_local + imap.num_ghosts, dtype=np.int64)
    out[c2v] = mesh.geometry.dofmaps[0][: c2v.size // (tdim + 1)].ravel()
    return out


def _tied_faces(mesh: dolfinx.mesh.Mesh) -> int:
    """Global number of faces whose two longest edges have (nearly, 1e-13) equal lengths."""
    mesh.topology.create_connectivity(2, 1)
    mesh.topology.create_connectivity(1, 0)
    e2v = mesh.topology.connectivity(1, 0).array.reshape(-1, 2)
    f2e = mesh.topology.connectivity(2, 1).array.reshape(-1, 3)
    node = _vertex_nodes(mesh)
    x = mesh.geometry.x
    length = np.linalg.norm(x[node[e2v[:, 0]]] - x[node[e2v[:, 1]]], axis=1)
    top = np.sort(length[f2e], axis=1)
    n_owned = mesh.topology.index_map(2).size_local
    return mesh.comm.allreduce(int(np.count_nonzero(top[:n_owned, 2] - top[:n_owned, 1] <= 1e-13 * top[:n_owned, 2])))


def _exact_fine_geometry(coarse, x_coarse: np.ndarray, fine, parent_cell: np.ndarray) -> None:
    """Put the fine nodes back at the exact coarse vertices / edge midpoints (O(local), one scatter)."""
    tdim = coarse.topology.dim
    cdofs = coarse.geometry.dofmaps[0]
    i, j = np.triu_indices(tdim + 1, 1)
    rows = _input_order(fine, parent_cell)
    parent_of = parent_cell[rows]
    xp = coarse.geometry.x
    # The coarse cells' vertices and edge midpoints as DOLFINx computed them (perturbed) and exact.
    pert = np.concatenate([xp[cdofs], 0.5 * (xp[cdofs[:, i]] + xp[cdofs[:, j]])], axis=1)
    exact = np.concatenate([x_coarse[cdofs], (x_coarse[cdofs[:, i]] + x_coarse[cdofs[:, j]]) / 2], axis=1)
    fdofs = fine.geometry.dofmaps[0][: rows.size].ravel()
    xf = fine.geometry.x
    # One owned cell of each node in owned cells (any: all give the same point), then the nearest of
    # that cell's parent's points (O(local) memory and work).
    entry = np.full(xf.shape[0], -1, dtype=np.int64)
    entry[fdofs] = np.arange(fdofs.size)
    nodes = np.flatnonzero(entry >= 0)
    parent = parent_of[entry[nodes] // (tdim + 1)]
    y = xf[nodes]
    best = np.full(nodes.size, np.inf)
    new = np.empty((nodes.size, 3))
    for c in range(pert.shape[1]):
        d = np.sum((y - pert[parent, c]) ** 2, axis=1)
        closer = d < best
        best[closer] = d[closer]
        new[closer] = exact[parent[closer], c]
    unmatched = int(np.count_nonzero(best > 0))  # DOLFINx's midpoints are (a + b) / 2: exact matches
    if fine.comm.allreduce(unmatched):
        raise RuntimeError("refine_uniformly: refined vertices that are no coarse vertex or edge midpoint")
    imap = fine.geometry.index_map()
    vec = dolfinx.la.vector(imap, bs=3)
    vec.array[:] = np.nan
    vec.array.reshape(-1, 3)[nodes] = new
    vec.scatter_forward()
    missing = fine.comm.allreduce(int(np.isnan(vec.array).any()))
    if missing:
        raise RuntimeError("refine_uniformly: a refined mesh node is in no owned cell of its owner rank")
    xf[:] = vec.array.reshape(-1, 3)


def _refine_tie_free(mesh: dolfinx.mesh.Mesh, option):
    """``dolfinx.mesh.refine`` whose 3D result does not depend on the partition (see ``_TIE_MAP``)."""
    x = mesh.geometry.x
    x_coarse = x.copy()
    x[:] = x_coarse @ _TIE_MAP.T
    try:
        if _tied_faces(mesh):
            raise RuntimeError("refine_uniformly: faces with tied longest edges remain after the tie-breaking map")
        fine, parent_cell, parent_facet = dolfinx.mesh.refine(mesh, option=option)
        _exact_fine_geometry(mesh, x_coarse, fine, parent_cell)
    finally:
        x[:] = x_coarse
    return fine, parent_cell, parent_facet


def _cell_facets(mesh: dolfinx.mesh.Mesh) -> np.ndarray:
    """Cell -> facet connectivity as an array (cells, facets per cell); simplex meshes."""
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim, tdim - 1)
    c2f = mesh.topology.connectivity(tdim, tdim - 1)
    return c2f.array.reshape(-1, tdim + 1)


def _input_order(fine, parent_cell: np.ndarray) -> np.ndarray:
    """For each owned fine cell, its row in ``refine``'s outputs (which follow the cells' input order)."""
    tdim = fine.topology.dim
    n = fine.topology.index_map(tdim).size_local
    offset = fine.comm.exscan(parent_cell.size) if fine.comm.size > 1 else 0
    return np.asarray(fine.topology.original_cell_index[:n], dtype=np.int64) - (offset or 0)


def _transfer_cells(tags, coarse, fine, parent_cell: np.ndarray):
    """Tags of the owned fine cells from their parents (O(local), one exscan)."""
    tdim = coarse.topology.dim
    imap = coarse.topology.index_map(tdim)
    value = np.full(imap.size_local + imap.num_ghosts, -1, dtype=np.int32)
    value[tags.indices] = tags.values
    new = value[parent_cell[_input_order(fine, parent_cell)]]
    keep = np.flatnonzero(new >= 0).astype(np.int32)
    return dolfinx.mesh.meshtags(fine, tdim, keep, new[keep])


def _transfer_facets(tags, coarse, fine, parent_cell: np.ndarray, parent_facet: np.ndarray):
    """Tags of the fine facets lying in tagged coarse facets (those of owned fine cells)."""
    tdim = coarse.topology.dim
    coarse.topology.create_entities(tdim - 1)
    fmap = coarse.topology.index_map(tdim - 1)
    value = np.full(fmap.size_local + fmap.num_ghosts, -1, dtype=np.int32)
    value[tags.indices] = tags.values
    fine.topology.create_entities(tdim - 1)
    coarse_c2f = _cell_facets(coarse)
    rows = _input_order(fine, parent_cell)
    fine_c2f = _cell_facets(fine)[: rows.size]
    pf = parent_facet.reshape(parent_cell.size, tdim + 1)[rows]
    cell, local = np.nonzero(pf >= 0)
    parent = coarse_c2f[parent_cell[rows][cell], pf[cell, local]]
    vals = value[parent]
    mark = vals >= 0
    facets, first = np.unique(fine_c2f[cell[mark], local[mark]], return_index=True)
    return dolfinx.mesh.meshtags(fine, tdim - 1, facets.astype(np.int32), vals[mark][first])


def refine_uniformly(
    mesh: dolfinx.mesh.Mesh,
    levels: int,
    cell_tags: dolfinx.mesh.MeshTags | None = None,
    facet_tags: dolfinx.mesh.MeshTags | None = None,
) -> tuple[dolfinx.mesh.Mesh, dolfinx.mesh.MeshTags | None, dolfinx.mesh.MeshTags | None]:
    """Refine ``levels`` times (every edge split: 4x the cells in 2D, 8x in 3D per level); collective.

    Refined cells stay on their parent's rank (no repartitioning), so the
    coarse partition's balance carries over; the mesh must be unghosted
    (``GhostMode.none``; the refined one gets its ghost layer).  Curved
    boundaries stay faceted as in the coarse mesh.  The refined mesh is the
    same set of cells on any number of ranks (3D: DOLFINx's longest-edge ties
    are broken by geometry, see ``_TIE_MAP``).  Tags are carried over
    for the owned cells (cell integrals and Dirichlet dofs need no more).

    Args:
        mesh: The coarse mesh.
        levels: Number of refinements (>= 0).
        cell_tags: Cell tags to carry over (optional).
        facet_tags: Facet tags to carry over (optional).

    Returns:
        ``(mesh, cell_tags, facet_tags)`` on the refined mesh.
    """
    if levels < 0:
        raise ValueError(f"refine_uniformly: levels must be >= 0, got {levels}")
    tdim = mesh.topology.dim
    for _ in range(levels):
        mesh.topology.create_entities(1)
        if facet_tags is not None:
            mesh.topology.create_connectivity(tdim - 1, tdim)
        option = dolfinx.mesh.RefinementOption.parent_cell_and_facet
        if tdim == 3:
            fine, parent_cell, parent_facet = _refine_tie_free(mesh, option)
        else:  # 2D: DOLFINx breaks ties by the cells' input vertex order, the same on any rank count
            fine, parent_cell, parent_facet = dolfinx.mesh.refine(mesh, option=option)
        # dolfinx.mesh.transfer_meshtag indexes past parent_cell (owned fine cells only) when the
        # refined mesh has ghosts, so the tags are carried over here.
        if cell_tags is not None:
            cell_tags = _transfer_cells(cell_tags, mesh, fine, parent_cell)
        if facet_tags is not None:
            facet_tags = _transfer_facets(facet_tags, mesh, fine, parent_cell, parent_facet)
        mesh = fine
    return mesh, cell_tags, facet_tags
