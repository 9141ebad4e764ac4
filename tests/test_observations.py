"""Sensor-point observations: the operator B, adjoint gradients, rank independence, data files, noise."""

import numpy as np
import pytest
import dolfinx.fem
import dolfinx.geometry
from mpi4py import MPI

from femnpde.obs.misfit import TimeWeights
from femnpde.model.network import ShallowNetwork
from femnpde.obs.points import (
    PointMisfit,
    add_noise,
    load_point_data,
    save_point_data,
    synthetic_point_data,
)
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.app.scenarios import LX, LY, paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from femnpde.model.verification import taylor_test
from serial_reference import paper_mesh_pair


def _interior_points(n, seed=0, margin=0.02):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(margin, LX - margin, n), rng.uniform(margin, LY - margin, n)])


# Points on the boundary, at vertices and on interior mesh edges (shared by cells and possibly ranks).
_SPECIAL = np.array([[0.0, 0.0], [LX, LY], [0.0, 0.5], [LX / 2, LY / 2], [LX / 6, LY / 12], [0.25, 0.0]])


@pytest.mark.parametrize("degree", [1, 2])
def test_observe_linear_function_is_exact(degree):
    problem = paper_problem("heat", nx=6, ny=12, n_steps=2, degree=degree)
    points = np.vstack([_interior_points(25), _SPECIAL])
    misfit = PointMisfit(problem, points)
    u = dolfinx.fem.Function(problem.V)
    u.interpolate(lambda x: 1 + 2 * x[0] - x[1])
    observed = misfit.observe(u)
    exact = 1 + 2 * points[:, 0] - points[:, 1]
    assert observed.shape == (len(points),)
    assert np.allclose(observed, exact, rtol=0, atol=1e-13)
    # Replicated on all ranks.
    assert all(np.array_equal(o, observed) for o in MPI.COMM_WORLD.allgather(observed))
    # Each sensor row is owned by exactly one rank.
    B = misfit.B
    assert B.getSize() == (len(points), problem.V.dofmap.index_map.size_global)
    assert MPI.COMM_WORLD.allreduce(misfit.local_sensors.size) == len(points)
    assert misfit.local_sensors.size == B.getLocalSize()[0]
    # Partition of unity: B 1 = 1.
    ones = np.ones(problem.n_owned)
    assert np.allclose(misfit.observe(ones), 1.0, atol=1e-13)
    misfit.destroy()


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_observe_matches_function_eval(degree):
    problem = paper_problem("heat", nx=5, ny=9, n_steps=2, degree=degree)
    points = np.vstack([_interior_points(20, seed=4), _SPECIAL])
    misfit = PointMisfit(problem, points)
    u = dolfinx.fem.Function(problem.V)
    u.interpolate(lambda x: np.sin(3 * x[0]) * np.cos(2 * x[1]) + x[0] ** 3)
    observed = misfit.observe(u)
    # Function.eval on the owning rank, in a cell that contains the point.
    mesh = problem.mesh
    local = misfit.local_sensors
    x3 = np.zeros((local.size, 3))
    x3[:, :2] = points[local]
    tree = dolfinx.geometry.bb_tree(mesh, mesh.topology.dim)
    cells = dolfinx.geometry.compute_colliding_cells(mesh, dolfinx.geometry.compute_collisions_points(tree, x3), x3)
    cell = np.array([cells.links(i)[0] for i in range(local.size)], dtype=np.int32)
    if local.size:
        assert np.allclose(observed[local], u.eval(x3, cell).ravel(), rtol=0, atol=1e-13)
    misfit.destroy()


def test_observe_states_and_arrays():
    problem = paper_problem("heat", nx=4, ny=8, n_steps=3)
    solver = ThetaSolver(problem, "obs_states_")
    states = solver.forward(FunctionSource(problem, target_source("tanh_1")).values())
    points = _interior_points(7, seed=1)
    data = synthetic_point_data(problem, states, points)
    assert data.shape == (4, 7)
    misfit = PointMisfit(problem, points, data)
    assert np.array_equal(misfit.observe(states), data)
    assert np.array_equal(misfit.observe(states.array), data)
    assert np.array_equal(misfit.observe(states.array[:, : problem.n_owned]), data)
    assert np.array_equal(misfit.observe(states.load(2)), data[2])
    # Data from the forward solution itself: zero loss and error.
    assert misfit.value(states) == 0.0
    assert misfit.relative_max_error(states) == 0.0
    assert misfit.max_abs_data() == np.max(np.abs(data))
    misfit.destroy()
    solver.destroy()


def _point_reduced(pde, comm=MPI.COMM_WORLD, weights=None, n_neurons=8, seed=3, prefix="pt_", theta=0.5, mesh=None):
    problem = paper_problem(pde, comm=comm, mesh=mesh, nx=6, ny=12, n_steps=6, theta=theta)
    solver = ThetaSolver(problem, prefix)
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    points = _interior_points(10, seed=7)
    data = synthetic_point_data(problem, solver.forward(gstar), points)
    misfit = PointMisfit(problem, points, data, weights)
    net = ShallowNetwork(n_neurons, problem.mesh.geometry.dim, seed=seed)
    return ReducedFunctional(solver, NetworkSource(problem, net), misfit), net.params.copy()


@pytest.mark.parametrize(
    "weights",
    [None, TimeWeights(levels=(2, 4, 6)), TimeWeights("trapezoid", include_initial=False, levels=(1, 3, 6))],
    ids=["all-levels", "subset", "trapezoid-subset"],
)
@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_taylor_point_misfit(pde, weights):
    rf, theta0 = _point_reduced(pde, weights=weights, prefix=f"pt_taylor_{pde}_")
    dtheta = np.random.default_rng(5).standard_normal(theta0.size)
    result = taylor_test(rf, theta0, dtheta, n_steps=4)
    assert result.J > 0 and result.gradient_norm > 0
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    assert np.isfinite(rf.misfit.relative_rmse(result.J))
    assert rf.misfit.relative_max_error(rf.states) > 0


def test_gradient_is_zero_at_unobserved_levels():
    """Levels outside TimeWeights.levels add nothing to the adjoint right-hand side."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=4)
    points = _interior_points(5, seed=2)
    data = np.ones((5, 5))
    data[0] = np.nan  # unobserved levels may hold nan
    misfit = PointMisfit(problem, points, data, TimeWeights(levels=(2, 4)))
    out = np.zeros(problem.n_owned)
    misfit.add_gradient(1, np.zeros(problem.n_owned), out)
    assert np.all(out == 0.0)
    misfit.add_gradient(2, np.zeros(problem.n_owned), out)
    norm = np.sqrt(MPI.COMM_WORLD.allreduce(float(np.dot(out, out))))
    assert norm > 0
    misfit.destroy()


def test_single_sensor_ranks_without_rows():
    """One sensor: all but one rank own no row of B; products and gathers still work."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=2)
    points = np.array([[0.3, 0.7]])
    misfit = PointMisfit(problem, points, np.full((3, 1), 0.5))
    assert MPI.COMM_WORLD.allreduce(misfit.local_sensors.size) == 1
    u = dolfinx.fem.Function(problem.V)
    u.interpolate(lambda x: 1 + 2 * x[0] - x[1])
    assert np.allclose(misfit.observe(u), [1 + 0.6 - 0.7], atol=1e-13)
    out = np.zeros(problem.n_owned)
    misfit.add_gradient(1, u.x.array[: problem.n_owned], out)
    # ∂J/∂u = Δt Bᵀ(Bu − d): its sum is Δt (Bu − d) by the partition of unity.
    total = MPI.COMM_WORLD.allreduce(float(out.sum()))
    assert np.isclose(total, problem.time.dt * (0.9 - 0.5), atol=1e-13)
    misfit.destroy()


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
def test_rank_independence(pde):
    """Loss and gradient on COMM_WORLD equal those of a serial solve on a renumbered mesh (1e-10 relative)."""
    out = {}
    for name, mesh in paper_mesh_pair(6, 12).items():
        rf, theta0 = _point_reduced(pde, mesh=mesh, n_neurons=12, prefix=f"pt_ranks_{name}_")
        out[name] = (rf(theta0), rf.derivative(), rf.misfit.relative_max_error(rf.states))
    (J1, g1, e1), (J2, g2, e2) = out["self"], out["world"]
    assert J1 > 0
    assert abs(J1 - J2) <= 1e-10 * abs(J1)
    assert np.linalg.norm(g1 - g2) <= 1e-10 * np.linalg.norm(g1)
    assert abs(e1 - e2) <= 1e-10 * abs(e1)
    g_all = MPI.COMM_WORLD.allgather(g2)
    assert all(np.array_equal(g_all[0], g) for g in g_all)


# ----------------------------------------------------------- validation
def test_point_outside_domain_is_named():
    problem = paper_problem("heat", nx=4, ny=8, n_steps=2)
    points = np.array([[0.1, 0.2], [0.7, 0.3], [0.2, 0.9], [0.25, -0.5]])
    with pytest.raises(
        ValueError, match=r"2 sensor point\(s\) outside the mesh: #1 at \(0\.7, 0\.3\), #3 at \(0\.25, -0\.5\)"
    ):
        PointMisfit(problem, points)


def test_bad_points_and_data():
    problem = paper_problem("heat", nx=4, ny=8, n_steps=2)
    with pytest.raises(ValueError, match=r"points have shape \(3, 3\), expected \(n_sensors, gdim\)"):
        PointMisfit(problem, np.full((3, 3), 0.1))
    with pytest.raises(ValueError, match="non-finite"):
        PointMisfit(problem, np.array([[0.1, np.nan]]))
    points = _interior_points(4)
    misfit = PointMisfit(problem, points)
    with pytest.raises(RuntimeError, match="no data set"):
        misfit.value(None)
    with pytest.raises(ValueError, match=r"data have shape \(2, 4\), expected \(n_steps \+ 1, n_sensors\) = \(3, 4\)"):
        misfit.set_data(np.zeros((2, 4)))
    bad = np.zeros((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="first at level 1, sensor 2"):
        misfit.set_data(bad)
    misfit.destroy()


@pytest.mark.skipif(MPI.COMM_WORLD.size == 1, reason="needs several ranks")
def test_rank_dependent_data_are_rejected():
    problem = paper_problem("heat", nx=4, ny=8, n_steps=2)
    with pytest.raises(ValueError, match="data differ between ranks"):
        PointMisfit(problem, _interior_points(3), np.full((3, 3), float(MPI.COMM_WORLD.rank)))
    with pytest.raises(ValueError, match="sensor points differ between ranks"):
        PointMisfit(problem, _interior_points(3, seed=MPI.COMM_WORLD.rank))


# ----------------------------------------------------------------- noise
def test_noise_reproducible_and_rank_independent():
    data = np.linspace(-2.0, 4.0, 2000).reshape(40, 50)
    a = add_noise(data, 0.05, seed=11)
    assert np.array_equal(a, add_noise(data, 0.05, seed=11))
    assert not np.array_equal(a, add_noise(data, 0.05, seed=12))
    assert all(np.array_equal(a, b) for b in MPI.COMM_WORLD.allgather(a))
    assert abs(np.std(a - data) - 0.05 * 4.0) < 0.02
    assert np.array_equal(add_noise(data, 0.0, seed=1), data)
    with_nan = data.copy()
    with_nan[0] = np.nan
    noisy = add_noise(with_nan, 0.1, seed=3)
    assert np.all(np.isnan(noisy[0])) and np.all(np.isfinite(noisy[1:]))
    with pytest.raises(ValueError, match="relative_std"):
        add_noise(data, -0.1, seed=1)


# ----------------------------------------------------------------- files
def test_npz_roundtrip(shared_tmp_path):
    path = shared_tmp_path / "sensors.npz"
    points = _interior_points(4)
    values = np.arange(12.0).reshape(3, 4)
    save_point_data(path, points, values)
    p, v = load_point_data(path, 3, 4, comm=MPI.COMM_WORLD)
    assert np.array_equal(p, points) and np.array_equal(v, values)
    p, v = load_point_data(path, 3)
    assert np.array_equal(v, values)
    # Without points; the file name is kept exactly as given (no extension added).
    save_point_data(shared_tmp_path / "values_only.npz", None, values)
    p, v = load_point_data(shared_tmp_path / "values_only.npz", 3)
    assert p is None and np.array_equal(v, values)
    save_point_data(shared_tmp_path / "raw.data", None, values)
    assert (shared_tmp_path / "raw.data").exists() and not (shared_tmp_path / "raw.data.npz").exists()
    with pytest.raises(ValueError, match=r"points have shape \(3, 2\)"):
        save_point_data(shared_tmp_path / "never.npz", np.zeros((3, 2)), values)


def test_csv_layout(tmp_path):
    path = tmp_path / "sensors.csv"
    path.write_text(
        "# sensor data\n"
        "t, s0, s1, s2\n"
        "x, 0.1, 0.2, 0.3\n"
        "y, 0.5, 0.6, 0.7\n"
        "0.0, 1, 2, 3\n"
        "\n"
        "0.5, 4, 5, nan\n"
        "1.0, 7, 8, 9\n"
    )
    points, values = load_point_data(path, 3, 3, times=np.array([0.0, 0.5, 1.0]))
    assert np.array_equal(points, [[0.1, 0.5], [0.2, 0.6], [0.3, 0.7]])
    assert values.shape == (3, 3) and values[2, 1] == 8.0 and np.isnan(values[1, 2])
    path.write_text("t,a,b\n0,1,2\n1,3,4\n")
    points, values = load_point_data(path, 2)
    assert points is None and np.array_equal(values, [[1, 2], [3, 4]])


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"points": np.zeros((4, 2))}, r"missing array 'values'.*arrays present: \['points'\]"),
        ({"values": np.zeros(12)}, r"array 'values' has shape \(12,\), expected 2D"),
        ({"values": np.zeros((5, 4))}, r"has 5 rows of 'values' \(time levels\), expected n_levels = 3"),
        ({"values": np.zeros((3, 4)), "points": np.zeros((5, 2))}, r"array 'points' has shape \(5, 2\)"),
        ({"values": np.array([["a", "b"]] * 3)}, r"array 'values' has dtype <U1, expected real numbers"),
        ({"values": np.full((3, 4), np.inf)}, r"array 'values' has an infinite entry at \(0, 0\)"),
    ],
    ids=["missing", "1d", "rows", "points", "strings", "inf"],
)
def test_malformed_npz(tmp_path, arrays, match):
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="bad.npz") as info:
        load_point_data(path, 3)
    assert info.match(match)


def test_malformed_npz_files(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("t,s0\n0,1\n")
    with pytest.raises(ValueError, match=r"text\.npz.*not a readable \.npz archive"):
        load_point_data(text, 1)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"single\.npz.*single \.npy array"):
        load_point_data(npy, 3)
    with pytest.raises(ValueError, match=r"sensors for 4 sensors|4 sensors, expected 2"):
        load_point_data(_write_npz(tmp_path / "n.npz", values=np.zeros((3, 4))), 3, n_sensors=2)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_point_data(tmp_path / "missing.npz", 3)
    other = tmp_path / "data.txt"
    other.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"data\.txt.*unknown extension '\.txt'"):
        load_point_data(other, 1)


@pytest.mark.parametrize(
    "text,match",
    [
        ("t,s0,s1\n0,1,2\n0.5,1,abc\n", r"line 3, column 3 \('s1'\): 'abc' is not a number"),
        ("t,s0,s1\n0,1,2\n0.5,1,\n", r"line 3, column 3 \('s1'\): empty cell"),
        ("t,s0,s1\n0,1,2\n0.5,1\n", r"line 3 has 2 cells, expected 3"),
        ("t,s0,s1\n0,1,2\n", r"has 1 time-level rows, expected n_levels = 2"),
        ("t,s0,s1\n0,1,2\n0.5,1,2\n1.0,1,2\n", r"has 3 time-level rows, expected n_levels = 2"),
        ("time,s0\n0,1\n1,2\n", r"line 1: the header must start with 't'"),
        ("t\n0\n1\n", r"line 1: the header has no sensor columns"),
        ("t,s0\n0.5,1\n0.5,2\n", r"line 3: time 0.5 does not increase"),
        ("t,s0\n0,1\nx,0.1\n", r"line 3: coordinate row 'x' out of place"),
        ("t,s0\n0,1\n0.5,inf\n", r"line 3, column 2 \('s0'\): 'inf' is not finite"),
        ("", r"empty"),
    ],
    ids=[
        "word",
        "empty-cell",
        "ragged",
        "few-rows",
        "many-rows",
        "header",
        "no-sensors",
        "time",
        "coords",
        "inf",
        "empty",
    ],
)
def test_malformed_csv(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.csv") as info:
        load_point_data(path, 2)
    assert info.match(match)


def test_csv_times_checked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("t,s0\n0,1\n0.4,2\n")
    with pytest.raises(ValueError, match=r"t\.csv.*time of level 1 is 0\.4, but the time grid has t_1 = 0\.5"):
        load_point_data(path, 2, times=np.array([0.0, 0.5]))


def test_load_errors_are_collective(shared_tmp_path):
    path = shared_tmp_path / "collective.csv"
    if MPI.COMM_WORLD.rank == 0:
        path.write_text("t,s0\n0,1\n0.5,oops\n")
    MPI.COMM_WORLD.Barrier()
    with pytest.raises(ValueError, match=r"collective\.csv.*line 3, column 2 \('s0'\): 'oops' is not a number"):
        load_point_data(path, 2, comm=MPI.COMM_WORLD)
