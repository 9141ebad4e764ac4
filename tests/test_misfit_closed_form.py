"""The loss formula against closed forms: time weights, J = ½ Σ wₙ Δt |Ω| eₙ², subdomain areas, ∂J/∂u.

``TimeWeights`` docstring vs code (issue 11): the docstring says the trapezoid
rule gives "the first and last included levels" weight ½; the code gives ½
to the levels 0 and N of the grid only, so with ``include_initial=False``
level 1 keeps weight 1.  The tests pin the code's behaviour, which is the
meaning the ``include_initial`` docstring documents: dropping level 0 only
shifts the loss by a constant (the trapezoid rule over [0, T] minus its
u⁰ term).
"""

from __future__ import annotations

import numpy as np
import pytest
import dolfinx.mesh
from mpi4py import MPI

from femnpde.app.scenarios import LX, LY, paper_problem
from femnpde.fem.storage import MemoryStorage
from femnpde.obs.misfit import L2Misfit, TimeWeights, time_weights


# ----------------------------------------------------------------- weights
@pytest.mark.serial
@pytest.mark.parametrize(
    "spec,expected",
    [
        (TimeWeights("rectangle"), [1, 1, 1, 1, 1]),
        (TimeWeights("rectangle", include_initial=False), [0, 1, 1, 1, 1]),
        (TimeWeights("trapezoid"), [0.5, 1, 1, 1, 0.5]),
        # The code: level 1 keeps weight 1 (the docstring's "first included level ½" is not what it does).
        (TimeWeights("trapezoid", include_initial=False), [0, 1, 1, 1, 0.5]),
        (TimeWeights("rectangle", levels=(1, 3)), [0, 1, 0, 1, 0]),
        (TimeWeights("trapezoid", levels=(0, 2, 4)), [0.5, 0, 1, 0, 0.5]),
        (TimeWeights("trapezoid", include_initial=False, levels=(0, 1, 4)), [0, 1, 0, 0, 0.5]),
    ],
)
def test_time_weights_closed_form(spec, expected):
    np.testing.assert_array_equal(time_weights(4, spec), np.asarray(expected, dtype=float))


@pytest.mark.serial
def test_time_weights_one_step_and_bad_levels():
    np.testing.assert_array_equal(time_weights(1, TimeWeights("trapezoid")), [0.5, 0.5])
    np.testing.assert_array_equal(time_weights(1, TimeWeights("trapezoid", include_initial=False)), [0.0, 0.5])
    with pytest.raises(ValueError, match=r"levels \[5\] are outside 0..4"):
        time_weights(4, TimeWeights(levels=(1, 5)))
    with pytest.raises(ValueError, match="rule='simpson'.*rectangle"):
        TimeWeights("simpson")


@pytest.mark.serial
@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_trapezoid_weights_integrate_linear_functions_exactly(n_steps):
    """Δt Σ wₙ f(tₙ) = ∫₀ᵀ f for f affine in t (the meaning of the trapezoid rule)."""
    T = 2.0
    t = np.linspace(0.0, T, n_steps + 1)
    w = time_weights(n_steps, TimeWeights("trapezoid")) * (T / n_steps)
    assert np.dot(w, 3.0 - 1.5 * t) == pytest.approx(3.0 * T - 0.75 * T**2, rel=1e-14)
    # include_initial=False drops exactly the u⁰ term: the weights differ at level 0 only.
    w0 = time_weights(n_steps, TimeWeights("trapezoid", include_initial=False)) * (T / n_steps)
    np.testing.assert_array_equal(w0[1:], w[1:])
    assert w0[0] == 0.0


# ------------------------------------------------------------------ misfit
def _states(problem, per_level):
    """Storage whose level n is the constant per_level[n] (owned and ghost entries)."""
    n_local = problem.V.dofmap.index_map.size_local + problem.V.dofmap.index_map.num_ghosts
    st = MemoryStorage(len(per_level), n_local)
    for n, c in enumerate(per_level):
        st.store(n, np.full(n_local, float(c)))
    return st


N_STEPS = 4
ERRORS = np.array([0.5, 1.0, -2.0, 3.0, 0.25])  # e_n, one constant per level


@pytest.mark.parametrize(
    "spec",
    [
        TimeWeights("rectangle"),
        TimeWeights("trapezoid"),
        TimeWeights("trapezoid", include_initial=False),
        TimeWeights("rectangle", levels=(1, 4)),
    ],
)
def test_constant_error_loss_closed_form(spec):
    """u − h = eₙ (constant) gives J = ½ Σ wₙ Δt |Ω| eₙ² with |Ω| = 0.5 · 1."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=N_STEPS, T=2.0)
    dt = 2.0 / N_STEPS
    data = np.full((N_STEPS + 1, problem.n_owned), 1.5)
    misfit = L2Misfit(problem, data, spec)
    try:
        J = misfit.value(_states(problem, 1.5 + ERRORS))
        w = time_weights(N_STEPS, spec)
        expected = 0.5 * np.sum(w * dt * LX * LY * ERRORS**2)
        assert J == pytest.approx(expected, rel=1e-12)
        # ∂J/∂uⁿ = wₙ Δt M eₙ: its entries sum to wₙ Δt |Ω| eₙ (M 1 integrates the constant).
        for n in range(N_STEPS + 1):
            out = np.zeros(problem.n_owned)
            misfit.add_gradient(n, np.full(problem.n_owned, 1.5 + ERRORS[n]), out)
            total = MPI.COMM_WORLD.allreduce(float(out.sum()), op=MPI.SUM)
            assert total == pytest.approx(w[n] * dt * LX * LY * ERRORS[n], rel=1e-12, abs=1e-15)
    finally:
        misfit.destroy()


def test_subdomain_loss_is_its_own_area():
    """Cells with x < 0.2 (a 0.2 × 1 strip, aligned with the mesh) weigh their own area 0.2."""
    problem = paper_problem("heat", nx=5, ny=6, n_steps=N_STEPS)
    mesh = problem.mesh
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local + mesh.topology.index_map(tdim).num_ghosts
    cells = np.arange(n_cells, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)
    tags = dolfinx.mesh.meshtags(mesh, tdim, cells, np.where(mid[:, 0] < 0.2, 7, 3).astype(np.int32))
    data = np.zeros((N_STEPS + 1, problem.n_owned))
    dt = problem.time.dt
    for tag, area in ((7, 0.2 * LY), (3, (LX - 0.2) * LY)):
        misfit = L2Misfit(problem, data, TimeWeights("trapezoid"), subdomain=(tags, tag))
        try:
            J = misfit.value(_states(problem, ERRORS))
            w = time_weights(N_STEPS, TimeWeights("trapezoid"))
            assert J == pytest.approx(0.5 * np.sum(w * dt * area * ERRORS**2), rel=1e-12), tag
        finally:
            misfit.destroy()
    with pytest.raises(ValueError, match=r"cell tag 5 not found.*\[3, 7\]"):
        L2Misfit(problem, data, subdomain=(tags, 5))


def test_include_initial_only_shifts_the_loss_by_the_initial_term():
    """The documented meaning of include_initial: J(True) − J(False) = ½ w₀ Δt ‖u⁰ − h⁰‖², whatever uⁿ (n ≥ 1)."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=N_STEPS)
    data = np.zeros((N_STEPS + 1, problem.n_owned))
    dt = problem.time.dt
    with_0 = L2Misfit(problem, data, TimeWeights("trapezoid", include_initial=True))
    without = L2Misfit(problem, data, TimeWeights("trapezoid", include_initial=False))
    try:
        for later in ([1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 5.0, 0.5]):
            levels = [0.8] + later
            diff = with_0.value(_states(problem, levels)) - without.value(_states(problem, levels))
            assert diff == pytest.approx(0.5 * 0.5 * dt * LX * LY * 0.8**2, rel=1e-12)
    finally:
        with_0.destroy()
        without.destroy()
