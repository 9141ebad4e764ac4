"""Independent serial references for rank-independence tests (not a test module).

A rank-independence test computes a value on ``COMM_WORLD`` and compares it
with a serial computation.  On one rank ``COMM_WORLD`` and ``COMM_SELF``
would build the same mesh with the same numbering, so the comparison would
compare a value with itself; the serial side is therefore built on a copy
of the mesh whose vertices and cells are randomly renumbered: a different
dof numbering, assembly order and factorisation, the same discrete problem.
"""

from __future__ import annotations

import numpy as np
import dolfinx.mesh
from mpi4py import MPI

from femnpde.app.scenarios import paper_mesh

__all__ = ["renumbered_serial_copy", "paper_mesh_pair", "MESH_PAIR_COMMS"]

#: The two sides of a comparison: the serial renumbered copy and the distributed mesh.
MESH_PAIR_COMMS = ("self", "world")


def renumbered_serial_copy(mesh: dolfinx.mesh.Mesh, seed: int = 0) -> dolfinx.mesh.Mesh:
    """The serial mesh ``mesh`` (on COMM_SELF) with vertices and cells in a random order."""
    assert mesh.comm.size == 1, "renumber a serial mesh"
    rng = np.random.default_rng(seed)
    gdim = mesh.geometry.dim
    x = mesh.geometry.x[:, :gdim]
    cells = np.asarray(mesh.geometry.dofmaps[0], dtype=np.int64)
    perm = rng.permutation(x.shape[0])  # new vertex k is old vertex perm[k]
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(perm.size)
    new_cells = inverse[cells][rng.permutation(cells.shape[0])]
    copy = dolfinx.mesh.create_mesh(MPI.COMM_SELF, new_cells, mesh.ufl_domain(), x[perm])
    # The copy really is numbered differently (else the comparison would be vacuous again).
    assert not np.array_equal(copy.geometry.x, mesh.geometry.x)
    return copy


def paper_mesh_pair(nx: int, ny: int):
    """``{"self": renumbered serial rectangle, "world": distributed rectangle}`` of the paper's domain."""
    return {
        "self": renumbered_serial_copy(paper_mesh(MPI.COMM_SELF, nx, ny)),
        "world": paper_mesh(MPI.COMM_WORLD, nx, ny),
    }
