# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: light
# ---

# # The paper's heat scenario with the Python API, trained by SciPy
#
# This demo writes the heat scenario of *Global Convergence of
# Adjoint-Optimized Neural PDEs* (Riedl, Sirignano, Spiliopoulos, 2025) with
# femnpde's Python API and fits the network with `scipy.optimize.minimize`
# (L-BFGS-B) on the **reduced functional** θ ↦ J(θ), whose gradient is the
# exact gradient of the discretised loss (a discrete adjoint derived from the
# UFL residual).  It shows
#
# - a DOLFINx mesh and a UFL residual `a(u, v, g, t, x)` in a `ParabolicProblem`,
# - synthetic data from a known source g*,
# - the `ReducedFunctional` of a `ShallowNetwork` source and an `L2Misfit`,
# - SciPy's optimiser driven by `value_and_gradient`.
#
# The model problem on D = [0, 0.5] × [0, 1], t ∈ [0, 1]:
#
# $$
# \partial_t u - \gamma \Delta u = g_\theta(t, x), \qquad u = 0 \text{ on } \partial D, \qquad
# u(0, x, y) = 0.2 \sin(4\pi x) \sin(2\pi y),
# $$
#
# with γ = 0.01 and g_θ(t, x) = N^{-β} Σᵢ cᵢ tanh(wᵢ,ₜ t + wᵢ·x + ηᵢ).  The data
# are the discrete solution for the paper's "difficult" source g*.
#
# Run it serially or in parallel (the loss and gradient are the same on any
# number of ranks); `--quick` makes it a few-second smoke run:
#
# ```bash
# scripts/env-run python3 demos/demo_paper_heat_scipy.py
# scripts/env-run mpirun -n 2 python3 demos/demo_paper_heat_scipy.py
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
)

quick = "--quick" in sys.argv
comm = MPI.COMM_WORLD
# -

# ## The PDE problem
#
# The paper's grid has 21 × 41 = 861 P1 nodes; the time grid has 64
# backward-Euler steps.  The residual is the weak form of −γΔu − g; the time
# derivative and the theta scheme are added by `ParabolicProblem`.

# +
nx, ny, n_steps, neurons, iterations = (10, 20, 16, 20, 5) if quick else (20, 40, 64, 100, 150)
mesh = dolfinx.mesh.create_rectangle(
    comm, [np.array([0.0, 0.0]), np.array([0.5, 1.0])], [nx, ny], dolfinx.mesh.CellType.triangle
)
gamma = 0.01


def residual(u, v, g, t, x):
    return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx


problem = ParabolicProblem(
    mesh,
    residual,
    degree=1,
    time=TimeGrid(T=1.0, n_steps=n_steps),
    theta=1.0,
    initial_condition=lambda x: 0.2 * np.sin(4 * np.pi * x[0]) * np.sin(2 * np.pi * x[1]),
    dirichlet=[Dirichlet("boundary", 0.0)],
)
solver = ThetaSolver(problem, petsc_options_prefix="demo_heat_")
# -

# ## Synthetic data
#
# The "difficult" source of the paper, in scaled coordinates x̃ = x/0.5,
# ỹ = y: g*(t, x) = 800 (1 − ỹ)² (0.2 + 0.6t − ỹ)² ỹ² (1 − x̃) x̃.  Its
# discrete solution h (owned dofs of every time level) is the data.

# +
def g_star(t, x):
    xx, yy = x[0] / 0.5, x[1]  # x has shape (3, n_points), as for Function.interpolate
    return 800.0 * (1 - yy) ** 2 * ((0.2 + 0.6 * t) - yy) ** 2 * yy**2 * (1 - xx) * xx


states = solver.forward(FunctionSource(problem, g_star).values())
data = states.to_array()[:, : problem.n_owned].copy()
# -

# ## The reduced functional
#
# The network is sampled at the dofs of the source space for every time
# level; `ReducedFunctional` runs the forward sweep for J(θ) and the adjoint
# sweep for ∇J(θ).

# +
network = ShallowNetwork(neurons, mesh.geometry.dim, beta=2 / 3, seed=42)
misfit = L2Misfit(problem, data)
rf = ReducedFunctional(solver, NetworkSource(problem, network), misfit)
theta0 = network.params.copy()
J0 = rf(theta0)
# -

# ## Training with SciPy
#
# `value_and_gradient` returns (J, ∇J) from one forward and one adjoint sweep,
# which is what `minimize(..., jac=True)` expects.  Every rank runs the same
# optimiser on the same (allreduced) loss and gradient, so the iterates stay
# identical across ranks.

# +
history = []
result = scipy.optimize.minimize(
    rf.value_and_gradient,
    theta0,
    jac=True,
    method="L-BFGS-B",
    options={"maxiter": iterations},
    callback=lambda xk: history.append(rf(xk)),
)
J = rf(result.x)
rmse0, rmse = misfit.relative_rmse(J0), misfit.relative_rmse(J)  # collective: on every rank
if comm.rank == 0:
    print(f"heat, N = {neurons}, {network.n_params} parameters, {comm.size} rank(s)")
    print(f"L-BFGS-B: {result.nit} iterations, {rf.n_forward} forward / {rf.n_adjoint} adjoint sweeps")
    print(f"relative RMSE {rmse0:.4f} -> {rmse:.4f}")
assert J < J0
# -

# The PETSc objects are destroyed collectively.

solver.destroy()
misfit.destroy()
