"""A missing optional package skips its feature with one warning before the run, never a traceback at the end."""

import pathlib
import sys

import pytest
from mpi4py import MPI

from femnpde._optional import available, missing_message
from femnpde.app.config import ConfigError, load_config
from femnpde.app.training import train
DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"


def test_missing_field_and_plot_packages_are_skipped_with_one_warning(shared_tmp_path, monkeypatch, capfd):
    # sys.modules[name] = None makes the package unimportable (and find_spec() None) for this test.
    monkeypatch.setitem(sys.modules, "adios4dolfinx", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not available("adios4dolfinx") and not available("matplotlib")
    out = shared_tmp_path / "no_optional"
    train(DEMOS / "quickstart.toml", out=out, overrides=["run.iterations=2"], quiet=True)
    err = capfd.readouterr().err
    assert (out / "history.csv").is_file() and (out / "checkpoint.npz").is_file()
    assert (out / "fields").is_dir()  # the VTX fields need no optional package
    assert not (out / "fields" / "u.bp").exists() and not (out / "history.png").exists()
    if MPI.COMM_WORLD.rank == 0:
        assert err.count("femnpde: warning:") == 2, err
        assert "adios4dolfinx" in err and "environment.yml" in err and "femnpde[fields]" in err
        assert "matplotlib" in err and "femnpde[plots]" in err
    assert "Traceback" not in err


def test_bp_field_data_without_adios4dolfinx_is_refused_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "adios4dolfinx", None)
    data = tmp_path / "u.bp"
    data.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(DEMOS / "quickstart.toml", ["data.kind=\"file\"", f"data.path=\"{data}\"", "data.name=\"u\""])
    assert missing_message("adios4dolfinx") in str(info.value)
    assert "data.path" in str(info.value)
