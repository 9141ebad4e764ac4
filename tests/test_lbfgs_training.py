"""L-BFGS training: resume from a checkpoint, and a failure reports the epoch it happened at."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.config import build_run, load_config
from femnpde.app.training import train
from femnpde.fem.solver import SolverError
from femnpde.io.checkpoint import load_checkpoint
from femnpde.io.history import History
from conftest import before_evaluation, write_on_root

CONFIG = """
[mesh]
cells = [4, 8]
[time]
n_steps = 6
[network]
neurons = 6
[optimizer]
kind = "lbfgs"
[optimizer.schedule]
kind = "none"
[run]
iterations = {iterations}
checkpoint_every = 2
"""


def _config(path, iterations):
    return write_on_root(path, CONFIG.format(iterations=iterations))


def test_lbfgs_resume_continues_from_the_checkpoint(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml", iterations=3)
    out = shared_tmp_path / "run"
    train(cfg, out=out, quiet=True, write_outputs=False)
    part = History.read(out / "history.csv")
    ck = load_checkpoint(out / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck["epoch"] == 3
    # The loss at the checkpointed parameters, computed independently.
    run = build_run(load_config(out / "config.toml"), MPI.COMM_WORLD, petsc_options_prefix="lbfgs_ck_")
    try:
        J_ck = run.rf(np.asarray(ck["params"]))
    finally:
        run.destroy()
    res = train(cfg, resume=out, overrides=["run.iterations=6"], quiet=True, write_outputs=False)
    full = History.read(out / "history.csv")
    assert res["epochs"] == 6
    np.testing.assert_array_equal(full["epoch"], np.arange(6))
    np.testing.assert_array_equal(full["loss"][:3], part["loss"])  # the first rows are kept
    # Resumed from the checkpoint: every later loss is below J at the checkpoint (L-BFGS descends).
    assert np.all(full["loss"][3:] < J_ck), (full["loss"], J_ck)
    assert np.all(np.diff(full["loss"]) <= 0), full["loss"]
    assert res["final_loss"] <= full["loss"][-1] * (1 + 1e-12)
    ck2 = load_checkpoint(out / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck2["epoch"] == 6


def test_lbfgs_failure_reports_its_epoch_and_keeps_the_checkpoint(shared_tmp_path, monkeypatch):
    cfg = _config(shared_tmp_path / "c.toml", iterations=10)
    rows = {}

    def flaky(n, run):
        if n == 8:
            rows["at_failure"] = len(History.read(shared_tmp_path / "run" / "history.csv")["epoch"])
            raise SolverError("Newton did not converge (injected)")

    before_evaluation(monkeypatch, flaky)
    with pytest.raises(SolverError) as info:
        train(cfg, out=shared_tmp_path / "run", quiet=True, write_outputs=False)
    epoch = rows["at_failure"]  # the epochs recorded before the failing one
    assert epoch >= 2, epoch
    assert f"training failed at epoch {epoch}:" in str(info.value), (epoch, str(info.value))
    assert "last good checkpoint" in str(info.value)
    ck = load_checkpoint(shared_tmp_path / "run" / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck["epoch"] == 2 * (epoch // 2)


def test_lbfgs_resume_follows_the_uninterrupted_trajectory(shared_tmp_path):
    """3 epochs, then resumed to 6: the losses and parameters of 6 uninterrupted epochs, bitwise."""
    cfg = _config(shared_tmp_path / "c.toml", iterations=6)
    whole, parts = shared_tmp_path / "whole", shared_tmp_path / "parts"
    train(cfg, out=whole, quiet=True, write_outputs=False)
    train(cfg, out=parts, overrides=["run.iterations=3"], quiet=True, write_outputs=False)
    train(cfg, resume=parts, quiet=True, write_outputs=False)
    a, b = History.read(whole / "history.csv"), History.read(parts / "history.csv")
    np.testing.assert_array_equal(b["epoch"], np.arange(6))
    np.testing.assert_array_equal(b["loss"], a["loss"])
    np.testing.assert_array_equal(b["gradient_norm"], a["gradient_norm"])
    ck_a = load_checkpoint(whole / "checkpoint.npz", MPI.COMM_WORLD)
    ck_b = load_checkpoint(parts / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck_a["epoch"] == ck_b["epoch"] == 6
    np.testing.assert_array_equal(ck_b["params"], ck_a["params"])
    for key in ("x", "g", "wa", "isave", "dsave"):  # the whole L-BFGS state, too
        np.testing.assert_array_equal(ck_b["optimizer_state"][key], ck_a["optimizer_state"][key])


def test_lbfgs_resume_from_a_checkpoint_without_memory_says_it_restarts(shared_tmp_path, capsys):
    """A checkpoint of femnpde before session 6 (``{"kind": "lbfgs"}`` only): the memory restarts, said on rank 0."""
    from femnpde.io.checkpoint import save_checkpoint

    cfg = _config(shared_tmp_path / "c.toml", iterations=3)
    out = shared_tmp_path / "run"
    train(cfg, out=out, quiet=True, write_outputs=False)
    ck = load_checkpoint(out / "checkpoint.npz", MPI.COMM_WORLD)
    save_checkpoint(out / "checkpoint.npz", MPI.COMM_WORLD, epoch=ck["epoch"], params=ck["params"],
                    optimizer_state={"kind": "lbfgs"}, schedule_state=None, extra=ck.get("extra"))
    capsys.readouterr()
    res = train(cfg, resume=out, overrides=["run.iterations=5"], quiet=True, write_outputs=False)
    assert res["epochs"] == 5
    out_text = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert "L-BFGS" in out_text and "memory restarts at epoch 3" in out_text, out_text
    else:
        assert out_text == ""
