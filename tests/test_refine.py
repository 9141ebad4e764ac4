"""Uniform mesh refinement keeps cell and facet tags (any rank count)."""

from pathlib import Path

import dolfinx.fem
import dolfinx.mesh
import numpy as np
import pytest
import ufl
from mpi4py import MPI

from femnpde.io.meshes import read_mesh
from femnpde.io.refine import refine_uniformly

MESHES = Path(__file__).resolve().parent.parent / "meshes"


def _measures(mesh, cells, facets):
    comm = mesh.comm
    dx = ufl.Measure("dx", domain=mesh, subdomain_data=cells)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=facets)
    one = dolfinx.fem.Constant(mesh, 1.0)
    vals = [dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * m)) for m in (dx(1), dx(2), ds(1), ds(2))]
    return [comm.allreduce(v, op=MPI.SUM) for v in vals]


@pytest.mark.parametrize("name,gdim", [("box_cavity", 3), ("annulus_holes", 2)])
def test_refinement_keeps_tagged_measures(name, gdim):
    coarse = read_mesh(MESHES / f"{name}.xdmf", MPI.COMM_WORLD, gdim=gdim, ghost_mode=dolfinx.mesh.GhostMode.none)
    before = _measures(coarse.mesh, coarse.cell_tags, coarse.facet_tags)
    fine, cells, facets = refine_uniformly(coarse.mesh, 1, coarse.cell_tags, coarse.facet_tags)
    after = _measures(fine, cells, facets)
    assert all(b > 0 for b in before)
    assert np.allclose(after, before, rtol=1e-12), (before, after)
    tdim = fine.topology.dim
    n_coarse = coarse.mesh.topology.index_map(tdim).size_global
    assert fine.topology.index_map(tdim).size_global == 2**tdim * n_coarse
