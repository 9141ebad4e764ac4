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
