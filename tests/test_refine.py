"""Uniform mesh refinement keeps cell and facet tags (any rank count)."""

from pathlib import Path

import dolfinx.fem
import dolfinx.mesh
import numpy as np
import pytest
import ufl
from mpi4py import MPI

from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, heat
from femnpde.io.meshes import read_mesh
from femnpde.io.refine import refine_uniformly
from conftest import network_fit

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


def _longest_edges(mesh):
    """Sorted longest edge of every cell of ``mesh`` (all ranks), a rank-count-independent invariant."""
    tdim = mesh.topology.dim
    n = mesh.topology.index_map(tdim).size_local
    x = mesh.geometry.x[mesh.geometry.dofmaps[0][:n]]
    i, j = np.triu_indices(tdim + 1, 1)
    local = np.linalg.norm(x[:, i] - x[:, j], axis=2).max(axis=1)
    return np.sort(np.concatenate(mesh.comm.allgather(local)))


def _h4(mesh):
    """The integral of h^4 (h the cell diameter) over ``mesh``."""
    h = ufl.CellDiameter(mesh)
    return mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(h**4 * ufl.dx(domain=mesh))), op=MPI.SUM)


def _loss(mesh, facets, prefix):
    """The heat scenario's L2 loss of a 6-neuron network on ``mesh`` (4 backward-Euler steps, LU)."""
    problem = ParabolicProblem(mesh, heat(0.01), time=TimeGrid(1.0, 4), initial_condition=lambda x: 0.0 * x[0],
                               dirichlet=[Dirichlet((facets, 1), 0.0)])
    rf, theta = network_fit(problem, lambda t, x: 2.0 * np.exp(-10 * ((x[0] - t) ** 2 + (x[1] - 0.5) ** 2)), prefix)
    loss = rf(theta)
    rf.solver.destroy()
    return loss


@pytest.mark.parametrize("name,gdim,levels", [("box_cavity", 3, 1), ("annulus_holes", 2, 1), ("l_shape", 2, 2)])
def test_refined_mesh_is_the_serial_one(name, gdim, levels):
    """The refined mesh (longest edges, integral of h^4, a loss) is the one refined on a single rank.

    DOLFINx breaks ties between equally long face edges of a tetrahedron by the partition's global
    vertex numbers; refine_uniformly breaks them by geometry (box_cavity has 56 tied faces).
    """
    refined = {}
    for comm in {MPI.COMM_SELF.size: MPI.COMM_SELF, MPI.COMM_WORLD.size: MPI.COMM_WORLD}.values():
        coarse = read_mesh(MESHES / f"{name}.xdmf", comm, gdim=gdim, ghost_mode=dolfinx.mesh.GhostMode.none)
        refined[comm.size] = refine_uniformly(coarse.mesh, levels, None, coarse.facet_tags)
    serial, parallel = refined[1], refined[MPI.COMM_WORLD.size]
    assert np.array_equal(_longest_edges(parallel[0]), _longest_edges(serial[0]))
    assert np.isclose(_h4(parallel[0]), _h4(serial[0]), rtol=1e-13, atol=0)
    if gdim == 3:
        loss = [_loss(m, f, f"refine_{name}_{m.comm.size}_") for m, _, f in (serial, parallel)]
        assert np.isclose(loss[1], loss[0], rtol=1e-12, atol=0), loss
