"""``femnpde sweep``: seeds, skip/resume/extend of a re-run sweep, refusal of another configuration."""

import json

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.cli import main
from femnpde.app.sweep import RESULT_FILE, read_result, sweep
from femnpde.fem.solver import SolverError
from femnpde.io.history import History

TINY = """
[mesh]
cells = [4, 8]
[time]
n_steps = 4
[network]
neurons = 2
[optimizer]
kind = "adam"
lr = 0.05
[run]
iterations = {iterations}
checkpoint_every = 2
"""


def _config(path, iterations=3):
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(TINY.format(iterations=iterations))
    MPI.COMM_WORLD.Barrier()
    return path


def _columns(path):
    return {k: v for k, v in History.read(path).items() if k != "wall_time"}


def _same_history(a, b):
    ha, hb = _columns(a), _columns(b)
    assert list(ha["epoch"]) == list(hb["epoch"])
    for key in ha:
        np.testing.assert_array_equal(ha[key], hb[key], err_msg=key)


def _run(cfg, out, **kwargs):
    return sweep(cfg, [2], out=out, seeds=[0, 1], quiet=True, write_outputs=False, **kwargs)


def test_seeds_make_one_run_each_and_a_rerun_skips_them(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml")
    rows = _run(cfg, shared_tmp_path / "sw")
    assert [(r["N"], r["seed"], r["status"], r["epochs"]) for r in rows] == [(2, 0, "trained", 3), (2, 1, "trained", 3)]
    h0 = History.read(shared_tmp_path / "sw" / "N2-seed0" / "history.csv")
    h1 = History.read(shared_tmp_path / "sw" / "N2-seed1" / "history.csv")
    assert h0["relative_rmse"][0] != h1["relative_rmse"][0]  # another initial draw
    assert read_result(shared_tmp_path / "sw" / "N2-seed1").seed == 1
    csv = (shared_tmp_path / "sw" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("N,seed,") and len(csv) == 3
    before = (shared_tmp_path / "sw" / "N2-seed0" / "history.csv").read_text()
    again = _run(cfg, shared_tmp_path / "sw")
    assert [r["status"] for r in again] == ["skipped", "skipped"]
    assert [r["best_rmse"] for r in again] == [r["best_rmse"] for r in rows]
    assert (shared_tmp_path / "sw" / "N2-seed0" / "history.csv").read_text() == before


def test_interrupted_sweep_resumes_from_the_checkpoint(shared_tmp_path, monkeypatch):
    import femnpde.app.training as training

    cfg = _config(shared_tmp_path / "c.toml", iterations=5)
    _run(cfg, shared_tmp_path / "full")
    real_build = training.build_run

    def failing_build(cfg, *args, **kwargs):
        run = real_build(cfg, *args, **kwargs)
        real = run.rf.value_and_gradient
        calls = {"n": 0}

        def flaky(theta):
            calls["n"] += 1
            if cfg["network"]["seed"] == 1 and calls["n"] == 4:  # seed 1's epoch 3, after the checkpoint at epoch 2
                raise SolverError("interrupted (injected)")
            return real(theta)

        run.rf.value_and_gradient = flaky
        return run

    monkeypatch.setattr(training, "build_run", failing_build)
    with pytest.raises(SolverError):
        _run(cfg, shared_tmp_path / "part")
    assert not (shared_tmp_path / "part" / "N2-seed1" / RESULT_FILE).exists()
    monkeypatch.undo()
    rows = _run(cfg, shared_tmp_path / "part")
    assert [r["status"] for r in rows] == ["skipped", "resumed"]
    for name in ("N2-seed0", "N2-seed1"):
        _same_history(shared_tmp_path / "part" / name / "history.csv", shared_tmp_path / "full" / name / "history.csv")


def test_larger_budget_extends_finished_runs(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml", iterations=3)
    _run(cfg, shared_tmp_path / "sw")
    rows = _run(cfg, shared_tmp_path / "sw", overrides=["run.iterations=5"])
    assert [(r["status"], r["epochs"]) for r in rows] == [("extended", 5), ("extended", 5)]
    _run(cfg, shared_tmp_path / "full", overrides=["run.iterations=5"])
    _same_history(shared_tmp_path / "sw" / "N2-seed1" / "history.csv", shared_tmp_path / "full" / "N2-seed1" / "history.csv")
    with pytest.raises(ValueError, match="N2-seed0.*run.iterations"):
        _run(cfg, shared_tmp_path / "sw")  # fewer epochs than the finished runs


def test_another_configuration_is_refused_unless_overwrite(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml")
    _run(cfg, shared_tmp_path / "sw")
    before = (shared_tmp_path / "sw" / "N2-seed0" / RESULT_FILE).read_text()
    with pytest.raises(ValueError, match="N2-seed0.*optimizer.lr"):
        _run(cfg, shared_tmp_path / "sw", overrides=["optimizer.lr=0.1"])
    assert (shared_tmp_path / "sw" / "N2-seed0" / RESULT_FILE).read_text() == before  # nothing lost
    args = ["sweep", str(cfg), "--N", "2", "--seeds", "0,1", "--out", str(shared_tmp_path / "sw"), "--quiet",
            "--no-outputs", "--set", "optimizer.lr=0.1"]
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    saved = json.loads((shared_tmp_path / "sw" / "N2-seed0" / RESULT_FILE).read_text())
    assert "lr = 0.1" in saved["config"] and saved["status"] == "trained"


def test_unfinished_run_of_another_configuration_is_refused(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml")
    _run(cfg, shared_tmp_path / "sw")
    if MPI.COMM_WORLD.rank == 0:
        (shared_tmp_path / "sw" / "N2-seed1" / RESULT_FILE).unlink()  # as if killed before it finished
    MPI.COMM_WORLD.Barrier()
    with pytest.raises(ValueError, match="N2-seed1.*network.beta"):
        sweep(cfg, [2], out=shared_tmp_path / "sw", seeds=[1], quiet=True, write_outputs=False,
              overrides=["network.beta=0.7"])


@pytest.mark.serial
@pytest.mark.parametrize("seeds", ["0,x", "-1", "1,1", ""])
def test_bad_seeds_exit_2(seeds, capsys):
    assert main(["sweep", "demos/quickstart.toml", "--N", "10", "--seeds", seeds]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_run_written_before_a_new_key_is_still_recognised(shared_tmp_path):
    """A finished run whose saved configuration lacks a key added since (time.nonlinear) is skipped, not refused."""
    cfg = _config(shared_tmp_path / "c.toml")
    rows = sweep(cfg, [2], out=shared_tmp_path / "sw", seeds=[0], quiet=True, write_outputs=False)
    assert [r["status"] for r in rows] == ["trained"]
    run = shared_tmp_path / "sw" / "N2-seed0"
    if MPI.COMM_WORLD.rank == 0:
        result = json.loads((run / RESULT_FILE).read_text())
        assert 'nonlinear = "implicit"\n' in result["config"]
        result["config"] = result["config"].replace('nonlinear = "implicit"\n', "")
        (run / RESULT_FILE).write_text(json.dumps(result))
        text = (run / "config.toml").read_text()
        (run / "config.toml").write_text(text.replace('nonlinear = "implicit"\n', ""))
    MPI.COMM_WORLD.Barrier()
    again = sweep(cfg, [2], out=shared_tmp_path / "sw", seeds=[0], quiet=True, write_outputs=False)
    assert [r["status"] for r in again] == ["skipped"]
