"""Uniform refinement of a tagged mesh, keeping its cell and facet tags."""

from __future__ import annotations

import dolfinx.mesh

__all__ = ["refine_uniformly"]


def refine_uniformly(
    mesh: dolfinx.mesh.Mesh,
    levels: int,
    cell_tags: dolfinx.mesh.MeshTags | None = None,
    facet_tags: dolfinx.mesh.MeshTags | None = None,
) -> tuple[dolfinx.mesh.Mesh, dolfinx.mesh.MeshTags | None, dolfinx.mesh.MeshTags | None]:
    """Refine ``levels`` times (every edge split: 4x the cells in 2D, 8x in 3D per level); collective.

    Refined cells stay on their parent's rank (no repartitioning), so the
    coarse partition's balance carries over.  Curved boundaries stay
    faceted as in the coarse mesh.

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
        fine, parent_cell, parent_facet = dolfinx.mesh.refine(
            mesh, option=dolfinx.mesh.RefinementOption.parent_cell_and_facet
        )
        if cell_tags is not None:
            cell_tags = dolfinx.mesh.transfer_meshtag(cell_tags, fine, parent_cell)
        if facet_tags is not None:
            fine.topology.create_entities(tdim - 1)
            facet_tags = dolfinx.mesh.transfer_meshtag(facet_tags, fine, parent_cell, parent_facet)
        mesh = fine
    return mesh, cell_tags, facet_tags
