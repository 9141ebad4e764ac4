# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: light
# ---

# # A user residual: nonlinear diffusion with a Robin boundary, learned from sensors
#
# The PDE is whatever UFL residual the user writes.  This demo takes a
# **nonlinear diffusion** equation with a **Robin** (heat-transfer) condition
# on a tagged gmsh mesh and learns the source from **24 point sensors** with
# noise.  It shows
#
# - reading a gmsh `.msh` mesh with its facet tags (`read_mesh`),
# - a residual with a state-dependent conductivity and a boundary integral
#   over one facet tag (`ufl.Measure("ds", subdomain_data=...)`),
# - sensor data (`synthetic_point_data`, `add_noise`) and the `PointMisfit`
#   loss, whose adjoint receives point sources at the sensors,
# - training with femnpde's `Adam`, where every step's nonlinear solve is a
#   Newton iteration and the adjoint is exact for the discrete loss.
#
# The domain is the annulus 0.3 < r < 1 with two holes (`meshes/annulus_holes.msh`;
# facet tags 1 outer circle, 2 inner circle, 3 the holes):
#
# $$
# \partial_t u - \nabla\cdot\big((\kappa_0 + \kappa_1 u^2)\nabla u\big) = g_\theta(t, x), \qquad
# (\kappa_0 + \kappa_1 u^2)\,\partial_n u = \alpha (u_\infty - u) \text{ on the outer circle},
# $$
#
# u = 0 on the inner circle, no flux through the holes, u(0) = 0, with
# κ₀ = 0.02, κ₁ = 0.5, α = 2 and u∞ = 0.1, Crank–Nicolson in time.
#
# ```bash
# scripts/env-run python3 demos/demo_nonlinear_robin_sensors.py
# scripts/env-run mpirun -n 2 python3 demos/demo_nonlinear_robin_sensors.py
# ```

# +
import pathlib
import sys

import numpy as np
import ufl
from mpi4py import MPI

from femnpde import (
    Adam,
    Dirichlet,
    FunctionSource,
    NetworkSource,
    ParabolicProblem,
    PointMisfit,
    ReducedFunctional,
    ShallowNetwork,
    ThetaSolver,
    TimeGrid,
    add_noise,
    read_mesh,
    synthetic_point_data,
)

quick = "--quick" in sys.argv
comm = MPI.COMM_WORLD
n_steps, neurons, epochs = (8, 20, 4) if quick else (32, 50, 120)
# -

# ## The mesh and the residual
#
# `read_mesh` reads the `.msh` file with gmsh on rank 0 and distributes it;
# the facet tags come with it.  The Robin term is an integral over the facets
# tagged 1: it is part of the residual like everything else, so the adjoint
# (and the Newton Jacobian) include it.

# +
here = pathlib.Path(__file__).resolve().parent if "__file__" in globals() else pathlib.Path("demos")
mesh_data = read_mesh(here.parent / "meshes" / "annulus_holes.msh", comm)
mesh, facet_tags = mesh_data.mesh, mesh_data.facet_tags
ds = ufl.Measure("ds", domain=mesh, subdomain_data=facet_tags)
kappa0, kappa1, alpha, u_inf = 0.02, 0.5, 2.0, 0.1


def residual(u, v, g, t, x):
    kappa = kappa0 + kappa1 * u**2
    return (
        kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
        + alpha * (u - u_inf) * v * ds(1)
        - g * v * ufl.dx
    )


problem = ParabolicProblem(
    mesh,
    residual,
    degree=1,
    time=TimeGrid(T=1.0, n_steps=n_steps),
    theta=0.5,
    initial_condition=0.0,
    dirichlet=[Dirichlet((facet_tags, 2), 0.0)],
)
solver = ThetaSolver(problem, petsc_options_prefix="demo_robin_")
# -

# ## Sensors and data
#
# 16 sensors on the ring r = 0.85 and 8 on r = 0.45.  The "true" source is a
# Gaussian bump circling the centre once; the sensor values of its solution,
# with 1 % noise, are the data.

# +
def ring(r, n, phase=0.0):
    a = 2 * np.pi * (np.arange(n) + phase) / n
    return np.column_stack([r * np.cos(a), r * np.sin(a)])


sensors = np.vstack([ring(0.85, 16), ring(0.45, 8, 0.5)])


def g_true(t, x):
    c = 0.6 * np.array([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)])
    return 5.0 * np.exp(-((x[0] - c[0]) ** 2 + (x[1] - c[1]) ** 2) / (2 * 0.2**2))  # x: (3, n_points)


clean = synthetic_point_data(problem, solver.forward(FunctionSource(problem, g_true).values()), sensors)
misfit = PointMisfit(problem, sensors, add_noise(clean, 0.01, seed=7))
# -

# ## Training
#
# Adam with the learning rate scaled like the paper's (lr ∝ N^(1/3) for
# β = 2/3); `rf.value_and_gradient` is one forward (Newton) sweep and one
# adjoint sweep.

# +
network = ShallowNetwork(neurons, mesh.geometry.dim, seed=42)
rf = ReducedFunctional(solver, NetworkSource(problem, network), misfit)
theta = network.params.copy()
opt = Adam(lr=0.05 * neurons ** (1 / 3))
losses = []
for epoch in range(epochs):
    J, grad = rf.value_and_gradient(theta)
    losses.append(J)
    opt.step(theta, grad)
J = rf(theta)
rmse0, rmse = misfit.relative_rmse(losses[0]), misfit.relative_rmse(J)  # collective: on every rank
if comm.rank == 0:
    print(f"nonlinear diffusion + Robin, {len(sensors)} sensors, N = {neurons}, {comm.size} rank(s)")
    print(f"sensor misfit {losses[0]:.4e} -> {J:.4e} after {epochs} Adam epochs "
          f"(relative RMSE {rmse0:.3f} -> {rmse:.3f})")
assert J < losses[0]
# -

solver.destroy()
misfit.destroy()
