"""Training runs end to end: optimizers, resume, outputs, failures, bad configs."""

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.cli import main
from femnpde.io.output import History
from femnpde.fem.solver import SolverError
from femnpde.app.sweep import sweep
from femnpde.app.training import forward, train
from conftest import before_evaluation, history_columns, write_on_root

SMALL = """
[mesh]
cells = [5, 10]
[time]
n_steps = 8
[network]
neurons = 8
[optimizer]
kind = "{kind}"
lr = {lr}
[optimizer.schedule]
kind = "{schedule}"
[run]
iterations = {iterations}
checkpoint_every = 2
"""


def _config(path, kind="adam", lr=0.05, schedule="plateau", iterations=6):
    return write_on_root(path, SMALL.format(kind=kind, lr=lr, schedule=schedule, iterations=iterations))


@pytest.mark.parametrize(
    "kind,lr,schedule", [("gd", 20.0, "step"), ("adam", 0.05, "plateau"), ("adam", 0.05, "cosine"), ("lbfgs", 1.0, "none")]
)
def test_every_optimizer_lowers_the_loss(shared_tmp_path, kind, lr, schedule):
    iterations = 20 if kind == "lbfgs" else 8
    cfg = _config(shared_tmp_path / "c.toml", kind=kind, lr=lr, schedule=schedule, iterations=iterations)
    res = train(cfg, out=shared_tmp_path / "run", quiet=True, write_outputs=False)
    hist = History.read(shared_tmp_path / "run" / "history.csv")
    assert len(hist["epoch"]) == iterations
    assert np.all(np.isfinite(hist["loss"]))
    assert res["best_loss"] < 0.7 * hist["loss"][0], hist["loss"]
    assert (shared_tmp_path / "run" / "checkpoint.npz").is_file()


@pytest.mark.parametrize("kind", ["adam", "gd"])
def test_resume_reproduces_uninterrupted_history(shared_tmp_path, kind):
    cfg = _config(shared_tmp_path / "c.toml", kind=kind, lr=0.05 if kind == "adam" else 20.0, iterations=7)
    train(cfg, out=shared_tmp_path / "full", quiet=True, write_outputs=False)
    train(cfg, out=shared_tmp_path / "part", overrides=["run.iterations=3"], quiet=True, write_outputs=False)
    train(cfg, resume=shared_tmp_path / "part", quiet=True, write_outputs=False)
    full = history_columns(shared_tmp_path / "full" / "history.csv")
    resumed = history_columns(shared_tmp_path / "part" / "history.csv")
    assert list(resumed["epoch"]) == list(range(7))
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key], err_msg=key)


def test_resume_with_changed_config_is_refused(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml", iterations=2)
    train(cfg, out=shared_tmp_path / "run", quiet=True, write_outputs=False)
    with pytest.raises(ValueError, match="network.neurons"):
        train(cfg, resume=shared_tmp_path / "run", overrides=["network.neurons=9"], quiet=True)


def test_failure_keeps_last_good_checkpoint(shared_tmp_path, monkeypatch):
    cfg = _config(shared_tmp_path / "c.toml", iterations=10)

    def flaky(n, run):
        if n == 6:
            raise SolverError("Newton did not converge (injected)")

    before_evaluation(monkeypatch, flaky)
    with pytest.raises(SolverError, match="last good checkpoint"):
        train(cfg, out=shared_tmp_path / "run", quiet=True, write_outputs=False)
    from femnpde.io.output import load_checkpoint

    ck = load_checkpoint(shared_tmp_path / "run" / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck["epoch"] == 4  # checkpoints every 2 epochs; epoch 5 failed
    monkeypatch.undo()
    res = train(cfg, resume=shared_tmp_path / "run", quiet=True, write_outputs=False)
    assert res["epochs"] == 10


def test_sweep_summary(shared_tmp_path):
    cfg = _config(shared_tmp_path / "c.toml", iterations=2)
    rows = sweep(cfg, [2, 4], out=shared_tmp_path / "sweep", quiet=True)
    assert [r["N"] for r in rows] == [2, 4]
    assert (shared_tmp_path / "sweep" / "summary.csv").is_file()
    assert (shared_tmp_path / "sweep" / "rmse_vs_N.png").is_file()


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[network]\nneurns = 3\n", "network.neurns"),
        ("[network]\nneurons = 'many'\n", "network.neurons"),
        ("[time]\ntheta = 0.2\n", "time.theta"),
        ("[optimizer]\nkind = 'sgd'\n", "optimizer.kind"),
        ("[mesh]\nkind = 'file'\npath = 'nothere.msh'\n", "nothere.msh"),
        ("[data]\ntarget = 'easy'\n", "data.target"),
        ("[network\n", "bad.toml:1"),
    ],
)
def test_bad_configs_exit_2_with_specific_message(shared_tmp_path, capsys, body, needle):
    path = write_on_root(shared_tmp_path / "bad.toml", body)
    code = main(["train", str(path), "--out", str(shared_tmp_path / "x"), "--quiet"])
    assert code == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert needle in err, err
        assert "Traceback" not in err


def test_bad_override_exit_2(shared_tmp_path, capsys):
    cfg = _config(shared_tmp_path / "c.toml", iterations=1)
    assert main(["train", str(cfg), "--set", "time.n_steps=-3", "--quiet"]) == 2
    if MPI.COMM_WORLD.rank == 0:
        assert "time.n_steps" in capsys.readouterr().err
