"""Every demo in demos/ runs (shortened), serially and on 2 ranks.

TOML demos train with a falling loss; Python demos (jupytext "light" scripts)
run with ``--quick`` as a script on 1 and 2 ranks.  A demo that is not
registered here fails the test suite: add it to DEMOS (with the overrides
that make its test run short) or to PY_DEMOS.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.io.output import History
from femnpde.app.training import train

DEMO_DIR = pathlib.Path(__file__).resolve().parents[1] / "demos"

#: demo file -> overrides for a short test run.
DEMOS = {
    "quickstart.toml": ["run.iterations=12"],
    "paper_heat.toml": ["run.iterations=6", "mesh.cells=[10, 20]", "time.n_steps=16", "network.neurons=20"],
    "paper_allen_cahn.toml": ["run.iterations=6", "mesh.cells=[10, 20]", "time.n_steps=16", "network.neurons=20"],
    "annulus_sensors.toml": ["run.iterations=12"],
    "box_cavity_3d.toml": ["run.iterations=8", "time.n_steps=6"],
    "box_cavity_3d_fine.toml": ["run.iterations=6", "time.n_steps=6", "mesh.refine=1", "network.neurons=10"],
    "gamma_recovery.toml": ["run.iterations=300", "mesh.cells=[6, 12]", "time.n_steps=16"],
    "width_annulus_heat.toml": ["run.iterations=8", "time.n_steps=8", "network.neurons=10"],
    "width_box_heat.toml": ["run.iterations=8", "time.n_steps=8", "network.neurons=10"],
}


#: Python demos, each run as ``python3 demos/NAME --quick`` (they assert their own loss decrease).
PY_DEMOS = ["demo_paper_heat_scipy.py", "demo_nonlinear_robin_sensors.py", "demo_network_coefficient.py"]


def test_every_demo_is_registered():
    present = sorted(p.name for p in DEMO_DIR.glob("*.toml"))
    assert present == sorted(DEMOS), f"register new demos in tests/test_demos.py: {set(present) ^ set(DEMOS)}"
    present = sorted(p.name for p in DEMO_DIR.glob("*.py"))
    assert present == sorted(PY_DEMOS), f"register new demos in tests/test_demos.py: {set(present) ^ set(PY_DEMOS)}"


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("name", PY_DEMOS)
def test_python_demo_runs(name, ranks, tmp_path):
    text = (DEMO_DIR / name).read_text()
    assert "format_name: light" in text, f"{name} is not a jupytext light script"
    launcher = ["mpirun", "-n", str(ranks)] if ranks > 1 else []
    # Run from elsewhere: a demo finds its files relative to itself.
    res = subprocess.run([*launcher, sys.executable, str(DEMO_DIR / name), "--quick"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{ranks} rank(s)" in res.stdout, res.stdout


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_trains(name, shared_tmp_path):
    out = shared_tmp_path / name.removesuffix(".toml")
    res = train(DEMO_DIR / name, out=out, overrides=DEMOS[name], quiet=True)
    hist = History.read(out / "history.csv")
    assert np.all(np.isfinite(hist["loss"]))
    assert res["best_loss"] < hist["loss"][0], hist["loss"]
    assert (out / "checkpoint.npz").is_file() and (out / "history.png").is_file()
    MPI.COMM_WORLD.Barrier()


def test_gamma_recovery_demo_finds_gamma(shared_tmp_path):
    """The short gamma-recovery demo: gamma from 0.02 back to the data's 0.01 (0.5 % here, < 1e-3 in full)."""
    res = train(DEMO_DIR / "gamma_recovery.toml", out=shared_tmp_path / "gamma", quiet=True,
                overrides=DEMOS["gamma_recovery.toml"])
    assert abs(res["parameters"]["gamma"] - 0.01) <= 5e-3 * 0.01, res["parameters"]
    MPI.COMM_WORLD.Barrier()
