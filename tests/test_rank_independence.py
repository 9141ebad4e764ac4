"""Loss and gradient on COMM_WORLD equal an independent serial computation (1e-10 relative).

The serial side runs on COMM_SELF on a renumbered copy of the mesh
(:mod:`serial_reference`), so the comparison is not vacuous on one rank; on
two ranks it compares the distributed solve with the serial one.  Covered:
P2, quadrature sources, Crank–Nicolson with time-dependent Dirichlet data,
a subdomain loss, and a sensor on a vertex that both ranks' owned cells
contain (the lowest rank owns its row).
"""

from __future__ import annotations

import numpy as np
import pytest
import dolfinx.mesh
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, allen_cahn
from femnpde.fem.solver import ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import L2Misfit, TimeWeights
from femnpde.obs.points import PointMisfit, synthetic_point_data
from serial_reference import paper_mesh_pair


def _field_misfit(problem, states, subdomain=False):
    data = states.to_array()[:, : problem.n_owned].copy()
    if not subdomain:
        return L2Misfit(problem, data, TimeWeights("trapezoid"))
    mesh = problem.mesh
    tdim = mesh.topology.dim
    imap = mesh.topology.index_map(tdim)
    cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)
    tags = dolfinx.mesh.meshtags(mesh, tdim, cells, np.where(mid[:, 1] > 0.4, 2, 1).astype(np.int32))
    return L2Misfit(problem, data, subdomain=(tags, 2))


def _compare(make_problem, make_misfit=_field_misfit, nx=6, ny=12, label="r"):
    """Loss, gradient and relative max error on both sides of the mesh pair."""
    out = {}
    for name, mesh in paper_mesh_pair(nx, ny).items():
        problem = make_problem(mesh)
        solver = ThetaSolver(problem, f"{label}_{name}_")
        gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
        misfit = make_misfit(problem, solver.forward(gstar))
        net = ShallowNetwork(9, 2, seed=5)
        rf = ReducedFunctional(solver, NetworkSource(problem, net), misfit)
        theta = net.params + 0.2 * np.random.default_rng(2).standard_normal(net.n_params)
        J, grad = rf.value_and_gradient(theta)
        out[name] = (J, grad, misfit.relative_max_error(rf.states))
        solver.destroy()
        misfit.destroy()
    (J1, g1, e1), (J2, g2, e2) = out["self"], out["world"]
    assert J1 > 0 and np.linalg.norm(g1) > 0
    assert abs(J1 - J2) <= 1e-10 * J1, (J1, J2)
    assert np.linalg.norm(g1 - g2) <= 1e-10 * np.linalg.norm(g1)
    assert abs(e1 - e2) <= 1e-10 * e1
    assert all(np.array_equal(g_all, g2) for g_all in MPI.COMM_WORLD.allgather(g2))  # replicated
    return out


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_p2(pde):
    _compare(lambda mesh: paper_problem(pde, mesh=mesh, degree=2, n_steps=4, theta=0.5), nx=3, ny=6, label=f"p2{pde}")


def test_quadrature_source():
    _compare(lambda mesh: paper_problem("allen-cahn", mesh=mesh, n_steps=12, source="quadrature"), label="quad")


def test_crank_nicolson_time_dependent_dirichlet():
    def make(mesh):
        return ParabolicProblem(
            mesh,
            allen_cahn(0.01, 0.5),
            time=TimeGrid(1.0, 6),
            theta=0.5,
            initial_condition=lambda x: 0.1 * x[1],
            dirichlet=[
                Dirichlet(lambda x: np.isclose(x[1], 0.0), lambda t, x: 0.2 * np.sin(3 * t) * (1 + x[0])),
                Dirichlet(lambda x: np.isclose(x[1], 1.0), lambda t: 0.1 + 0.3 * t),
            ],
        )

    _compare(make, label="cn_bc")


def test_subdomain_loss():
    _compare(
        lambda mesh: paper_problem("heat", mesh=mesh, n_steps=5, theta=0.5),
        lambda problem, states: _field_misfit(problem, states, subdomain=True),
        label="sub",
    )


def _shared_vertex(nx, ny):
    """An interior vertex that both ranks' owned cells contain (on 1 rank: any interior vertex)."""
    mesh = paper_mesh_pair(nx, ny)["world"]
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local
    mine = {tuple(np.round(p, 12)) for p in mesh.geometry.x[np.asarray(mesh.geometry.dofmaps[0])[:n_cells].ravel(), :2]}
    common = set.intersection(*MPI.COMM_WORLD.allgather(mine))
    interior = sorted(p for p in common if 0 < p[0] < 0.5 and 0 < p[1] < 1)
    assert interior, "no interior vertex shared by all ranks"
    return np.array(interior[len(interior) // 2])


def test_sensor_on_a_vertex_both_ranks_own():
    vertex = _shared_vertex(6, 12)
    points = np.array([vertex, [0.13, 0.27], [0.4, 0.8]])
    seen = {}

    def misfit(problem, states):
        m = PointMisfit(problem, points, synthetic_point_data(problem, states, points))
        seen[problem.comm.size] = m
        # The lowest rank whose owned cells contain the vertex owns its row.
        assert m.owner[0] == 0
        assert (0 in m.local_sensors) == (problem.comm.rank == 0 or problem.comm.size == 1)
        counts = problem.comm.allreduce(m.local_sensors.size)
        assert counts == len(points)  # each sensor counted once
        return m

    _compare(lambda mesh: paper_problem("heat", mesh=mesh, n_steps=4), misfit, label="vertex")
