"""Gradient checks on every mesh of meshes/ and every observation type, through the verification API.

Each configuration is built with :func:`femnpde.app.config.build_run` and
checked with :func:`femnpde.model.verification.taylor_test`: every rate in
[1.9, 2.1] and a non-zero gradient (a zero gradient would give any rate).
One configuration also goes through ``femnpde gradcheck CONFIG`` and its
printed rates are checked the same way.
"""

import pathlib

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.cli import main
from femnpde.app.config import build_run, load_config
from femnpde.model.verification import finite_difference_check, taylor_test
from cli_output import gradcheck_figures
from conftest import write_on_root

ROOT = pathlib.Path(__file__).resolve().parents[1]

BASE = """
[mesh]
kind = "file"
path = "{mesh}"
gdim = {gdim}
[pde]
preset = "{pde}"
epsilon = 0.6   # theta * dt < epsilon^2: each Allen-Cahn step has a unique solution
[time]
n_steps = 5
theta = 0.5
[initial_condition]
kind = "constant"
value = 0.0
[[boundary]]
where = {tag}
value = 0.1
time_function = "linear"
[network]
neurons = 6
[data]
target = "moving_gaussian"
[run]
iterations = 1
"""

# mesh -> (gdim, Dirichlet facet tag, a Neumann facet tag, a cell tag)
MESHES = {
    "l_shape": (2, 1, 2, 2),
    "annulus_holes": (2, 1, 3, 2),
    "channel_obstacle": (2, 1, 4, 2),
    "box_cavity": (3, 1, 2, 2),
}

OBSERVATIONS = {
    "field": "[observation]\nkind = 'field'\n",
    "subdomain": "[observation]\nkind = 'subdomain'\nsubdomain = {cell}\n",
    "sensors": "[observation]\nkind = 'sensors'\nsensors = {sensors}\nlevels = [1, 3, 5]\n",
    "times": "[observation]\nkind = 'field'\nlevels = [2, 5]\n",
}

SENSORS = {
    "l_shape": "[[0.1, 0.1], [0.3, 0.2], [0.2, 0.8], [0.8, 0.3]]",
    "annulus_holes": "[[0.5, 0.5], [-0.5, 0.5], [0.0, -0.8]]",
    "channel_obstacle": "[[0.5, 0.2], [1.0, 0.3], [1.8, 0.1]]",
    "box_cavity": "[[0.1, 0.1, 0.1], [0.9, 0.5, 0.2], [0.5, 0.9, 0.9]]",
}


def _config_text(mesh, observation):
    gdim, tag, neumann, cell = MESHES[mesh]
    pde = "allen-cahn" if mesh == "annulus_holes" else "heat"
    text = BASE.format(mesh=ROOT / "meshes" / f"{mesh}.xdmf", gdim=gdim, pde=pde, tag=tag)
    text += f"[[neumann]]\nwhere = {neumann}\nflux = 0.2\n"
    return text + OBSERVATIONS[observation].format(cell=cell, sensors=SENSORS[mesh])


@pytest.mark.parametrize("observation", sorted(OBSERVATIONS))
@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_gradcheck_every_mesh_and_observation(mesh, observation, shared_tmp_path):
    cfg = write_on_root(shared_tmp_path / f"{mesh}_{observation}.toml", _config_text(mesh, observation))
    run = build_run(load_config(cfg), MPI.COMM_WORLD, petsc_options_prefix=f"gc_{mesh}_{observation}_")
    try:
        theta0 = run.network.params.copy()
        dtheta = np.random.default_rng(1).standard_normal(theta0.size)
        result = taylor_test(run.rf, theta0, dtheta, n_steps=4)
        fd = finite_difference_check(run.rf, theta0, dtheta[np.newaxis, :], steps=(1e-3, 1e-4, 1e-5))
    finally:
        run.destroy()
    assert result.gradient_norm > 0 and abs(result.directional_derivative) > 0, result
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    # Central differences agree with the adjoint (a Taylor rate alone can hide a 1e-5 bias).
    assert fd.worst <= 1e-8, fd.errors


def test_gradcheck_command_prints_rates_near_2(shared_tmp_path, capsys):
    cfg = write_on_root(shared_tmp_path / "cli.toml", _config_text("l_shape", "subdomain"))
    code = main(["gradcheck", str(cfg), "--taylor-steps", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    if MPI.COMM_WORLD.rank == 0:
        rates, norm = gradcheck_figures(out)
        assert len(rates) == 3, out
        assert all(1.9 < r < 2.1 for r in rates), out
        assert norm > 0, out


def test_missing_tag_is_named(shared_tmp_path, capsys):
    text = BASE.format(mesh=ROOT / "meshes" / "l_shape.xdmf", gdim=2, pde="heat", tag=7)
    cfg = write_on_root(shared_tmp_path / "badtag.toml", text)
    assert main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "x")]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert "boundary[0].where" in err and "7" in err and "[1, 2]" in err, err


def test_sensor_outside_domain_is_named(shared_tmp_path, capsys):
    text = BASE.format(mesh=ROOT / "meshes" / "l_shape.xdmf", gdim=2, pde="heat", tag=1)
    text += OBSERVATIONS["sensors"].format(sensors="[[0.1, 0.1], [0.9, 0.9]]", cell=0)
    cfg = write_on_root(shared_tmp_path / "badsensor.toml", text)
    assert main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "x")]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert "0.9" in err and "observation.sensors" in err, err


def test_malformed_sensor_file_is_named(shared_tmp_path, capsys):
    bad = write_on_root(shared_tmp_path / "data.csv", "t,s0\n0.0,abc\n")
    text = BASE.format(mesh=ROOT / "meshes" / "l_shape.xdmf", gdim=2, pde="heat", tag=1)
    text = text.replace('[data]\ntarget = "moving_gaussian"', f'[data]\nkind = "file"\npath = "{bad}"')
    text += OBSERVATIONS["sensors"].format(sensors="[[0.1, 0.1]]", cell=0)
    cfg = write_on_root(shared_tmp_path / "badfile.toml", text)
    assert main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "x")]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert "data.csv" in err, err
