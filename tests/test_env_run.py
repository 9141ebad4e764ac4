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


# ---------------------------------------------------------------------------
# The root-filesystem route, run from inside the environment (env-run binds
# its cache there, so a nested call enters the same root).  Elsewhere (a conda
# or container host, where env-run runs commands directly) these are skipped.
# ---------------------------------------------------------------------------
ROOT = ENV_RUN.parents[1]
inside_rootfs = pytest.mark.skipif(
    not os.environ.get("FEMNPDE_ROOTFS"), reason="needs scripts/env-run's root filesystem (FEMNPDE_ROOTFS unset)"
)


def _copy_checkout(dest: pathlib.Path, marker: str) -> pathlib.Path:
    """A second checkout of this repository (the working tree's files) with a marker module and version."""
    import shutil

    for name in ("femnpde", "scripts", "demos"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "femnpde" / "_clone_marker.py").write_text(f"NAME = {marker!r}\n")
    init = dest / "femnpde" / "__init__.py"
    text = init.read_text()
    assert '__version__ = "' in text
    init.write_text(text.replace('__version__ = "', f'__version__ = "{marker}+', 1))
    return dest


def _installed_checkouts() -> str:
    """The text of the shared venv's files that an (editable) install of a checkout writes its path into."""
    venv = pathlib.Path("/opt/femnpde-venv")
    files = [p for p in venv.rglob("*") if "femnpde" in p.name.lower() and p.is_file() and "__pycache__" not in p.parts]
    return "\n".join(p.read_text(errors="replace") for p in files if p.stat().st_size < 100_000)


@inside_rootfs
def test_two_checkouts_run_concurrently_and_each_imports_its_own_code(tmp_path):
    clones = {tag: _copy_checkout(tmp_path / tag, tag) for tag in ("A", "B")}
    code = (
        "import time, femnpde, femnpde._clone_marker as m; time.sleep(2); "
        "import importlib; importlib.reload(m); print(m.NAME, femnpde.__file__)"
    )
    procs = {}
    for tag, clone in clones.items():
        env = {**os.environ, "FEMNPDE_ENV": "rootfs"}
        procs[tag, "python"] = subprocess.Popen(
            [str(clone / "scripts" / "env-run"), "python3", "-c", code], cwd=clone, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs[tag, "cli"] = subprocess.Popen(
            [str(clone / "scripts" / "env-run"), "femnpde", "--version"], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    results = {key: (p.communicate(timeout=120), p.returncode) for key, p in procs.items()}
    for tag, clone in clones.items():
        (out, err), rc = results[tag, "python"]
        assert rc == 0, err
        assert out.split() == [tag, str(clone / "femnpde" / "__init__.py")], (out, err)
        (out, err), rc = results[tag, "cli"]
        assert rc == 0, err
        assert out.strip() == f"femnpde {tag}+0.1.0", (out, err)
        assert "installing femnpde" not in err
    # Nothing was installed into the shared venv (other checkouts' calls may still be running from it).
    assert str(tmp_path) not in _installed_checkouts(), "env-run installed a checkout into the shared venv"


@inside_rootfs
def test_out_and_data_outside_the_checkout_are_the_host_files(tmp_path):
    # tmp_path is under /tmp, outside the checkout and the current directory.
    env = {**os.environ, "FEMNPDE_ENV": "rootfs"}
    quick = ["--set", "run.iterations=2", "--set", "time.n_steps=8", "--quiet"]
    first = tmp_path / "first"
    res = subprocess.run([str(ENV_RUN), "femnpde", "train", "demos/quickstart.toml", "--out", str(first), *quick],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (first / "history.csv").is_file() and (first / "fields" / "u.bp").is_dir()
    # The first run's state is the second run's data file, again outside the checkout.
    second = tmp_path / "second"
    res = subprocess.run(
        [str(ENV_RUN), "femnpde", "train", "demos/quickstart.toml", "--out", str(second), *quick,
         "--set", 'data.kind="file"', "--set", f'data.path="{first / "fields" / "u.bp"}"', "--set", 'data.name="u"'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert (second / "checkpoint.npz").is_file() and (second / "history.csv").is_file()


@inside_rootfs
def test_argument_paths_are_bound_or_refused(tmp_path):
    env = {**os.environ, "FEMNPDE_ENV": "rootfs", "FEMNPDE_SHOW_BINDS": "1"}
    outside = pathlib.Path("/root") / f"femnpde-bind-test-{os.getpid()}"
    outside.mkdir()
    try:
        res = subprocess.run([str(ENV_RUN), "true", "--out", str(outside / "run"), "/usr/bin/env",
                              "/opt/femnpde-venv/bin/python"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    finally:
        outside.rmdir()
    assert res.returncode == 0, res.stderr
    binds = [line.split("bind ", 1)[1] for line in res.stderr.splitlines() if "env-run: bind " in line]
    assert str(outside) in binds and str(ROOT) in binds or any(str(ROOT).startswith(b + "/") for b in binds)
    assert not any(b.startswith(("/usr", "/opt")) for b in binds), binds
    # A new directory right under the environment's own /root cannot reach the host: refused, exit 2.
    res = subprocess.run([str(ENV_RUN), "true", "--out", f"/root/femnpde-no-such-dir-{os.getpid()}"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "cannot be the same file" in res.stderr and "/tmp" in res.stderr, res.stderr


def test_mpirun_oversubscribes_in_the_environment():
    # 4 ranks on a 2-core machine: env-run (and the image) set PRTE_MCA_mapby=:oversubscribe.
    res = _run(["mpirun", "-n", "4", "femnpde", "info"])
    assert res.returncode == 0, res.stderr
    assert "MPI world size      : 4" in res.stdout, res.stdout
