"""SIGUSR1 / SIGTERM during ``femnpde train``: a checkpoint, a stop, and a clean resume (1 and 2 ranks).

This is what a batch system's wall-time warning does (scripts/slurm-train.sh:
``#SBATCH --signal=B:USR1@120``, forwarded by srun to the ranks).
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from femnpde.io.output import History, load_checkpoint

pytestmark = pytest.mark.serial

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "demos" / "quickstart.toml"


def _history_rows(path: pathlib.Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line and line[0].isdigit())
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize(
    ("ranks", "sig"),
    [(1, signal.SIGUSR1), pytest.param(1, signal.SIGTERM, marks=pytest.mark.slow), (2, signal.SIGUSR1)],
)
def test_signal_writes_a_checkpoint_and_the_run_resumes(tmp_path, ranks, sig):
    out = tmp_path / "run"
    launcher = ["mpirun", "-n", str(ranks)] if ranks > 1 else []
    cmd = [*launcher, sys.executable, "-m", "femnpde", "train", str(QUICKSTART), "--out", str(out), "--quiet",
           "--set", "run.iterations=100000", "--set", "run.checkpoint_every=100000", "--set", "time.n_steps=8"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _history_rows(out / "history.csv") < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, stdout, stderr)
    assert f"{signal.Signals(sig).name} received" in stderr and f"--resume {out}" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not (out / ".lock").exists()  # the run-directory lock is released
    rows = _history_rows(out / "history.csv")
    # The checkpoint is of the last epoch recorded: nothing is lost or repeated on resume.
    assert rows >= 3 and load_checkpoint(out / "checkpoint.npz", None)["epoch"] == rows
    # Resume: two more epochs after the checkpoint, then the outputs of a finished run.
    done = subprocess.run(
        [*launcher, sys.executable, "-m", "femnpde", "train", str(QUICKSTART), "--resume", str(out), "--quiet",
         "--set", f"run.iterations={rows + 2}", "--set", "run.checkpoint_every=100000", "--set", "time.n_steps=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    hist = History.read(out / "history.csv")
    assert list(hist["epoch"]) == list(range(rows + 2)), hist["epoch"]
    assert (out / "history.png").is_file()
