"""Every demo in demos/ trains (shortened) with a falling loss, serially and on 2 ranks.

A demo that is not registered here fails the test suite: add it to DEMOS
with the overrides that make its test run short.
"""

import pathlib

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
}


def test_every_demo_is_registered():
    present = sorted(p.name for p in DEMO_DIR.glob("*.toml"))
    assert present == sorted(DEMOS), f"register new demos in tests/test_demos.py: {set(present) ^ set(DEMOS)}"


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_trains(name, shared_tmp_path):
    out = shared_tmp_path / name.removesuffix(".toml")
    res = train(DEMO_DIR / name, out=out, overrides=DEMOS[name], quiet=True)
    hist = History.read(out / "history.csv")
    assert np.all(np.isfinite(hist["loss"]))
    assert res["best_loss"] < hist["loss"][0], hist["loss"]
    assert (out / "checkpoint.npz").is_file() and (out / "history.png").is_file()
    MPI.COMM_WORLD.Barrier()
