"""Core engine: exact discrete adjoint gradients, rank independence, forward convergence."""

import numpy as np
import pytest
import ufl
import dolfinx.fem
import dolfinx.mesh
from mpi4py import MPI

from femnpde.obs.misfit import L2Misfit, TimeWeights
from femnpde.model.network import ShallowNetwork
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, heat
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from femnpde.model.verification import taylor_test
from serial_reference import paper_mesh_pair


def _reduced(problem, n_neurons=8, seed=3, weights=None, prefix="t_"):
    solver = ThetaSolver(problem, prefix)
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    data = solver.forward(gstar).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data, weights)
    net = ShallowNetwork(n_neurons, problem.mesh.geometry.dim, seed=seed)
    return ReducedFunctional(solver, NetworkSource(problem, net), misfit), net.params.copy()


def _unstructured_mesh(comm):
    gmsh = pytest.importorskip("gmsh")
    import dolfinx.io.gmsh

    gmsh.initialize()
    gmsh.option.setNumber("General.Terminal", 0)
    try:
        if comm.rank == 0:
            gmsh.model.add("plate")
            rect = gmsh.model.occ.addRectangle(0, 0, 0, 0.5, 1.0)
            hole = gmsh.model.occ.addDisk(0.25, 0.6, 0, 0.1, 0.1)
            gmsh.model.occ.cut([(2, rect)], [(2, hole)])
            gmsh.model.occ.synchronize()
            surfaces = gmsh.model.getEntities(2)
            gmsh.model.addPhysicalGroup(2, [s[1] for s in surfaces], 1)
            gmsh.option.setNumber("Mesh.MeshSizeMax", 0.12)
            gmsh.model.mesh.generate(2)
        data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=2)
    finally:
        gmsh.finalize()
    return data.mesh


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_taylor_rectangle(pde, degree, theta):
    problem = paper_problem(pde, degree=degree, theta=theta, nx=5, ny=10, n_steps=8)
    rf, theta0 = _reduced(problem, prefix=f"taylor_{pde}_{degree}_")
    dtheta = np.random.default_rng(0).standard_normal(theta0.size)
    result = taylor_test(rf, theta0, dtheta, n_steps=4)
    assert result.gradient_norm > 0
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_taylor_unstructured(pde):
    mesh = _unstructured_mesh(MPI.COMM_WORLD)
    problem = paper_problem(pde, mesh=mesh, n_steps=6, theta=0.5)
    rf, theta0 = _reduced(problem, prefix=f"taylor_unstr_{pde}_")
    dtheta = np.random.default_rng(1).standard_normal(theta0.size)
    result = taylor_test(rf, theta0, dtheta, n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates


def test_taylor_quadrature_source_and_partial_times():
    problem = paper_problem("allen-cahn", nx=5, ny=10, n_steps=12, source="quadrature")
    rf, theta0 = _reduced(problem, weights=TimeWeights("trapezoid", include_initial=False, levels=(2, 5, 9, 12)))
    result = taylor_test(rf, theta0, np.random.default_rng(2).standard_normal(theta0.size), n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates


def test_taylor_network_in_reaction_and_time_dependent_bc():
    """The network as a reaction coefficient (nonlinear in g) with a time-dependent Dirichlet value."""
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 6, 6)

    def residual(u, v, g, t, x):
        return (0.05 * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.sin(g) * u * v - (1 + t * x[0]) * v) * ufl.dx

    problem = ParabolicProblem(
        mesh,
        residual,
        time=TimeGrid(0.5, 5),
        theta=0.5,
        initial_condition=lambda x: x[0] * (1 - x[0]),
        dirichlet=[Dirichlet(lambda x: np.isclose(x[0], 0.0), lambda t: 0.1 * t)],
    )
    assert not problem.forms.jacobian_constant
    rf, theta0 = _reduced(problem, prefix="taylor_reaction_")
    result = taylor_test(rf, theta0, np.random.default_rng(3).standard_normal(theta0.size), n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_rank_independence(pde):
    """Loss and gradient on COMM_WORLD equal those of a serial solve on a renumbered mesh (1e-10 relative)."""
    out = {}
    for name, mesh in paper_mesh_pair(6, 12).items():
        problem = paper_problem(pde, mesh=mesh, n_steps=6, theta=0.5)
        rf, theta0 = _reduced(problem, n_neurons=12, prefix=f"ranks_{name}_")
        out[name] = (rf(theta0), rf.derivative())
    (J1, g1), (J2, g2) = out["self"], out["world"]
    assert abs(J1 - J2) <= 1e-10 * abs(J1)
    assert np.linalg.norm(g1 - g2) <= 1e-10 * np.linalg.norm(g1)
    # The gradient is replicated: identical on all ranks.
    g_all = MPI.COMM_WORLD.allgather(g2)
    assert all(np.array_equal(g_all[0], g) for g in g_all)


def test_allen_cahn_jacobian_is_not_constant():
    problem = paper_problem("allen-cahn", nx=4, ny=8, n_steps=3)
    assert not problem.forms.jacobian_constant and not problem.forms.affine


def _manufactured_error(degree, n_cells, n_steps, theta, T=0.5, gamma=1.0):
    """L2 error at T for u = sin(πx) sin(πy) (1 + t) on the unit square.

    u is linear in t, so the theta scheme has no time truncation error: the
    error is the spatial one, O(h^(p+1)), with any number of steps.
    """
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, n_cells, n_cells)

    def exact(t, x):
        return np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) * (1 + t)

    def source(t, x):  # g = u_t − γ Δu, x of shape (3, npts)
        s = np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])
        return s * (1 + gamma * 2 * np.pi**2 * (1 + t))

    problem = ParabolicProblem(
        mesh,
        heat(gamma),
        degree=degree,
        time=TimeGrid(T, n_steps),
        theta=theta,
        initial_condition=lambda x: exact(0.0, x),
        dirichlet=[Dirichlet("boundary", 0.0)],
    )
    solver = ThetaSolver(problem, f"mms_{degree}_")
    states = solver.forward(FunctionSource(problem, source).values())
    W = dolfinx.fem.functionspace(mesh, ("Lagrange", degree + 3))
    ue = dolfinx.fem.Function(W)
    ue.interpolate(lambda x: exact(T, x))
    uh = dolfinx.fem.Function(problem.V)
    uh.x.array[:] = states.load(n_steps)
    err = dolfinx.fem.assemble_scalar(dolfinx.fem.form((uh - ue) ** 2 * ufl.dx(metadata={"quadrature_degree": 10})))
    return np.sqrt(comm.allreduce(err, op=MPI.SUM))


@pytest.mark.parametrize("degree", [1, 2])
def test_spatial_convergence(degree):
    errors = [_manufactured_error(degree, n, n_steps=2, theta=0.5, T=0.2) for n in (4, 8, 16)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > degree + 1 - 0.25) and np.all(rates < degree + 1 + 0.5), rates


# Temporal orders (BE 1, CN 2) are checked on manufactured Allen-Cahn solutions in test_manufactured.py.
