"""Reliability (issue 14): no hang, no silent success, no silently ignored input, no lost run.

Every test launches ``femnpde`` in a subprocess (``mpirun -n 2`` for two
ranks) under a timeout, so a hang fails the test instead of blocking the
suite.  The tests are ``serial`` (they start their own MPI jobs); each runs
on 1 and 2 ranks.  The table-driven bad-input matrix is
``tests/test_reliability_matrix.py``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.serial

HERE = pathlib.Path(__file__).parent
INJECT = HERE / "reliability" / "inject.py"
TIMEOUT = 120  # seconds; a run of these configurations takes a few seconds

TINY = """
[mesh]
cells = [4, 8]
[time]
n_steps = 4
[network]
neurons = 3
[optimizer]
lr = 0.05
[run]
iterations = {iterations}
checkpoint_every = {every}
"""


def tiny(path: pathlib.Path, iterations: int = 3, every: int = 1, extra: str = "", mesh: bool = True) -> pathlib.Path:
    """A tiny heat run configuration (without its [mesh] section if not ``mesh``)."""
    text = TINY.format(iterations=iterations, every=every)
    if not mesh:
        text = text.replace("[mesh]\ncells = [4, 8]\n", "")
    path.write_text(text + extra)
    return path


def femnpde(args, ranks: int = 1, cwd=None, env=None, timeout: float = TIMEOUT, inject=None):
    """Run ``femnpde ARGS`` on ``ranks`` ranks; returns (exit code, stdout, stderr, seconds).

    ``inject = (phase, rank)`` runs it through tests/reliability/inject.py.
    """
    cmd = [sys.executable, "-m", "femnpde"] if inject is None else [sys.executable, str(INJECT), *inject]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), *cmd]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "reliability"), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    for var in [v for v in full_env if v.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_"))]:
        del full_env[var]  # never inherit the launcher of an enclosing MPI job
    t0 = time.monotonic()
    try:
        proc = subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"femnpde {' '.join(map(str, args))} on {ranks} rank(s) hung (no exit within {timeout} s); "
                    f"stderr: {err.stderr!r}")
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


def prepare(args) -> None:
    """Run ``femnpde ARGS`` in this process, on one rank, and require success: a run a test then works on.

    What a test checks runs in a subprocess (:func:`femnpde`); the runs it
    starts from need no process of their own (the files are the same on any
    number of ranks).
    """
    from femnpde.app.cli import main

    assert main([str(a) for a in args]) == 0


RANKS = [1, 2]
RANKS_1 = [1, pytest.param(2, marks=pytest.mark.slow)]  # 2 ranks with -m slow (the suite stays fast)

# ---------------------------------------------------------------------------
# 1. an error on one rank ends every rank, message printed once

PHASES = {  # phase -> (expected exit code, words of the message)
    "config": (2, "injected config error"),
    "mesh": (2, "injected mesh error"),
    "user": (2, "injected user error"),
    "data": (2, "injected data error"),
    "solver": (3, "injected solver error"),
    "outputs": (2, "injected output error"),
}


#: Phases whose failure on rank 0 (of 2) runs in the default suite; the others fail there on rank 1 (the
#: harder case: the message is printed by rank 0, which did not fail) and on rank 0 with -m slow.
ROOT_FAILURE_PHASES = ("config", "solver")


def _phase_rows():
    for phase in sorted(PHASES):
        yield pytest.param(phase, 1, "0", marks=pytest.mark.slow)
        yield pytest.param(phase, 2, "0", marks=[] if phase in ROOT_FAILURE_PHASES else [pytest.mark.slow])
        yield pytest.param(phase, 2, "1")
        yield pytest.param(phase, 2, "all", marks=pytest.mark.slow)


@pytest.mark.parametrize("phase,ranks,fail_rank", _phase_rows())
def test_error_on_some_ranks_ends_every_rank(tmp_path, phase, ranks, fail_rank):
    cfg = tiny(tmp_path / "c.toml", iterations=2)
    args = ["train", cfg, "--out", tmp_path / "run", "--quiet"]
    env = {}
    if phase == "user":
        if fail_rank == "all":
            pytest.skip("the user module fails on one rank")
        args += ["--set", "pde.residual=usermod:fails_on_one_rank"]
        env["FAIL_RANK"] = fail_rank
        inject = None
    else:
        inject = (phase, fail_rank)
    code, out, err, seconds = femnpde(args, ranks, env=env, inject=inject, timeout=90)
    expected, words = PHASES[phase]
    assert code == expected, err
    assert err.count(words) == 1, err  # printed once, not once per rank
    assert "Traceback" not in err, err


# ---------------------------------------------------------------------------
# 2. user code that exits is reported, never a silent success

@pytest.mark.parametrize("ranks", RANKS_1)
@pytest.mark.parametrize("factory,words", [
    ("calls_sys_exit", "sys.exit(None)"),
    ("raises_keyboard_interrupt", "KeyboardInterrupt"),
    ("residual_calls_sys_exit", "sys.exit(0)"),
    ("returns_none", "expected a callable residual"),
])
def test_user_module_exit_is_an_error(tmp_path, ranks, factory, words):
    cfg = tiny(tmp_path / "c.toml", iterations=2)
    code, out, err, _ = femnpde(["train", cfg, "--out", tmp_path / "run", "--quiet", "--set",
                                 f"pde.residual=usermod:{factory}"], ranks)
    # (2 ranks of calls_sys_exit run by default in test_user_module_exit_on_two_ranks)
    assert code == 2, err
    assert words in err and "pde.residual" in err, err
    assert err.count("femnpde: error") == 1, err


def test_user_module_exit_on_two_ranks(tmp_path):
    test_user_module_exit_is_an_error(tmp_path, 2, "calls_sys_exit", "sys.exit(None)")


# ---------------------------------------------------------------------------
# 3. PETSc options are used or rejected

# The bad options are rows of the matrix (tests/test_reliability_matrix.py): a solver prefix in the key,
# "-malloc_dump", "foo bar", an option no solver reads, invalid types and values, PETSC_OPTIONS.


@pytest.mark.parametrize("ranks", RANKS_1)
def test_valid_petsc_options_train(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", iterations=1)
    code, out, err, _ = femnpde(["train", cfg, "--out", tmp_path / "run", "--quiet", "--set",
                                 'solver.petsc_options={ksp_type = "cg", pc_type = "jacobi", ksp_rtol = 1e-12}'],
                                ranks, env={"PETSC_OPTIONS": "-femnpde_forward_ksp_max_it 500"})
    assert code == 0, err


# ---------------------------------------------------------------------------
# 4. another run's directory is never overwritten or mixed in

@pytest.mark.parametrize("ranks", RANKS)
def test_out_holding_another_run_is_refused(tmp_path, ranks):
    heat = tiny(tmp_path / "heat.toml", iterations=2)
    ac = tiny(tmp_path / "ac.toml", iterations=2, extra='[pde]\ngamma = 0.02\n')
    run = tmp_path / "run"
    prepare(["train", heat, "--out", run, "--quiet"])
    before = {p: (run / p).read_bytes() for p in ("config.toml", "history.csv", "checkpoint.npz")}
    code, out, err, _ = femnpde(["train", ac, "--out", run, "--quiet"], ranks)
    assert code == 2 and "is not empty" in err and "--overwrite" in err and "--resume" in err, err
    assert {p: (run / p).read_bytes() for p in before} == before  # untouched
    assert not (run / ".lock").exists()  # the run-directory lock is released after an error
    code, out, err, _ = femnpde(["train", ac, "--out", run, "--quiet", "--overwrite"], ranks)
    assert code == 0, err
    assert not (run / ".lock").exists()
    assert 'gamma = 0.02' in (run / "config.toml").read_text()
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()
              if line and line[0].isdigit()]
    assert epochs == ["0", "1"]


@pytest.mark.parametrize("ranks", RANKS_1)
def test_resume_checks_the_checkpoints_configuration(tmp_path, ranks):
    heat = tiny(tmp_path / "heat.toml", iterations=2)
    ac = tiny(tmp_path / "ac.toml", iterations=4, extra='[pde]\ngamma = 0.02\n')
    a, b = tmp_path / "a", tmp_path / "b"
    prepare(["train", heat, "--out", a, "--quiet"])
    prepare(["train", ac, "--out", b, "--quiet", "--set", "run.iterations=2"])
    shutil.copy(a / "checkpoint.npz", b / "checkpoint.npz")  # another run's checkpoint
    code, out, err, _ = femnpde(["train", ac, "--resume", b, "--quiet"], ranks)
    assert code == 2, err
    assert f"checkpoint {b / 'checkpoint.npz'}" in err and "pde.gamma" in err, err


# ---------------------------------------------------------------------------
# 5. checkpoints that do not fit; stray temporaries

@pytest.mark.parametrize("ranks", RANKS_1)
def test_checkpoint_of_another_width_names_the_file(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", iterations=1)
    prepare(["train", cfg, "--out", tmp_path / "w5", "--quiet", "--set", "network.neurons=5"])
    ck = tmp_path / "w5" / "checkpoint.npz"
    code, out, err, _ = femnpde(["forward", cfg, "--out", tmp_path / "f", "--params", ck], ranks)
    assert code == 2, err
    assert str(ck) in err and "shape (25,)" in err and "15 float parameters" in err, err


def _rewrite_checkpoint(path, **changes):
    from femnpde.io.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(path, None)
    ck.update(changes)
    save_checkpoint(path, None, epoch=ck["epoch"], params=ck["params"], optimizer_state=ck["optimizer_state"],
                    schedule_state=ck["schedule_state"], extra=ck["extra"])


@pytest.mark.parametrize("ranks", RANKS_1)
def test_nan_checkpoint_is_refused_and_stray_temporaries_removed(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", iterations=2)
    run = tmp_path / "run"
    prepare(["train", cfg, "--out", run, "--quiet"])
    stray = run / ".checkpoint.npz.k1ll3d.tmp"
    stray.write_bytes(b"partial")
    good = (run / "checkpoint.npz").read_bytes()
    _rewrite_checkpoint(run / "checkpoint.npz", params=np.full(15, np.nan))
    code, out, err, _ = femnpde(["train", cfg, "--resume", run, "--quiet", "--set", "run.iterations=4"], ranks)
    assert code == 2, err
    assert "checkpoint.npz is corrupt" in err and "not finite" in err, err
    assert not stray.exists()
    (run / "checkpoint.npz").write_bytes(good)
    code, out, err, _ = femnpde(["train", cfg, "--resume", run, "--quiet", "--set", "run.iterations=4"], ranks)
    assert code == 0, err


# ---------------------------------------------------------------------------
# 6. divergence is caught; plots survive extreme values

@pytest.mark.parametrize("ranks", RANKS)
def test_divergence_stops_with_exit_3(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", iterations=30, every=1)
    code, out, err, _ = femnpde(["train", cfg, "--out", tmp_path / "run", "--quiet", "--set", "optimizer.lr=1e4"],
                                ranks)
    assert code == 3, err
    assert "diverged" in err and "The last good checkpoint" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / ".lock").exists()  # released after a solver failure


@pytest.mark.parametrize("values", [[0.15, 0.02, 4.5e282, np.inf, np.nan], [1e-2, 1e5, 4.5e282, 1.7e308, 1e-300]])
def test_history_plot_survives_extreme_values(tmp_path, values):
    from femnpde.io.history import History
    from femnpde.io.plots import plot_history

    h = History(tmp_path / "history.csv", None, overwrite=True)
    for k, J in enumerate(values):
        h.append(epoch=k, loss=J, relative_rmse=J, relative_max_error=J, gradient_norm=J, learning_rate=1.0,
                 wall_time=0.0)
    plot_history(tmp_path / "history.csv", tmp_path / "history.png", None)
    assert (tmp_path / "history.png").stat().st_size > 0


# ---------------------------------------------------------------------------
# 7. resource exhaustion is estimated before allocating

@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("override,key", [
    ("network.neurons=1000000000", "network.neurons"),
    ("time.n_steps=1000000000", "time.n_steps"),
    pytest.param("time.n_steps=99999999999999999999", "time.n_steps", marks=pytest.mark.slow),
    pytest.param("mesh.cells=[100000, 100000]", "mesh size", marks=pytest.mark.slow),
])
def test_memory_is_estimated_before_allocating(tmp_path, ranks, override, key):
    cfg = tiny(tmp_path / "c.toml")
    code, out, err, _ = femnpde(["train", cfg, "--out", tmp_path / "run", "--quiet", "--set", override], ranks)
    assert code == 2, err
    assert f"reduce {key}" in err and "GiB" in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------
# 8. output hygiene

@pytest.mark.parametrize("ranks", RANKS)
def test_huge_value_is_cut_in_the_message(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", extra='[pde]\npreset = "' + "x" * 10_000_000 + '"\n')
    code, out, err, seconds = femnpde(["train", cfg, "--out", tmp_path / "run"], ranks)
    assert code == 2 and "pde.preset" in err and "(10000000 characters)" in err, err[:1000]
    assert len(err) < 3000, len(err)


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("args,words", [
    (["trian"], "invalid choice: 'trian'"),
    (["smoke", "--n", "0"], "argument --n: 0 is out of range"),
    (["smoke", "--steps", "x"], "argument --steps: 'x' is not an integer"),
    (["train"], "the following arguments are required: config"),
])
def test_usage_errors_print_once_without_colour(ranks, args, words):
    code, out, err, _ = femnpde(args, ranks, env={"FORCE_COLOR": "1", "PYTHON_COLORS": "1"})
    assert code == 2, err
    assert err.count(words) == 1 and err.count("usage:") == 1, err
    assert "\x1b[" not in err, err


# ---------------------------------------------------------------------------
# 9. a solver failure before the first checkpoint claims no checkpoint

@pytest.mark.parametrize("ranks", RANKS)
def test_failure_before_first_checkpoint_claims_none(tmp_path, ranks):
    cfg = tiny(tmp_path / "c.toml", iterations=5, every=4)
    code, out, err, _ = femnpde(["train", cfg, "--out", tmp_path / "run", "--quiet"], ranks, inject=("solver", "all"))
    assert code == 3, err
    assert "No checkpoint was written" in err and "--resume" not in err, err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
