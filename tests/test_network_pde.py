"""Models in the PDE: MLP, JAX MLP, two network-fed coefficients, trainable constants.

Taylor rates and central finite differences (best relative error <= 1e-8)
on every rank count; losses and gradients on COMM_WORLD equal those of a
serial solve on each rank to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import ufl
from mpi4py import MPI

from femnpde.app.scenarios import paper_initial_condition, paper_mesh, target_source
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, allen_cahn, heat
from femnpde.fem.solver import ThetaSolver
from femnpde.model.mlp import MLP
from femnpde.model.network import ShallowNetwork
from femnpde.model.parameters import PhysicalParameter
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.model.verification import taylor_test
from femnpde.obs.misfit import L2Misfit


def _fd_best(rf, theta, v, steps=(1e-4, 1e-5, 1e-6)):
    """Best relative error of central differences against the adjoint directional derivative."""
    exact = float(rf.derivative(theta) @ v)
    errs = [abs((rf(theta + h * v) - rf(theta - h * v)) / (2 * h) - exact) / abs(exact) for h in steps]
    return min(errs)


def _heat_gamma(u, v, g, t, x, gamma):
    return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx


def _allen_cahn_eps(u, v, g, t, x, epsilon):
    return (0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + epsilon**-2 * (u**3 - u) * v * ufl.dx
            - g * v * ufl.dx)


def _two_coefficients(u, v, g, t, x):
    """A source g[0] and a space-time diffusion factor 0.01 (1 + g[1]^2)."""
    return 0.01 * (1 + g[1] ** 2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g[0] * v * ufl.dx


def two_coefficients_factory():
    """``pde.residual = "tests.test_network_pde:two_coefficients_factory"`` in a configuration."""
    return _two_coefficients


def _problem(comm, residual, n_sources=1, constants=None, theta=1.0, source="lagrange"):
    return ParabolicProblem(
        paper_mesh(comm, 4, 8), residual, time=TimeGrid(1.0, 6), theta=theta,
        initial_condition=paper_initial_condition, dirichlet=[Dirichlet("boundary", 0.0)],
        n_sources=n_sources, constants=constants, source=source,
    )


def _data(problem, prefix, constants=None):
    """Synthetic data of the target source (with the constants' true values)."""
    solver = ThetaSolver(problem, prefix + "data_")
    if constants:
        solver.set_constants(constants)
    gstar = FunctionSource(problem, target_source("difficult", 1.0)).values()
    if problem.n_sources > 1:
        gstar = np.stack([gstar, 0.5 * gstar], axis=-1).reshape(gstar.shape[0], -1)
    data = solver.forward(gstar).array[:, : problem.n_owned].copy()
    solver.destroy()
    return data


def _case(name, comm):
    """(rf, θ0) of a named case on ``comm``."""
    prefix = f"netpde_{name}_{comm.size}_{comm.rank if comm.size == 1 else 'w'}_"
    params = ()
    if name == "mlp":
        problem = _problem(comm, heat(0.01))
        model = MLP(2, [6, 5], activation="tanh", init="paper", output_scale="mean-field", seed=2)
    elif name == "jax":
        pytest.importorskip("jax")
        from femnpde.model.jax_model import JaxModel, mlp_factory

        problem = _problem(comm, allen_cahn(0.01, 0.32), theta=0.5)
        model = JaxModel(*mlp_factory(2, 1, seed=1, hidden=(6, 6)), 2)
    elif name in ("two", "two_quadrature"):
        problem = _problem(comm, _two_coefficients, n_sources=2, source="quadrature" if "quad" in name else "lagrange")
        model = MLP(2, [8], n_outputs=2, seed=4)
    elif name == "gamma":
        problem = _problem(comm, _heat_gamma, constants={"gamma": 0.02}, theta=0.5)
        model = ShallowNetwork(6, 2, seed=3)
        params = (PhysicalParameter("gamma", 0.02, bounds=(1e-4, 1.0)),)
    elif name == "epsilon":
        problem = _problem(comm, _allen_cahn_eps, constants={"epsilon": 0.5})
        model = ShallowNetwork(6, 2, seed=3)
        params = (PhysicalParameter("epsilon", 0.5),)
    else:  # pragma: no cover
        raise ValueError(name)
    truth = {"gamma": 0.01, "epsilon": 0.45} if params else None  # dt = 1/6 < epsilon^2: one solution per step
    data = _data(problem, prefix, {p.name: truth[p.name] for p in params} if params else None)
    solver = ThetaSolver(problem, prefix)
    rf = ReducedFunctional(solver, NetworkSource(problem, model), L2Misfit(problem, data), parameters=params)
    return rf, rf.initial_theta()


CASES = ["mlp", "jax", "two", "two_quadrature", "gamma", "epsilon"]


@pytest.mark.parametrize("name", CASES)
def test_taylor_and_finite_differences(name):
    rf, theta0 = _case(name, MPI.COMM_WORLD)
    v = np.random.default_rng(7).standard_normal(theta0.size)
    result = taylor_test(rf, theta0, v, h0=1e-2, n_steps=4)
    assert result.gradient_norm > 0
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    assert _fd_best(rf, theta0, v) <= 1e-8
    if rf.trainable_parameters:  # the constant's own derivative, alone
        e = np.zeros_like(theta0)
        e[-1] = 1.0
        assert _fd_best(rf, theta0, e) <= 1e-8
    rf.solver.destroy()


@pytest.mark.parametrize("name", CASES)
def test_ranks_agree(name):
    out = {}
    for key, comm in (("self", MPI.COMM_SELF), ("world", MPI.COMM_WORLD)):
        rf, theta0 = _case(name, comm)
        theta = theta0 + 0.05 * np.random.default_rng(1).standard_normal(theta0.size) * (np.abs(theta0) + 0.1)
        out[key] = rf.value_and_gradient(theta)
        rf.solver.destroy()
    (J1, g1), (J2, g2) = out["self"], out["world"]
    assert abs(J1 - J2) <= 1e-10 * abs(J1)
    assert np.linalg.norm(g1 - g2) <= 1e-10 * np.linalg.norm(g1)


def test_changing_a_constant_rebuilds_the_assembled_matrices():
    """Heat (mat-vec fast path, factorised Jacobian): the loss at γ equals that of a problem built with γ."""
    comm = MPI.COMM_WORLD
    rf, theta0 = _case("gamma", comm)
    assert rf.solver.uses_linear_fast_path
    J_first = rf(theta0)
    theta = theta0.copy()
    theta[-1] = 0.05 / 0.02  # gamma = 0.05
    J_new = rf(theta)
    problem = _problem(comm, heat(0.05), theta=0.5)
    ref = ReducedFunctional(ThetaSolver(problem, "netpde_ref_"), NetworkSource(problem, ShallowNetwork(6, 2, seed=3)),
                            L2Misfit(problem, rf.misfit.data))
    J_ref = ref(theta0[:-1])
    assert J_first != J_new
    assert abs(J_new - J_ref) <= 1e-12 * abs(J_ref)
    ref.solver.destroy()
    rf.solver.destroy()


def test_bounds_and_bad_parameters():
    rf, theta0 = _case("gamma", MPI.COMM_WORLD)
    lo, hi = rf.bounds
    # θ holds gamma / |initial|: the bounds are scaled alike.
    assert lo.shape == theta0.shape and np.all(np.isinf(lo[:-1])) and lo[-1] == 1e-4 / 0.02 and hi[-1] == 1.0 / 0.02
    assert rf.trainable_parameters == ("gamma",) and theta0[-1] == 1.0
    assert rf.split(theta0)[1] == {"gamma": 0.02}
    with pytest.raises(ValueError, match="not constants of the problem"):
        ReducedFunctional(rf.solver, rf.source, rf.misfit, parameters=[PhysicalParameter("beta", 1.0)])
    with pytest.raises(ValueError, match="outside the bounds"):
        PhysicalParameter("gamma", 2.0, bounds=(0.0, 1.0))
    problem = rf.solver.problem
    with pytest.raises(ValueError, match="output"):
        NetworkSource(problem, MLP(2, [3], n_outputs=2))
    rf.solver.destroy()


def test_gamma_recovery_short():
    """L-BFGS-B learns the source (a tanh the network can represent) and recovers gamma = 0.01 from 0.02."""
    from femnpde.optim.optimizers import minimize_lbfgs

    comm = MPI.COMM_WORLD
    problem = ParabolicProblem(
        paper_mesh(comm, 6, 12), _heat_gamma, time=TimeGrid(1.0, 16), initial_condition=paper_initial_condition,
        dirichlet=[Dirichlet("boundary", 0.0)], constants={"gamma": 0.01},
    )
    solver = ThetaSolver(problem, "netpde_recovery_")
    data = solver.forward(FunctionSource(problem, target_source("tanh_1", 1.0)).values()).array[:, : problem.n_owned]
    rf = ReducedFunctional(solver, NetworkSource(problem, ShallowNetwork(10, 2, seed=1)), L2Misfit(problem, data.copy()),
                           parameters=[PhysicalParameter("gamma", 0.02, bounds=(1e-4, 1.0))])
    J0 = rf(rf.initial_theta())
    result = minimize_lbfgs(rf.value_and_gradient, rf.initial_theta(), 400, bounds=rf.bounds)
    gamma = rf.split(result.params)[1]["gamma"]
    assert rf(result.params) < 1e-5 * J0
    assert abs(gamma - 0.01) <= 5e-3 * 0.01, gamma
    solver.destroy()
