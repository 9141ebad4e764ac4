"""Runs with an m-output network: synthetic data with a target per output, the g fields of every output."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.config import ConfigError, build_run, validate
from femnpde.app.scenarios import target_source
from femnpde.app.training import train

COMM = MPI.COMM_WORLD
TWO = {
    "mesh": {"cells": [4, 8]},
    "time": {"n_steps": 4},
    "pde": {"residual": "tests.test_network_pde:two_coefficients_factory"},
    "network": {"kind": "mlp", "hidden": [5], "outputs": 2, "seed": 1},
    "run": {"iterations": 2},
}


def _cfg(target=None, outputs=2):
    cfg = {k: dict(v) for k, v in TWO.items()}
    cfg["network"]["outputs"] = outputs
    if target is not None:
        cfg["data"] = {"target": target}
    return cfg


def _write(path, cfg):
    """``cfg`` as a TOML file (rank 0 writes)."""
    if COMM.rank == 0:
        import tomli_w

        path.write_text(tomli_w.dumps(cfg))
    COMM.barrier()
    return path


@pytest.mark.serial
def test_target_per_output_is_resolved():
    assert validate(_cfg(["tanh_1", "linear_x"]))["data"]["target"] == ["tanh_1", "linear_x"]
    assert validate(_cfg("tanh_1"))["data"]["target"] == "tanh_1"  # the documented rule: g[0] = it, g[1] = 0


@pytest.mark.serial
@pytest.mark.parametrize(
    "target, outputs, match",
    [
        (["tanh_1"], 2, r"data.target = \[\"tanh_1\"\] has 1 entries, but network.outputs = 2; allowed: a list of 2"),
        (["tanh_1", "linear_x", "zero"], 2, r"has 3 entries, but network.outputs = 2"),
        (["tanh_1", "easy"], 2, r"data.target\[1\] = \"easy\" is not valid.*allowed: .*\"linear_t\".*\"zero\""),
        (["tanh_1", 3], 2, r"data.target\[1\] = 3 is an integer"),
        (["tanh_1", "linear_x"], 1, r"is a list, but the network has one output.*allowed: one target name"),
        (4, 2, r"data.target = 4 is an integer; allowed: a target name, or a list of 2 names"),
    ],
)
def test_bad_targets_name_the_key_and_the_choices(target, outputs, match):
    cfg = _cfg(target, outputs)
    if outputs == 1:
        cfg["network"].pop("outputs")
    with pytest.raises(ConfigError, match=match) as info:
        validate(cfg)
    assert info.value.key.startswith("data.target")


@pytest.mark.serial
def test_bad_target_list_exits_2(capsys):
    from femnpde.app.cli import main

    code = main(["config", "check", "demos/quickstart.toml", "--set", 'data.target=["tanh_1", "linear_x"]'])
    assert code == 2
    assert "data.target" in capsys.readouterr().err


def _expected_targets(run, names):
    points = run.problem.source_points()
    x = np.zeros((3, len(points)))
    x[: points.shape[1]] = points.T
    fs = [target_source(name, run.problem.time.T) for name in names]
    return np.stack([np.stack([np.broadcast_to(f(t, x), (len(points),)) for f in fs], axis=-1)
                     for t in run.problem.time.times])


def test_synthetic_data_with_a_target_per_output():
    """Each output gets its own target, and the data are the solve with both (not the g[1] = 0 rule's)."""
    runs = [build_run(_cfg(target), COMM, f"multi_{i}_") for i, target in enumerate((["tanh_1", "linear_x"], "tanh_1"))]
    try:
        per_output, rule = runs
        m = 2
        values = per_output.target_values.reshape(len(per_output.problem.time.times), -1, m)
        np.testing.assert_array_equal(values, _expected_targets(per_output, ["tanh_1", "linear_x"]))
        np.testing.assert_array_equal(rule.target_values.reshape(values.shape), _expected_targets(rule, ["tanh_1", "zero"]))
        # The data solve used both targets: the diffusion factor 1 + g[1]^2 changes the solution.
        data = per_output.field_data
        ref = per_output.solver.forward(per_output.target_values).array[:, : per_output.problem.n_owned]
        np.testing.assert_allclose(data, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
        diff = COMM.allreduce(float(np.abs(data - rule.field_data).max()), op=MPI.MAX)
        assert diff > 1e-4 * COMM.allreduce(float(np.abs(data).max()), op=MPI.MAX)
        # Rank-independent data: the global norm is that of a serial build.
        norm = np.sqrt(COMM.allreduce(float(np.sum(data**2))))
        if COMM.size > 1:
            serial = build_run(_cfg(["tanh_1", "linear_x"]), MPI.COMM_SELF, "multi_serial_")
            try:
                assert norm == pytest.approx(np.sqrt(float(np.sum(serial.field_data**2))), rel=1e-12)
            finally:
                serial.destroy()
    finally:
        for run in runs:
            run.destroy()


def _read_bp(bp, names):
    """The node coordinates (written once: the mesh is reused) and every step's values of each variable."""
    os.environ.setdefault("ADIOS2_ALWAYS_USE_MPI", "1")
    import adios2

    with adios2.FileReader(str(bp), MPI.COMM_SELF) as reader:
        n_steps = reader.num_steps()
        geometry = reader.read("geometry", step_selection=[0, 1]).reshape(-1, 3)
        values = {name: [reader.read(name, step_selection=[s, 1]).reshape(-1) for s in range(n_steps)]
                  for name in names}
    return geometry, values


@pytest.mark.parametrize("source", ["lagrange", "quadrature"])
def test_outputs_of_a_two_output_run(shared_tmp_path, source):
    """fields/ holds g_theta_k and g_star_k of both outputs, equal to the network and the targets at the nodes."""
    out = shared_tmp_path / f"two_{source}"
    cfg = _cfg(["tanh_1", "linear_x"])
    cfg["pde"]["source"] = source
    train(_write(shared_tmp_path / f"two_{source}.toml", cfg), out=out, quiet=True)
    fields = out / "fields"
    COMM.barrier()
    bp = fields / "fields_g_theta_0-g_theta_1-g_star_0-g_star_1.bp"
    assert bp.is_dir(), sorted(p.name for p in fields.iterdir())
    assert (fields / "fields_u-h-adjoint.bp").is_dir()
    if COMM.rank == 0:
        names = ["g_theta_0", "g_theta_1", "g_star_0", "g_star_1"]
        geometry, data = _read_bp(bp, names)
        times = np.linspace(0.0, 1.0, 5)  # time.n_steps = 4, T = 1
        net = _trained_network(out)
        fs = [target_source(name, 1.0) for name in ("tanh_1", "linear_x")]
        assert len(data["g_theta_0"]) == len(times)
        for n, t in enumerate(times):
            g = net(np.full(len(geometry), t), geometry[:, :2])
            x = np.ascontiguousarray(geometry.T)
            for k in range(2):
                theta_k, star_k = data[f"g_theta_{k}"][n], data[f"g_star_{k}"][n]
                if source == "lagrange":  # nodal values: exactly the network's and the targets'
                    np.testing.assert_allclose(theta_k, g[:, k], rtol=1e-12, atol=1e-12 * np.abs(g[:, k]).max())
                    np.testing.assert_allclose(star_k, np.broadcast_to(fs[k](t, x), star_k.shape), rtol=0,
                                               atol=1e-12)
                else:  # L2 projections onto P1: close to the nodal values (measured: 5e-4), not the other output's
                    scale = np.abs(g[:, k]).max()
                    assert np.abs(theta_k - g[:, k]).max() < 1e-2 * scale
                    assert np.abs(theta_k - g[:, 1 - k]).max() > 0.5 * scale
                    assert np.abs(star_k - fs[k](t, x)).max() < 1e-2
    COMM.barrier()


def _trained_network(out):
    """The MLP of the run's configuration with the parameters of its checkpoint."""
    from femnpde.io.checkpoint import load_checkpoint
    from femnpde.model.mlp import MLP

    net = MLP(2, [5], n_outputs=2, seed=1)
    net.params = load_checkpoint(out / "checkpoint.npz", MPI.COMM_SELF)["params"]
    return net


def test_two_output_fields_in_xdmf(shared_tmp_path):
    """run.field_format = "xdmf": every output's g_theta_k and g_star_k at every level."""
    out = shared_tmp_path / "two_xdmf"
    cfg = _cfg(["tanh_1", "linear_x"])
    cfg["run"] = {**cfg["run"], "field_format": "xdmf"}
    train(_write(shared_tmp_path / "two_xdmf.toml", cfg), out=out, quiet=True)
    COMM.barrier()
    text = (out / "fields" / "fields.xdmf").read_text()
    for name in ("u", "h", "adjoint", "g_theta_0", "g_theta_1", "g_star_0", "g_star_1"):
        assert text.count(f'<Attribute Name="{name}"') == 5, name


def test_two_output_run_plots_every_output(shared_tmp_path, monkeypatch):
    """g_vs_gstar_k.png for each output k (rank 0), drawn from output k of the network and of the targets."""
    pytest.importorskip("matplotlib")
    import femnpde.app.training as training

    drawn = {}
    real = training.plot_comparison

    def record(out_png, problem, a, b, idx, **kwargs):
        n = problem.n_owned
        x = problem.V.tabulate_dof_coordinates()[:n, :2]
        drawn[pathlib.Path(out_png).name] = (a[:, :n].copy(), b[:, :n].copy(), x, np.asarray(problem.time.times))
        real(out_png, problem, a, b, idx, **kwargs)

    monkeypatch.setattr(training, "plot_comparison", record)
    out = shared_tmp_path / "two_plots"
    train(_write(shared_tmp_path / "two_plots.toml", _cfg(["tanh_1", "linear_x"])), out=out, quiet=True)
    COMM.barrier()
    assert sorted(name for name in drawn if name.startswith("g_vs")) == ["g_vs_gstar_0.png", "g_vs_gstar_1.png"]
    net = _trained_network(out)
    fs = [target_source(name, 1.0) for name in ("tanh_1", "linear_x")]
    for k in range(2):
        g_theta, g_star, x, times = drawn[f"g_vs_gstar_{k}.png"]
        for n, t in enumerate(times):
            g = net(np.full(len(x), t), x)[:, k]
            np.testing.assert_allclose(g_theta[n], g, rtol=1e-12, atol=1e-12 * np.abs(g).max())
            np.testing.assert_allclose(g_star[n], np.broadcast_to(fs[k](t, np.ascontiguousarray(x.T)), (len(x),)),
                                       rtol=0, atol=1e-12)
    if COMM.rank == 0:
        import matplotlib.pyplot as plt

        images = [plt.imread(out / f"g_vs_gstar_{k}.png") for k in range(2)]
        assert all(im.ndim == 3 and im.shape[0] > 100 for im in images)
        assert images[0].shape != images[1].shape or not np.array_equal(images[0], images[1])
        assert not (out / "g_vs_gstar.png").exists()
    COMM.barrier()
