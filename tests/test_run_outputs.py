"""What a training run writes, read back and checked against an independent solve.

* ``fields/u.bp`` (the adios4dolfinx checkpoint) read back equals the
  forward solution at the checkpointed parameters;
* ``femnpde forward --params checkpoint.npz`` reproduces the trained final loss;
* P1 and P2 runs write their fields in both formats (VTX above; XDMF: P2
  crashes today, issue 15).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.cli import main
from femnpde.app.config import build_run, load_config
from femnpde.app.training import forward, train
from femnpde.io.fielddata import read_field_data
from femnpde.io.checkpoint import load_checkpoint
from conftest import write_on_root

SMALL = """
[mesh]
cells = [4, 8]
[pde]
degree = {degree}
[time]
n_steps = 6
[network]
neurons = 6
[optimizer]
kind = "adam"
lr = 0.05
[run]
iterations = 3
checkpoint_every = 2
field_format = "{fmt}"
"""


def _config(path, degree=1, fmt="vtx"):
    return write_on_root(path, SMALL.format(degree=degree, fmt=fmt))


def _disable_plots(monkeypatch):
    """Skip the PNG plots (seconds each on a loaded machine; tested in test_output.py)."""
    import femnpde.app.training as training

    monkeypatch.setattr(training, "plot_comparison", lambda *args, **kwargs: None)
    monkeypatch.setattr(training, "plot_history", lambda *args, **kwargs: None)


@pytest.fixture
def no_plots(monkeypatch):
    _disable_plots(monkeypatch)


def _trained(tmp, degree=1, fmt="vtx"):
    cfg = _config(tmp / f"c{degree}{fmt}.toml", degree, fmt)
    out = tmp / f"run{degree}{fmt}"
    res = train(cfg, out=out, quiet=True)
    return cfg, out, res


@pytest.mark.parametrize("degree", [1, 2])
def test_state_checkpoint_reads_back_as_the_solution(shared_tmp_path, degree, monkeypatch):
    if degree == 2:
        _disable_plots(monkeypatch)
    cfg, out, res = _trained(shared_tmp_path, degree)
    ck = load_checkpoint(out / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck["epoch"] == 3
    run = build_run(load_config(out / "config.toml"), MPI.COMM_WORLD, petsc_options_prefix=f"readback{degree}_")
    try:
        J = run.rf(np.asarray(ck["params"]))
        assert J == pytest.approx(res["final_loss"], rel=1e-12)
        expected = run.rf.states.to_array()[:, : run.problem.n_owned]
        u = read_field_data(out / "fields" / "u.bp", run.problem, name="u")
        assert u.shape == expected.shape
        scale = np.max(np.abs(expected))
        assert MPI.COMM_WORLD.allreduce(float(np.max(np.abs(u - expected))), op=MPI.MAX) <= 1e-13 * scale
        assert scale > 0
    finally:
        run.destroy()
    # One VTX file per function space: u, h and the adjoint together, the network source and the target together.
    for group in ("u-h-adjoint", "g_theta-g_star"):
        assert (out / "fields" / f"fields_{group}.bp").exists(), group
    plots = ("history.png", "u_vs_h.png", "g_vs_gstar.png") if degree == 1 else ()
    for name in ("config.toml", "history.csv") + plots:
        assert (out / name).is_file(), name


def test_forward_command_reproduces_the_trained_loss(shared_tmp_path, capsys, no_plots):
    cfg, out, res = _trained(shared_tmp_path)
    api = forward(out / "config.toml", out=shared_tmp_path / "fwd_api", params=out / "checkpoint.npz")
    assert api["loss"] == pytest.approx(res["final_loss"], rel=1e-12)
    capsys.readouterr()
    code = main(["forward", str(out / "config.toml"), "--params", str(out / "checkpoint.npz"),
                 "--out", str(shared_tmp_path / "fwd_cli")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    if MPI.COMM_WORLD.rank == 0:
        loss = float(re.search(r"loss (\S+),", printed).group(1))
        assert loss == pytest.approx(res["final_loss"], rel=1e-6), printed
    # The initial parameters give a different loss (the check is not vacuous).
    run = build_run(load_config(out / "config.toml"), MPI.COMM_WORLD, petsc_options_prefix="fwd_initial_")
    try:
        initial = run.rf(run.network.params.copy())
    finally:
        run.destroy()
    assert abs(initial - res["final_loss"]) > 1e-6 * res["final_loss"]


def test_p2_training_writes_xdmf(shared_tmp_path, no_plots):
    _, out, res = _trained(shared_tmp_path, degree=2, fmt="xdmf")
    assert np.isfinite(res["final_loss"])
    assert list((out / "fields").glob("*.xdmf")), sorted(p.name for p in (out / "fields").iterdir())
