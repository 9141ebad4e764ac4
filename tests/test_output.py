"""Tests for femnpde.io.output (serial and under ``mpirun -n 2``)."""

from __future__ import annotations

import math
import pathlib

import dolfinx
import dolfinx.fem
import dolfinx.io
import dolfinx.mesh
import numpy as np
import pytest
from mpi4py import MPI

from femnpde.fem.projection import QuadratureProjector
from femnpde.io import checkpoint
from femnpde.io.gather import gather_triangles
from femnpde.io.output import (
    HISTORY_COLUMNS,
    History,
    Progress,
    RunDirectory,
    gather_owned,
    load_checkpoint,
    plot_comparison,
    plot_history,
    rank0_print,
    save_checkpoint,
    write_fields,
)
from femnpde.app.scenarios import paper_problem
from femnpde.fem.solver import ThetaSolver

COMM = MPI.COMM_WORLD
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------
@pytest.fixture
def shared_tmp(tmp_path: pathlib.Path) -> pathlib.Path:
    """Rank 0's tmp_path, the same directory on every rank."""
    path = pathlib.Path(COMM.bcast(str(tmp_path), root=0))
    COMM.barrier()
    return path


@pytest.fixture(scope="module")
def solved():
    """A small heat problem and its states for a zero source."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=3)
    solver = ThetaSolver(problem, "test_out_")
    solver.forward(np.zeros((4, problem.n_owned_source)))
    states = solver.states.array.copy()
    yield problem, states
    solver.destroy()


def _rank0_file_check(path: pathlib.Path) -> None:
    COMM.barrier()
    if COMM.rank == 0:
        assert path.exists(), path
        assert path.stat().st_size > 0, path


def _tree_size(path: pathlib.Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _assert_same(a, b, where: str = "") -> None:
    """Exact equality including types; arrays bitwise with the same dtype and shape."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _state():
    rng = np.random.default_rng(3)
    params = rng.standard_normal(41)
    params[0] = np.nextafter(1.0, 2.0)  # a value that a decimal round trip could lose
    optimizer_state = {
        "kind": "adam",
        "lr": 1e-3 / 3,
        "beta1": np.float64(0.9),
        "step": 7,
        "m": rng.standard_normal(41),
        "v": rng.random(41).astype(np.float32),
        "empty": np.zeros(0),
        "nested": {
            "flag": True,
            "none": None,
            "inf": float("inf"),
            "nan": float("nan"),
            "big": 2**70,
            "name": "ünïcode/with/slash",
            "history": [np.arange(3, dtype=np.int32), 2.5, "x", None, (1, np.eye(2))],
            "count": np.int64(-5),
        },
        3: "int key",
    }
    schedule_state = {
        "kind": "plateau",
        "best": float("inf"),
        "num_bad_epochs": 0,
        "threshold_mode": "rel",
    }
    return params, optimizer_state, schedule_state


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
def test_checkpoint_round_trip_bitwise(shared_tmp):
    params, opt, sched = _state()
    path = shared_tmp / "checkpoint_latest.npz"
    extra = {"best_loss": 0.125, "seed": 42, "nothing": None}
    save_checkpoint(
        path,
        COMM,
        epoch=12,
        params=params,
        optimizer_state=opt,
        schedule_state=sched,
        extra=extra,
    )
    ck = load_checkpoint(path, COMM)
    assert set(ck) == {"epoch", "params", "optimizer_state", "schedule_state", "extra"}
    _assert_same(ck["epoch"], 12)
    _assert_same(ck["params"], params)
    _assert_same(ck["optimizer_state"], opt)
    _assert_same(ck["schedule_state"], sched)
    _assert_same(ck["extra"], extra)
    # Arrays are plain npz members named by their key path.
    if COMM.rank == 0:
        with np.load(path, allow_pickle=False) as f:
            assert np.array_equal(f["params"], params)
            assert np.array_equal(f["optimizer_state/m"], opt["m"])
            assert np.array_equal(
                f["optimizer_state/nested/history/0"], opt["nested"]["history"][0]
            )


def test_checkpoint_none_states(shared_tmp):
    path = shared_tmp / "ck.npz"
    save_checkpoint(
        path, COMM, epoch=0, params=np.zeros(3), optimizer_state={}, schedule_state=None
    )
    ck = load_checkpoint(path, COMM)
    assert (
        ck["schedule_state"] is None
        and ck["extra"] is None
        and ck["optimizer_state"] == {}
    )


def test_checkpoint_atomic_on_failure(shared_tmp, monkeypatch):
    params, opt, sched = _state()
    path = shared_tmp / "checkpoint_latest.npz"
    save_checkpoint(
        path, COMM, epoch=1, params=params, optimizer_state=opt, schedule_state=sched
    )
    before = path.read_bytes() if COMM.rank == 0 else None

    def failing_write(f, arrays):
        f.write(b"PK\x03\x04 partial checkpoint")
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(checkpoint, "_write_npz", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(
            path,
            COMM,
            epoch=2,
            params=params + 1,
            optimizer_state=opt,
            schedule_state=sched,
        )
    monkeypatch.undo()
    COMM.barrier()
    if COMM.rank == 0:
        assert path.read_bytes() == before
        assert sorted(p.name for p in shared_tmp.iterdir()) == ["checkpoint_latest.npz"]
    ck = load_checkpoint(path, COMM)
    assert ck["epoch"] == 1
    _assert_same(ck["params"], params)


def test_checkpoint_unsupported_type(shared_tmp):
    with pytest.raises(TypeError, match="not supported"):
        save_checkpoint(
            shared_tmp / "x.npz",
            COMM,
            epoch=0,
            params=np.zeros(2),
            optimizer_state={"f": object()},
            schedule_state=None,
        )
    COMM.barrier()
    assert not (shared_tmp / "x.npz").exists()


def test_load_checkpoint_missing_or_corrupt(shared_tmp):
    missing = shared_tmp / "nope.npz"
    with pytest.raises(ValueError, match="nope.npz"):
        load_checkpoint(missing, COMM)
    corrupt = shared_tmp / "corrupt.npz"
    if COMM.rank == 0:
        corrupt.write_bytes(b"this is not a zip file")
    COMM.barrier()
    with pytest.raises(ValueError, match="corrupt.npz"):
        load_checkpoint(corrupt, COMM)
    plain = shared_tmp / "plain.npz"
    if COMM.rank == 0:
        np.savez(plain, a=np.zeros(2))
    COMM.barrier()
    with pytest.raises(ValueError, match="plain.npz"):
        load_checkpoint(plain, COMM)


# ---------------------------------------------------------------------------
# run directory and history
# ---------------------------------------------------------------------------
def test_run_directory(shared_tmp):
    run = RunDirectory(shared_tmp / "a" / "b", COMM)
    assert run.path.is_dir()
    run.write_text("config.json", '{"x": 1}\n')
    run.write_text("config.json", '{"x": 2}\n')
    COMM.barrier()
    assert (run / "config.json").read_text() == '{"x": 2}\n'
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json"]
    with pytest.raises(ValueError, match="not a file inside"):
        run.write_text("../escape.txt", "x")


def test_run_directory_not_writable(shared_tmp):
    blocker = shared_tmp / "file"
    if COMM.rank == 0:
        blocker.write_text("x")
    COMM.barrier()
    with pytest.raises(ValueError, match=str(blocker / "sub")):
        RunDirectory(blocker / "sub", COMM)


def test_history_append_read_truncate(shared_tmp):
    path = shared_tmp / "history.csv"
    h = History(
        path, COMM, header_comment="relative RMSE = ||u - h|| / ||u||\nsecond line"
    )
    for e in range(1, 6):
        h.append(
            epoch=e,
            loss=1.0 / 3**e,
            relative_rmse=0.1 * e,
            relative_max_error=0.2,
            gradient_norm=1e-300,
            learning_rate=1e-3,
            wall_time=0.5 * e,
        )
    h.append(epoch=6, loss=0.25)  # missing columns -> NaN
    with pytest.raises(ValueError, match="unknown column"):
        h.append(epoch=7, accuracy=1.0)
    COMM.barrier()
    if COMM.rank == 0:
        lines = path.read_text().splitlines()
        assert lines[0] == "# relative RMSE = ||u - h|| / ||u||"
        assert lines[1] == "# second line"
        assert lines[2] == ",".join(HISTORY_COLUMNS)
    d = History.read(path)
    assert list(d) == list(HISTORY_COLUMNS)
    assert d["epoch"].dtype == np.int64
    np.testing.assert_array_equal(d["epoch"], np.arange(1, 7))
    assert d["loss"][2] == 1.0 / 27  # exact round trip
    assert d["gradient_norm"][0] == 1e-300
    assert np.isnan(d["relative_rmse"][5])

    COMM.barrier()  # append is rank 0 only: wait for it before other ranks read
    h.truncate_after(3)
    d = History.read(path)
    np.testing.assert_array_equal(d["epoch"], [1, 2, 3])
    # Resume: reopening appends to the file (comments kept), overwrite starts anew.
    COMM.barrier()
    h2 = History(path, COMM)
    h2.append(epoch=4, loss=0.5)
    COMM.barrier()
    d = History.read(path)
    np.testing.assert_array_equal(d["epoch"], [1, 2, 3, 4])
    if COMM.rank == 0:
        assert path.read_text().startswith("# relative RMSE")
        assert not [p for p in shared_tmp.iterdir() if p.name.endswith(".tmp")]
    COMM.barrier()
    History(path, COMM, overwrite=True)
    assert History.read(path)["epoch"].size == 0


def test_history_torn_last_row_and_bad_header(shared_tmp):
    path = shared_tmp / "h.csv"
    if COMM.rank == 0:
        path.write_text(
            ",".join(HISTORY_COLUMNS) + "\n1,0.5,0.1,0.2,0.3,0.001,1.0\n2,0.4"
        )
    COMM.barrier()
    np.testing.assert_array_equal(History.read(path)["epoch"], [1])
    COMM.barrier()
    h = History(path, COMM)
    h.append(epoch=2, loss=0.4)
    COMM.barrier()
    np.testing.assert_array_equal(History.read(path)["epoch"], [1, 2])
    bad = shared_tmp / "bad.csv"
    if COMM.rank == 0:
        bad.write_text("a,b\n1,2\n")
    COMM.barrier()
    with pytest.raises(ValueError, match="columns"):
        History(bad, COMM)
    with pytest.raises(ValueError, match="missing.csv"):
        History.read(shared_tmp / "missing.csv")


# ---------------------------------------------------------------------------
# fields
# ---------------------------------------------------------------------------
def test_write_fields_vtx(solved, shared_tmp):
    problem, states = solved
    source = np.ones((4, problem.n_owned_source))
    files = write_fields(
        shared_tmp / "out" / "fields",
        problem,
        {"u": states, "g": source},
        problem.time.times,
        spaces={"g": "G"},
    )
    # One VTX file per function space (state space V, source space G).
    assert [f.name for f in files] == ["fields_u.bp", "fields_g.bp"]
    COMM.barrier()
    for f in files:
        assert f.exists() and _tree_size(f) > 0


def test_write_fields_xdmf_reads_back(solved, shared_tmp):
    problem, states = solved
    files = write_fields(
        shared_tmp / "fields.xdmf",
        problem,
        {"u": states, "twice": 2 * states},
        problem.time.times,
        fmt="xdmf",
    )
    assert [f.name for f in files] == ["fields.xdmf"]
    COMM.barrier()
    assert files[0].stat().st_size > 0
    assert files[0].with_suffix(".h5").stat().st_size > 0
    text = files[0].read_text()
    assert (
        text.count('<Attribute Name="u"') == 4
        and text.count('<Attribute Name="twice"') == 4
    )
    assert text.count("<Time Value=") == 8
    with dolfinx.io.XDMFFile(COMM, files[0], "r") as xdmf:
        mesh = xdmf.read_mesh()
    tdim = mesh.topology.dim
    assert (
        mesh.topology.index_map(tdim).size_global
        == problem.mesh.topology.index_map(tdim).size_global
        == 64
    )


def test_write_fields_errors(solved, shared_tmp):
    problem, states = solved
    with pytest.raises(ValueError, match="fmt"):
        write_fields(
            shared_tmp / "f", problem, {"u": states}, problem.time.times, fmt="vtk"
        )
    with pytest.raises(ValueError, match="shape|values per level"):
        write_fields(
            shared_tmp / "f", problem, {"u": states[:, :3]}, problem.time.times
        )
    with pytest.raises(ValueError, match="name"):
        write_fields(shared_tmp / "f", problem, {"a b": states}, problem.time.times)


def test_write_fields_quadrature_source(shared_tmp):
    problem = paper_problem("heat", nx=4, ny=8, n_steps=1, source="quadrature")
    pts = problem.source_points()
    # A linear function is reproduced exactly by the L2 projection onto P1.
    g = np.stack([pts[:, 0] + 2 * pts[:, 1], np.ones(len(pts))])
    proj = QuadratureProjector(problem, "test_projection_")
    out = dolfinx.fem.Function(proj.W)
    proj.project(g[0], out)
    x = proj.W.tabulate_dof_coordinates()
    np.testing.assert_allclose(out.x.array, x[:, 0] + 2 * x[:, 1], atol=1e-9)
    proj.destroy()
    files = write_fields(
        shared_tmp / "q", problem, {"g": g}, problem.time.times, fmt="vtx", spaces={"g": "G"}
    )
    files += write_fields(
        shared_tmp / "q", problem, {"g": g}, problem.time.times, fmt="xdmf", spaces={"g": "G"}
    )
    COMM.barrier()
    for f in files:
        assert f.exists() and _tree_size(f) > 0


# ---------------------------------------------------------------------------
# gathering and plots
# ---------------------------------------------------------------------------
def _linear_field(mesh, degree=1):
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    f = dolfinx.fem.Function(V)
    f.interpolate(lambda x: 1.0 + x[0] + 3.0 * x[1] ** 2)
    return V, f


def test_gather_owned_global_and_partition_independent():
    mesh = dolfinx.mesh.create_rectangle(
        COMM, [[0.0, 0.0], [0.5, 1.0]], [4, 8], dolfinx.mesh.CellType.triangle
    )
    V, f = _linear_field(mesh, degree=2)
    res = gather_owned(f.x.array, V, COMM)
    # The same computation on a serial mesh of the same geometry.
    mesh1 = dolfinx.mesh.create_rectangle(
        MPI.COMM_SELF, [[0.0, 0.0], [0.5, 1.0]], [4, 8], dolfinx.mesh.CellType.triangle
    )
    V1, f1 = _linear_field(mesh1, degree=2)
    X1, U1 = gather_owned(f1.x.array, V1, MPI.COMM_SELF)
    if COMM.rank != 0:
        assert res is None
        return
    X, U = res
    assert X.shape == (V.dofmap.index_map.size_global, 2) == (9 * 17, 2)
    np.testing.assert_allclose(U, 1.0 + X[:, 0] + 3.0 * X[:, 1] ** 2, atol=1e-12)
    o, o1 = np.lexsort(np.round(X, 10).T[::-1]), np.lexsort(np.round(X1, 10).T[::-1])
    np.testing.assert_allclose(X[o], X1[o1], atol=1e-14)
    np.testing.assert_allclose(U[o], U1[o1], atol=1e-12)


def test_gather_owned_stacked_and_owned_only(solved):
    problem, states = solved
    res = gather_owned(states, problem.V, COMM)
    res_owned = gather_owned(states[:, : problem.n_owned], problem.V, COMM)
    tris = gather_triangles(problem.V, COMM)
    if COMM.rank == 0:
        n = problem.V.dofmap.index_map.size_global
        assert res[1].shape == (4, n)
        np.testing.assert_array_equal(res[1], res_owned[1])
        assert tris.shape == (64, 3) and tris.min() == 0 and tris.max() == n - 1
    with pytest.raises(ValueError, match="do not fit"):
        gather_owned(states[:, :2], problem.V, COMM)


def test_plots_write_png(solved, shared_tmp):
    problem, states = solved
    path = shared_tmp / "history.csv"
    h = History(path, COMM)
    for e in range(1, 11):
        h.append(epoch=e, loss=10.0**-e, relative_rmse=1.0 / e, learning_rate=1e-3)
    COMM.barrier()
    plot_history(path, shared_tmp / "history.png", COMM, title="test history")
    other = states * 0.9 + 0.01
    plot_comparison(
        shared_tmp / "plots" / "comparison.png",
        problem,
        states,
        other,
        [0, 1, -1],
        labels=("u", "h"),
        title="test",
    )
    for name in ("history.png", "plots/comparison.png"):
        _rank0_file_check(shared_tmp / name)
        if COMM.rank == 0:
            assert (shared_tmp / name).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="out of range"):
        plot_comparison(shared_tmp / "x.png", problem, states, other, [7])


def test_plot_comparison_p2(shared_tmp):
    problem = paper_problem("heat", nx=3, ny=6, n_steps=1, degree=2)
    _, f = _linear_field(problem.mesh, degree=2)
    a = np.stack([f.x.array, 2 * f.x.array])
    plot_comparison(shared_tmp / "p2.png", problem, a, 0.5 * a, [1])
    _rank0_file_check(shared_tmp / "p2.png")


# ---------------------------------------------------------------------------
# console
# ---------------------------------------------------------------------------
def test_progress_quiet_prints_nothing(capfd):
    with Progress(5, COMM, quiet=True) as bar:
        for _ in range(5):
            bar.update(0.5, 0.1)
        bar.write("hidden")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_rank0_only(capfd):
    with Progress(3, COMM, initial=1) as bar:
        bar.update(1.5e-3, 0.25)
        bar.update(1.0e-3, 0.20)
    out, err = capfd.readouterr()
    if COMM.rank == 0:
        assert "3/3" in err and "1.000e-03" in err
    else:
        assert out == "" and err == ""


def test_rank0_print(capfd):
    rank0_print(COMM, "hello", 1)
    out, _ = capfd.readouterr()
    assert out == ("hello 1\n" if COMM.rank == 0 else "")
