"""Exact gradients for residuals outside the presets: FD agreement to 1e-8 relative.

Residuals non-polynomial in the source g and in the state u (exp, sin,
rational), P1 and P2, a 2D unstructured mesh from ``meshes/`` and a 3D box,
backward Euler and Crank–Nicolson, Robin terms on tagged facets and
interior-facet terms.  On main before quadrature pinning the adjoint
differentiated a different quadrature of the residual than the forward
solved, and these cases were off by 1e-8 … 1e-5 while the Taylor rates
stayed at 2.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
import pytest
import ufl
import dolfinx.fem
import dolfinx.mesh
from mpi4py import MPI

from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid
from femnpde.fem.solver import ThetaSolver
from femnpde.io.meshes import read_mesh
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.model.verification import finite_difference_check, taylor_test
from femnpde.obs.misfit import L2Misfit
from conftest import write_on_root

MESHES = pathlib.Path(__file__).resolve().parents[1] / "meshes"

#: FD agreement required here: the target of issue 9 (measured 2e-11 … 2e-10).
FD_REQUIRED = 1e-9


@dataclass(frozen=True)
class Case:
    """A residual on a mesh: ``residual(mesh, facet_tags) -> residual(u, v, g, t, x)``."""

    residual: Callable
    mesh: str  # "box3d", "lshape", "square"
    degree: int = 1
    theta: float = 1.0
    source: str = "lagrange"
    n_steps: int = 4
    amplitude: float = 0.2  # of the initial condition


def _exp8g(mesh, tags):
    def residual(u, v, g, t, x):
        return (
            0.02 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            + 0.5 * u**3 * v * ufl.dx
            - ufl.exp(8 * g) * u * v * ufl.dx
            - v * ufl.dx
        )

    return residual


def _expu_diffusion(mesh, tags):
    def residual(u, v, g, t, x):
        return 0.02 * ufl.exp(2 * u) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx

    return residual


def _sin_source(mesh, tags):
    def residual(u, v, g, t, x):
        return 0.02 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - ufl.sin(8 * g + 1) * (1 + u) * v * ufl.dx

    return residual


def _rational_robin(mesh, tags):
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=tags)

    def residual(u, v, g, t, x):
        return (
            0.02 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            + u / (1 + u**2) * v * ufl.dx
            - g * v * ufl.dx
            + 2.0 / (1 + g**2) * u * v * ds(1)  # Robin, coefficient non-polynomial in g
            - ufl.exp(g) * v * ds(2)  # flux through the re-entrant edges
        )

    return residual


def _interior_facets(mesh, tags):
    def residual(u, v, g, t, x):
        return (
            0.05 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            - ufl.exp(2 * g) * v * ufl.dx
            + ufl.avg(ufl.exp(4 * g)) * ufl.avg(u) * ufl.avg(v) * ufl.dS
            + ufl.sin(3 * u) * v * ufl.ds
        )

    return residual


def _user_degree(mesh, tags):
    def residual(u, v, g, t, x):
        return (
            0.02 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            - ufl.exp(4 * g) * u * v * ufl.dx(degree=3)
            - v * ufl.dx
        )

    return residual


CASES = {
    "exp(8g)uv, 3D box, P1, BE": Case(_exp8g, "box3d"),
    "exp(8g)uv, 3D box, P1, quadrature source": Case(_exp8g, "box3d", source="quadrature"),
    "exp(2u) diffusion, 3D box, P1, CN": Case(_expu_diffusion, "box3d", theta=0.5, amplitude=1.0),
    "sin(8g+1)(1+u)v, square, P2, CN": Case(_sin_source, "square", degree=2, theta=0.5),
    "rational u + Robin 2/(1+g^2), L-shape, P1, CN": Case(_rational_robin, "lshape", theta=0.5),
    "exp(2u) diffusion, 3D box, P2, CN": Case(_expu_diffusion, "box3d", degree=2, theta=0.5, n_steps=3, amplitude=1.0),
    "dS avg(exp 4g) + sin(3u) ds, square, P2, BE": Case(_interior_facets, "square", degree=2, amplitude=1.0),
    "exp(4g)uv dx(degree=3), square, P1, CN": Case(_user_degree, "square", theta=0.5),
}


def _mesh(kind: str, comm):
    if kind == "box3d":
        mesh = dolfinx.mesh.create_unit_cube(comm, 3, 3, 3)
        return mesh, None
    if kind == "square":
        return dolfinx.mesh.create_unit_square(comm, 3, 3), None
    if kind == "lshape":
        data = read_mesh(MESHES / "l_shape", comm)
        return data.mesh, data.facet_tags
    raise ValueError(kind)


def build_case(case: Case, comm=MPI.COMM_WORLD, n_neurons: int = 5, prefix: str = "exact_"):
    """The reduced functional of ``case`` and its initial θ."""
    mesh, tags = _mesh(case.mesh, comm)
    dirichlet = [] if case.mesh == "lshape" else [Dirichlet("boundary", 0.0)]
    if case.residual is _interior_facets:
        dirichlet = []
    problem = ParabolicProblem(
        mesh,
        case.residual(mesh, tags),
        degree=case.degree,
        time=TimeGrid(0.4, case.n_steps),
        theta=case.theta,
        initial_condition=lambda x: case.amplitude * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]),
        dirichlet=dirichlet,
        source=case.source,
    )
    solver = ThetaSolver(problem, prefix)
    gstar = FunctionSource(problem, lambda t, x: 0.1 * np.sin(3 * x[0]) * (1 + t)).values()
    data = solver.forward(gstar).array[:, : problem.n_owned].copy()
    net = ShallowNetwork(n_neurons, mesh.geometry.dim, seed=7)
    rf = ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data))
    return rf, net.params.copy()


@pytest.mark.parametrize("name", list(CASES))
def test_fd_agreement(name):
    rf, theta0 = build_case(CASES[name], prefix=f"exact_{abs(hash(name)) % 10**6}_")
    result = finite_difference_check(rf, theta0, steps=(1e-3, 1e-4, 1e-5), n_directions=1, seed=1)
    rf.solver.destroy()
    rf.misfit.destroy()
    assert np.all(np.abs(result.adjoint) > 0)
    assert result.worst <= FD_REQUIRED, (name, result.best, result.errors)


def test_pinned_degrees():
    """F's integrals carry the degree estimated for F itself; a user's degree is kept."""
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)

    def residual(u, v, g, t, x):
        return ufl.exp(g) * u * v * ufl.dx + ufl.sin(3 * u) * v * ufl.ds(degree=7)

    problem = ParabolicProblem(mesh, residual, time=TimeGrid(1.0, 2))
    degrees = {itg.integral_type(): itg.metadata()["quadrature_degree"] for itg in problem.F_ufl.integrals()}
    # dx: the mass term (degree 2) and exp(g) u v (P1 g: 1 + 2, times u v: 5) share one rule.
    assert degrees == {"cell": 5, "exterior_facet": 7}
    dFdg = ufl.algorithms.expand_derivatives(ufl.derivative(problem.F_ufl, problem.g, ufl.TrialFunction(problem.G)))
    assert {itg.metadata()["quadrature_degree"] for itg in dFdg.integrals()} == {5}


def test_rank_independence_nonpolynomial():
    """Loss and gradient of a non-polynomial residual agree on 1 rank and on all ranks."""
    out = {}
    for name, comm in (("self", MPI.COMM_SELF), ("world", MPI.COMM_WORLD)):
        rf, theta0 = build_case(CASES["rational u + Robin 2/(1+g^2), L-shape, P1, CN"], comm, prefix=f"exact_r{name}_")
        out[name] = rf.value_and_gradient(theta0)
        rf.solver.destroy()
        rf.misfit.destroy()
    (J1, g1), (J2, g2) = out["self"], out["world"]
    assert abs(J1 - J2) <= 1e-12 * abs(J1)
    assert np.linalg.norm(g1 - g2) <= 1e-11 * np.linalg.norm(g1)


def test_taylor_and_fd_restore_parameters():
    """taylor_test and finite_difference_check leave net.params (and later evaluations) at θ."""
    rf, theta0 = build_case(Case(_sin_source, "square"), prefix="exact_restore_")
    J0, g0 = rf.value_and_gradient(theta0)
    d = np.random.default_rng(0).standard_normal(theta0.size)
    taylor_test(rf, rf.network.params, d, n_steps=2)
    assert np.array_equal(rf.network.params, theta0)
    finite_difference_check(rf, rf.network.params, d, steps=(1e-3,))
    assert np.array_equal(rf.network.params, theta0)
    J1, g1 = rf.value_and_gradient(rf.network.params)
    # The solver reuses factorisations across evaluations (a lagged Newton
    # matrix as preconditioner), so a repeated evaluation agrees to round-off,
    # not bitwise; the parameters themselves are restored bitwise (above).
    assert abs(J1 - J0) <= 1e-14 * abs(J0)
    assert np.linalg.norm(g1 - g0) <= 1e-13 * np.linalg.norm(g0)
    # rf(θ) sets the network's parameters to θ (documented).
    rf(theta0 + 0.01 * d)
    assert np.array_equal(rf.network.params, theta0 + 0.01 * d)
    rf.solver.destroy()
    rf.misfit.destroy()


def test_fd_result_api():
    """FDResult shapes, worst/passed, and identical default directions on every rank."""
    rf, theta0 = build_case(Case(_sin_source, "square"), prefix="exact_api_")
    steps = (1e-2, 1e-5)
    res = finite_difference_check(rf, theta0, steps=steps, n_directions=2, seed=3)
    rf.solver.destroy()
    rf.misfit.destroy()
    assert res.steps.shape == (2,) and res.adjoint.shape == (2,)
    assert res.fd.shape == (2, 2) and res.errors.shape == (2, 2) and res.best.shape == (2,)
    assert res.worst == res.best.max() and res.passed()
    assert not res.passed(tol=0.0) or res.worst == 0.0
    all_adj = MPI.COMM_WORLD.allgather(res.adjoint)
    assert all(np.array_equal(all_adj[0], a) for a in all_adj)
    with pytest.raises(ValueError, match="directions"):
        finite_difference_check(rf, theta0, np.ones(3))


def exp8g_residual(gamma: float = 0.02):
    """A residual factory for configurations: ``γ∇u·∇v + u³v/2 − exp(8g) u v − v``."""
    return _exp8g(None, None)


GRADCHECK_CONFIG = """
[mesh]
kind = "box"
upper = [1.0, 1.0, 1.0]
cells = [3, 3, 3]
[pde]
residual = "test_exact_gradients:exp8g_residual"
[time]
T = 0.4
n_steps = 4
[initial_condition]
kind = "constant"
value = 0.0
[network]
neurons = 5
[data]
target = "moving_gaussian"
[run]
iterations = 1
"""


def test_gradcheck_config_sees_quadrature_mismatch(shared_tmp_path, monkeypatch, capsys):
    """`femnpde gradcheck CONFIG`: passes with pinned quadrature; with the residual's derivative forms
    estimated separately (main before issue 9) the Taylor rates still pass but the FD check fails."""
    from femnpde.app.cli import main
    import femnpde.fem.problem as problem_module

    cfg = write_on_root(shared_tmp_path / "exp8g.toml", GRADCHECK_CONFIG)
    args = ["gradcheck", str(cfg), "--taylor-steps", "3"]
    assert main(args) == 0
    monkeypatch.setattr(problem_module, "pin_quadrature_degrees", lambda form: form)
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert "finite-difference agreement" in out and "Taylor rate" not in out, out


def test_gradcheck_fails_on_perturbed_gradient(monkeypatch, capsys):
    """A gradient biased by 1e-5 (one derivative scaled) passes the Taylor rates but fails gradcheck."""
    from femnpde.app.cli import main

    args = ["gradcheck", "--pde", "allen-cahn", "--N", "5", "--nx", "4", "--ny", "8", "--steps", "8",
            "--taylor-steps", "5"]
    assert main(args) == 0
    original = NetworkSource.vjp
    monkeypatch.setattr(NetworkSource, "vjp", lambda self, R: original(self, R * (1 + 1e-5)))
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert "finite-difference agreement" in out and "Taylor rate" not in out, out
    monkeypatch.setattr(NetworkSource, "vjp", lambda self, R: 0.0 * original(self, R))
    assert main(args) == 1
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert "the gradient is zero" in out, out
    assert main([*args, "--fd-tol", "-1"]) == 2


@pytest.mark.skipif(MPI.COMM_WORLD.size == 1, reason="ranks can only drift apart on more than one rank")
def test_rank_dependent_theta_is_an_error():
    """θ that differs between ranks (a drifted optimiser) stops with a clear error on every rank."""
    from femnpde.fem.solver import SolverError

    rf, theta0 = build_case(Case(_sin_source, "square"), prefix="exact_drift_")
    rf(theta0)
    drifted = theta0.copy()
    drifted[0] += 1e-14 * (MPI.COMM_WORLD.rank + 1)  # no rank hits the cache of θ0
    with pytest.raises(SolverError, match="differs between the MPI ranks"):
        rf(drifted)
    rf.solver.destroy()
    rf.misfit.destroy()
