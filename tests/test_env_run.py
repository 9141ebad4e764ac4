"""scripts/env-run: set-up errors are clear and exit with code 2."""

import os
import pathlib
import subprocess

import pytest

ENV_RUN = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "env-run"

pytestmark = pytest.mark.serial


def _run(args, **env):
    return subprocess.run(
        [str(ENV_RUN), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_no_command_prints_usage():
    res = _run([])
    assert res.returncode == 2
    assert "usage: scripts/env-run CMD" in res.stderr


def test_bad_mode_is_named():
    res = _run(["true"], FEMNPDE_ENV="bogus")
    assert res.returncode == 2
    assert "FEMNPDE_ENV='bogus'" in res.stderr and "auto, host, rootfs" in res.stderr


def test_host_mode_runs_command_here():
    # Inside the environment the host python imports dolfinx: host mode runs CMD directly.
    res = _run(["python3", "-c", "import dolfinx, femnpde; print('ok')"], FEMNPDE_ENV="host")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_unwritable_cache_is_a_clear_error():
    res = _run(["true"], FEMNPDE_ENV="rootfs", FEMNPDE_CACHE="/proc/femnpde-cache")
    assert res.returncode == 2, res.stderr
    assert "error:" in res.stderr
    assert "Traceback" not in res.stderr
    # Either the cache directory is named, or (unprivileged / minimal hosts) the missing prerequisite.
    assert "/proc/femnpde-cache" in res.stderr or "needs root" in res.stderr or "is not installed" in res.stderr
