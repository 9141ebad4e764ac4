"""Observation operators B (field, points) and the quadratic misfit over a user's operator."""

import numpy as np
import pytest
import dolfinx.fem
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem
from femnpde.obs.misfit import QuadraticMisfit
from femnpde.obs.operators import FieldObservation, ObservationOperator, PointObservation

COMM = MPI.COMM_WORLD


def _dot(a, b):
    return COMM.allreduce(float(np.dot(a, b)))


def _field(problem, f):
    u = dolfinx.fem.Function(problem.V)
    u.interpolate(f)
    return u.x.array[: problem.n_owned].copy()


def test_point_observation_transpose_is_the_adjoint():
    """y·(B u) = (Bᵀ y)·u, and B interpolates a linear function exactly."""
    problem = paper_problem("heat", nx=5, ny=9, n_steps=1)
    points = np.array([[0.1, 0.2], [0.25, 0.5], [0.4, 0.9], [0.0, 0.0], [0.33, 0.61]])
    with PointObservation(problem.V, points) as B:
        assert COMM.allreduce(B.n_local) == len(points)
        u = _field(problem, lambda x: 1 + 2 * x[0] - x[1])
        Bu = B.apply(u).copy()
        assert np.allclose(Bu, (1 + 2 * points[:, 0] - points[:, 1])[B.local_sensors], atol=1e-13)
        y = np.random.default_rng(COMM.rank).standard_normal(B.n_local)
        assert np.isclose(_dot(y, Bu), _dot(B.apply_transpose(y), u), rtol=1e-13)
        assert B.weight(y) is y


@pytest.mark.parametrize("subdomain", [False, True])
def test_field_observation_weight_is_the_mass_matrix(subdomain):
    """1ᵀ W 1 = |Ω| (or |Ω ∩ {y > 1/2}|), B and Bᵀ are the identity."""
    import dolfinx.mesh

    problem = paper_problem("heat", nx=4, ny=8, n_steps=1)
    sub = None
    if subdomain:
        mesh = problem.mesh
        tdim = mesh.topology.dim
        cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
        mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)
        sub = (dolfinx.mesh.meshtags(mesh, tdim, cells, np.where(mid[:, 1] > 0.5, 3, 1).astype(np.int32)), 3)
    with FieldObservation(problem.V, sub) as B:
        one = np.ones(problem.n_owned)
        assert B.apply(one) is one and B.apply_transpose(one) is one
        area = 0.5 * (0.5 if subdomain else 1.0)
        assert np.isclose(_dot(one, B.weight(one)), area, rtol=1e-12)
    with pytest.raises(ValueError, match="cell tag 9 not found"):
        FieldObservation(problem.V, (sub[0], 9) if subdomain else (_tags_all_one(problem), 9))


def _tags_all_one(problem):
    import dolfinx.mesh

    mesh = problem.mesh
    tdim = mesh.topology.dim
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    return dolfinx.mesh.meshtags(mesh, tdim, cells, np.ones(cells.size, dtype=np.int32))


class _Mean(ObservationOperator):
    """A user's operator: the mean of the owned values (one observation on rank 0), W = 1."""

    def __init__(self, problem):
        self.comm = problem.comm
        self.n = problem.V.dofmap.index_map.size_global
        self.n_owned = problem.n_owned
        self.n_local = 1 if self.comm.rank == 0 else 0

    def apply(self, u):
        mean = self.comm.allreduce(float(u.sum())) / self.n
        return np.full(self.n_local, mean)

    def weight(self, r):
        return r

    def apply_transpose(self, y):
        total = self.comm.bcast(float(y.sum()) if self.comm.rank == 0 else 0.0, root=0)
        return np.full(self.n_owned, total / self.n)


def test_quadratic_misfit_over_a_user_operator():
    """J = ½ Σ_n w_n Δt (mean(u^n) − d^n)², its gradient w_n Δt (mean − d)/N per dof; normalise checked."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=2)
    op = _Mean(problem)
    data = np.array([[0.5], [1.0], [2.0]])[:, : op.n_local]
    misfit = QuadraticMisfit(problem, op, data)
    u = np.full(problem.n_owned, 3.0)

    class States:
        def load(self, n):
            return u

    dt = problem.time.dt
    assert np.isclose(misfit.value(States()), 0.5 * dt * (2.5**2 + 2.0**2 + 1.0**2))
    out = np.zeros(problem.n_owned)
    misfit.add_gradient(1, u, out)
    assert np.allclose(out, dt * 2.0 / op.n)
    assert misfit.max_abs_data() == 2.0
    with pytest.raises(ValueError, match="normalise='levels' is not valid; use one of"):
        QuadraticMisfit(problem, _Mean(problem), data, normalise="levels")
    with pytest.raises(ValueError, match=r"local data have shape"):
        QuadraticMisfit(problem, _Mean(problem), np.zeros((2, 1)))
    with pytest.raises(RuntimeError, match="QuadraticMisfit.value: no data set"):
        QuadraticMisfit(problem, _Mean(problem)).value(States())
