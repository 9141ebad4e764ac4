# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: light
# ---

# # The network as a coefficient inside the nonlinear term
#
# The network g_θ need not be a source: it may appear anywhere in the
# residual.  Here it is the **coefficient of a cubic reaction**, so the PDE is
# nonlinear in u and the loss depends on θ through the product g_θ u³:
#
# $$
# \partial_t u - \gamma \Delta u + g_\theta(t, x)\, u^3 = f \quad \text{in } (0, 1)^2, \qquad
# u = 0 \text{ on } \partial\Omega, \qquad u(0) = 0,
# $$
#
# with γ = 0.02 and f = 4.  The data are the full-field solution for the
# coefficient g*(t, x) = 20 (1 + x) (1 + t).  The demo shows
#
# - a residual in which `g` multiplies a nonlinear function of `u`,
# - a Taylor test of the exact discrete gradient (`taylor_test`: the
#   remainder falls like h², rate 2),
# - training with SciPy's L-BFGS-B.
#
# ```bash
# scripts/env-run python3 demos/demo_network_coefficient.py
# scripts/env-run mpirun -n 2 python3 demos/demo_network_coefficient.py
# ```

# +
import sys

import numpy as np
import scipy.optimize
import ufl
from mpi4py import MPI

import dolfinx.mesh
from femnpde import (
    Dirichlet,
    FunctionSource,
    L2Misfit,
    NetworkSource,
    ParabolicProblem,
    ReducedFunctional,
    ShallowNetwork,
    ThetaSolver,
    TimeGrid,
    taylor_test,
)

quick = "--quick" in sys.argv
comm = MPI.COMM_WORLD
n, n_steps, neurons, iterations = (8, 8, 10, 3) if quick else (24, 32, 40, 60)
# -

# ## The problem
#
# `g` is the network's value at the dofs of a P1 space for every time level;
# Newton solves each step (the Jacobian contains 3 g u²).

# +
mesh = dolfinx.mesh.create_unit_square(comm, n, n)
gamma, f = 0.02, 4.0


def residual(u, v, g, t, x):
    return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + (g * u**3 - f) * v * ufl.dx


problem = ParabolicProblem(
    mesh, residual, degree=1, time=TimeGrid(T=1.0, n_steps=n_steps), dirichlet=[Dirichlet("boundary", 0.0)]
)
solver = ThetaSolver(problem, petsc_options_prefix="demo_coef_")


def g_star(t, x):
    return 20.0 * (1 + x[0]) * (1 + t)  # x has shape (3, n_points)


data = solver.forward(FunctionSource(problem, g_star).values()).to_array()[:, : problem.n_owned].copy()
network = ShallowNetwork(neurons, mesh.geometry.dim, seed=1)
misfit = L2Misfit(problem, data)
rf = ReducedFunctional(solver, NetworkSource(problem, network), misfit)
theta0 = network.params.copy()
# -

# ## The gradient is exact
#
# The Taylor remainder |J(θ + h δθ) − J(θ) − h ∇J·δθ| of an exact gradient
# falls like h² (rate 2); the direction δθ is the same on every rank.

# +
dtheta = np.random.default_rng(0).standard_normal(theta0.size)
taylor = taylor_test(rf, theta0, dtheta, h0=1e-2, n_steps=4)
if comm.rank == 0:
    print("Taylor rates:", " ".join(f"{r:.3f}" for r in taylor.rates))
assert min(taylor.rates) > 1.9
# -

# ## Training

# +
J0 = rf(theta0)
result = scipy.optimize.minimize(
    rf.value_and_gradient, theta0, jac=True, method="L-BFGS-B", options={"maxiter": iterations}
)
J = rf(result.x)
rmse0, rmse = misfit.relative_rmse(J0), misfit.relative_rmse(J)  # collective: on every rank
if comm.rank == 0:
    print(f"reaction coefficient, N = {neurons}, {comm.size} rank(s): relative RMSE "
          f"{rmse0:.4f} -> {rmse:.4f} after {result.nit} L-BFGS-B iterations")
assert J < J0
# -

solver.destroy()
misfit.destroy()
