"""Forward solves against manufactured solutions: Allen–Cahn, time-dependent Dirichlet data, Neumann flux.

Every case solves ``∂t u − γΔu + ε⁻²(u³ − u) = g`` with the source ``g``
computed symbolically (UFL) from a known ``u``; the Dirichlet data
``value(t, x)`` is ``u`` itself on part of the boundary and the Neumann flux
``γ ∂u/∂n`` is prescribed on the facets ``x₀ = 1``.

* Spatial orders: ``u`` is linear in time, so the theta scheme has no time
  truncation error and the error is the spatial one, O(h^(p+1)) in L2.
* Temporal orders: ``u`` is a polynomial of the solution's degree in space and
  the source is sampled at the quadrature points, so the discrete residual of
  the exact solution is pure time truncation: order 1 (backward Euler) and 2
  (Crank–Nicolson).
"""

from __future__ import annotations

import numpy as np
import pytest
import dolfinx.fem
import dolfinx.mesh
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid
from femnpde.fem.solver import ThetaSolver

GAMMA, EPSILON = 0.1, 1.0
DIRICHLET_TAG, NEUMANN_TAG = 1, 2


def _smooth(t, x, dim, m=ufl):
    """Linear in t, smooth in space, non-zero on the boundary (``m``: ufl or numpy)."""
    arg = 2.0 * x[0] + x[1] + (0.5 * x[2] if dim == 3 else 0.0)
    return 0.5 * (1.0 + t) * (m.sin(arg) + 0.5)


def _polynomial(degree):
    """A polynomial of the given degree in space, not polynomial in time."""

    def exact(t, x, dim, m=ufl):
        a = 1.0 + 0.5 * m.sin(2.0 * t)
        if degree == 1:
            s = 0.4 + 0.5 * x[0] - 0.3 * x[1] + (0.2 * x[2] if dim == 3 else 0.0)
        else:
            s = 0.4 + 0.5 * x[0] * x[1] - 0.3 * x[0] ** 2 + (0.2 * x[2] ** 2 if dim == 3 else 0.0)
        return a * s

    return exact


def _mesh(dim, n):
    if dim == 2:
        return dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, n, n)
    return dolfinx.mesh.create_unit_cube(MPI.COMM_WORLD, n, n, n)


def _boundary_tags(mesh):
    """Exterior facets: NEUMANN_TAG on x₀ = 1, DIRICHLET_TAG elsewhere."""
    fdim = mesh.topology.dim - 1
    mesh.topology.create_connectivity(fdim, mesh.topology.dim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    mid = dolfinx.mesh.compute_midpoints(mesh, fdim, facets)
    values = np.where(np.isclose(mid[:, 0], 1.0), NEUMANN_TAG, DIRICHLET_TAG).astype(np.int32)
    order = np.argsort(facets)
    return dolfinx.mesh.meshtags(mesh, fdim, facets[order], values[order])


def _solve(exact, dim, degree, n_cells, n_steps, theta, source, T=1.0):
    """Solve the manufactured problem; return the L2 error at T."""
    mesh = _mesh(dim, n_cells)
    tags = _boundary_tags(mesh)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=tags)
    n = ufl.FacetNormal(mesh)

    def residual(u, v, g, t, x):
        flux = GAMMA * ufl.dot(ufl.grad(exact(t, x, dim)), n)
        return (
            GAMMA * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
            + EPSILON**-2 * (u**3 - u) * v * ufl.dx
            - g * v * ufl.dx
            - flux * v * ds(NEUMANN_TAG)
        )

    x_ufl = ufl.SpatialCoordinate(mesh)
    t_const = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))

    problem = ParabolicProblem(
        mesh,
        residual,
        degree=degree,
        time=TimeGrid(T, n_steps),
        theta=theta,
        initial_condition=lambda x: exact(0.0, x, dim, np) + 0.0 * x[0],
        dirichlet=[Dirichlet((tags, DIRICHLET_TAG), lambda t, x: exact(t, x, dim, np) + 0.0 * x[0])],
        source=source,
    )
    # g = ∂t u − γΔu + ε⁻²(u³ − u), differentiated symbolically in t and x.
    tv = ufl.variable(t_const)
    u_ex = exact(tv, x_ufl, dim)
    g = ufl.diff(u_ex, tv) - GAMMA * ufl.div(ufl.grad(u_ex)) + EPSILON**-2 * (u_ex**3 - u_ex)
    g_expr = dolfinx.fem.Expression(g, problem.G.element.interpolation_points)
    g_fun = dolfinx.fem.Function(problem.G)
    ng = problem.n_owned_source
    values = np.empty((n_steps + 1, ng))
    for k, t in enumerate(problem.time.times):
        t_const.value = t
        g_fun.interpolate(g_expr)
        values[k] = g_fun.x.array[:ng]
    solver = ThetaSolver(problem, f"mms_{dim}d_p{degree}_")
    try:
        states = solver.forward(values)
        uh = dolfinx.fem.Function(problem.V)
        uh.x.array[:] = states.load(n_steps)
    finally:
        solver.destroy()
    dx = ufl.dx(metadata={"quadrature_degree": 8})
    err_form = dolfinx.fem.form((uh - exact(PETSc.ScalarType(T), x_ufl, dim)) ** 2 * dx)
    return float(np.sqrt(mesh.comm.allreduce(dolfinx.fem.assemble_scalar(err_form), op=MPI.SUM)))


def _rates(errors):
    errors = np.asarray(errors)
    return np.log2(errors[:-1] / errors[1:])


@pytest.mark.parametrize(
    "dim,degree,theta,cells",
    [
        (2, 1, 1.0, (4, 8, 16)),
        (2, 2, 0.5, (2, 4, 8)),
        (3, 1, 0.5, (2, 4, 8)),
        (3, 2, 1.0, (2, 4)),
    ],
)
def test_spatial_order_allen_cahn_dirichlet_t_neumann(dim, degree, theta, cells):
    errors = [_solve(_smooth, dim, degree, n, n_steps=2, theta=theta, source="lagrange") for n in cells]
    rates = _rates(errors)
    print(f"spatial: {dim}D P{degree} theta={theta}: errors {errors}, rates {rates}")
    assert np.all(rates > degree + 1 - 0.3), (errors, rates)
    assert np.all(rates < degree + 1 + 0.6), (errors, rates)


@pytest.mark.serial  # the time truncation does not depend on the partition; the spatial cases run on 2 ranks
@pytest.mark.parametrize(
    "dim,degree,theta,order",
    [
        (2, 1, 1.0, 1),
        (2, 1, 0.5, 2),
        (2, 2, 0.5, 2),
        (2, 2, 1.0, 1),
        (3, 1, 0.5, 2),
    ],
)
def test_temporal_order_allen_cahn_dirichlet_t_neumann(dim, degree, theta, order):
    cells = 3 if dim == 2 else 2
    errors = [
        _solve(_polynomial(degree), dim, degree, cells, n_steps=n, theta=theta, source="quadrature") for n in (8, 16, 32)
    ]
    rates = _rates(errors)
    print(f"temporal: {dim}D P{degree} theta={theta}: errors {errors}, rates {rates}")
    assert np.all(rates > order - 0.15), (errors, rates)
    assert np.all(rates < order + 0.3), (errors, rates)
