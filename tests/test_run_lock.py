"""The run-directory lock (femnpde/io/lock.py): a live holder is refused, a dead one taken over, released always.

The in-process tests run on 1 and 2 ranks (rank 0 starts the holder
processes; every rank must get the outcome); the command-line ones start
``femnpde`` on 1 and 2 ranks in a subprocess under a timeout (a hang fails).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest
from mpi4py import MPI

from femnpde.io.lock import LOCK_FILE, RunDirectoryLocked, RunLock

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: A process that takes the lock of argv[1], says so, then sleeps (or, with argv[2] = "term", sends itself SIGTERM).
HOLDER = """
import os, signal, sys, time
from femnpde.io.lock import RunLock
with RunLock(sys.argv[1], None):
    print("locked", flush=True)
    if sys.argv[2:] == ["term"]:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(120)
"""


def _holder(directory: pathlib.Path, *args: str) -> subprocess.Popen:
    """A process holding the lock of ``directory`` (rank 0; returns once it holds it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line == "locked\n", (line, proc.communicate(timeout=30))
    return proc


def _on_root(fn):
    """``fn()`` on rank 0, its result on every rank."""
    comm = MPI.COMM_WORLD
    return comm.bcast(fn() if comm.rank == 0 else None, root=0)


def test_a_live_holder_is_refused_on_every_rank(shared_tmp_path):
    run = shared_tmp_path / "run"
    proc = _holder(run) if MPI.COMM_WORLD.rank == 0 else None
    try:
        pid = _on_root(lambda: proc.pid)
        with pytest.raises(RunDirectoryLocked) as err:
            with RunLock(run, MPI.COMM_WORLD):
                pytest.fail("a second process entered a held run directory")
        message = str(err.value)
        assert f"run directory {run} is in use" in message
        assert f"pid {pid} on host {socket.gethostname()} since 20" in message
        assert "wait for that process to finish" in message and f"remove {run / LOCK_FILE}" in message
        MPI.COMM_WORLD.Barrier()
        # the holder's lock is untouched
        assert _on_root(lambda: json.loads((run / LOCK_FILE).read_text())["pid"]) == pid
    finally:
        MPI.COMM_WORLD.Barrier()
        if proc is not None:
            proc.kill()
            proc.wait()


def test_the_lock_of_a_killed_process_is_taken_over_and_released(shared_tmp_path, capsys):
    run = shared_tmp_path / "run"

    def killed_holder() -> int:
        proc = _holder(run)
        proc.kill()  # SIGKILL: no clean-up, the lock stays behind
        proc.wait()
        assert (run / LOCK_FILE).is_file()
        return proc.pid

    pid = _on_root(killed_holder)
    with RunLock(run, MPI.COMM_WORLD) as lock:
        if MPI.COMM_WORLD.rank == 0:
            assert lock.taken_over["pid"] == pid
            assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    if MPI.COMM_WORLD.rank == 0:
        assert f"taking over the stale lock {run / LOCK_FILE} of pid {pid}" in err and "that process is gone" in err
        assert not (run / LOCK_FILE).exists()
    else:
        assert err == ""  # said on rank 0 only


def test_a_reused_pid_is_stale(shared_tmp_path):
    """The lock names this very process's pid, but another process start: the pid was reused."""
    run = shared_tmp_path / "run"

    def write() -> None:
        run.mkdir()
        (run / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                 "start": "another-boot:1", "since": "2026-01-01T00:00:00+00:00",
                                                 "command": "femnpde train old.toml", "token": "x"}))

    _on_root(write)
    with RunLock(run, MPI.COMM_WORLD) as lock:
        if MPI.COMM_WORLD.rank == 0:
            assert lock.taken_over["start"] == "another-boot:1"
    assert _on_root(lambda: not (run / LOCK_FILE).exists())


def test_a_lock_of_another_host_is_never_stale(shared_tmp_path):
    run = shared_tmp_path / "run"

    def write() -> None:
        run.mkdir()
        (run / LOCK_FILE).write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "start": None,
                                                 "since": "2026-01-01T00:00:00+00:00", "command": "femnpde sweep"}))

    _on_root(write)
    with pytest.raises(RunDirectoryLocked, match="pid 1 on host node-elsewhere since 2026-01-01"):
        with RunLock(run, MPI.COMM_WORLD):
            pass


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_released_after_an_error(shared_tmp_path, error):
    run = shared_tmp_path / "run"
    with pytest.raises(error):
        with RunLock(run, MPI.COMM_WORLD):
            MPI.COMM_WORLD.Barrier()
            assert (run / LOCK_FILE).is_file()
            raise error("injected")
    assert _on_root(lambda: not (run / LOCK_FILE).exists())  # every rank agrees (no rank fails alone)
    with RunLock(run, MPI.COMM_WORLD):  # free again
        pass


@pytest.mark.serial
def test_released_on_sigterm(tmp_path):
    """SIGTERM outside the training loop: the lock is removed, then the process ends as SIGTERM does."""
    run = tmp_path / "run"
    proc = _holder(run, "term")
    assert proc.wait(timeout=30) == -signal.SIGTERM, proc.communicate()
    assert not (run / LOCK_FILE).exists()


@pytest.mark.serial
@pytest.mark.parametrize("ranks", [1, 2])
def test_train_and_sweep_into_a_held_directory_exit_2(tmp_path, ranks):
    from test_reliability import femnpde, tiny

    cfg = tiny(tmp_path / "c.toml", iterations=2)
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        for args in (["train", cfg, "--out", run, "--quiet"], ["sweep", cfg, "--N", "2", "--out", run, "--quiet"]):
            code, out, err, _ = femnpde(args, ranks)
            assert code == 2, (args, err)
            assert err.count(f"femnpde: error: run directory {run} is in use") == 1, err  # once, by rank 0
            assert f"pid {proc.pid} on host" in err and "Traceback" not in err, err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        proc.kill()
        proc.wait()
    # the holder is gone (killed): the next run takes its lock over, trains, and leaves no lock
    code, out, err, _ = femnpde(["train", cfg, "--out", run, "--quiet"], ranks)
    assert code == 0 and err.count("taking over the stale lock") == 1, err
    assert (run / "checkpoint.npz").is_file() and not (run / LOCK_FILE).exists()
