"""scripts/slurm-train.sh with srun and scontrol stubbed (fake executables first on PATH).

Checks the script's logic: the run directory is keyed by the run name, a
second (chained or requeued) job resumes from the checkpoint, and the
wall-time signal is forwarded to srun, followed by a requeue.
"""

import os
import pathlib
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.serial

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "slurm-train.sh"

FAKE_SRUN = """#!/bin/bash
echo "srun $*" >> "$FAKE_LOG"
if [ "${FAKE_SRUN_MODE:-}" = wait ]; then
    trap 'echo "srun got USR1" >> "$FAKE_LOG"; exit 138' USR1
    touch "$FAKE_LOG.ready"
    for _ in $(seq 600); do sleep 0.05; done
    exit 99
fi
exit "${FAKE_SRUN_EXIT:-0}"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
"""
FAKE_SBATCH = """#!/bin/bash
echo "sbatch $*" >> "$FAKE_LOG"
"""


@pytest.fixture
def slurm(tmp_path):
    """A fake Slurm (srun, scontrol, sbatch) and a submit directory; returns a runner."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "submit"
    work.mkdir()
    log = tmp_path / "slurm.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "SLURM_JOB_ID": "4242"}

    def start(*args, **extra):
        return subprocess.Popen(["bash", str(SCRIPT), *args], cwd=work, env={**env, **extra},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(*args, **extra):
        proc = start(*args, **extra)
        out, err = proc.communicate(timeout=60)
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return proc.returncode, out + err, lines

    run.start, run.work, run.log = start, work, log
    return run


def test_first_job_starts_the_named_run(slurm):
    code, out, calls = slurm("demos/paper_heat.toml", "heat-N500")
    assert code == 0, out
    assert calls == ["srun --mpi=pmix femnpde train demos/paper_heat.toml --out runs/heat-N500 --quiet"]


def test_a_chained_job_of_the_same_name_resumes(slurm):
    (slurm.work / "runs" / "heat-N500").mkdir(parents=True)
    (slurm.work / "runs" / "heat-N500" / "checkpoint.npz").write_bytes(b"")
    # Another job id (a chained job), same run name: it resumes; the default name is the config's.
    code, out, calls = slurm("demos/paper_heat.toml", "heat-N500", SLURM_JOB_ID="4243")
    assert code == 0, out
    assert calls == ["srun --mpi=pmix femnpde train demos/paper_heat.toml --resume runs/heat-N500 --quiet"]
    code, out, calls = slurm("demos/paper_heat.toml")
    assert calls == ["srun --mpi=pmix femnpde train demos/paper_heat.toml --out runs/paper_heat --quiet"]


def test_launcher_settings(slurm):
    code, out, calls = slurm("demos/paper_heat.toml", FEMNPDE_SRUN_MPI="pmix_v4",
                             FEMNPDE_CMD="apptainer exec femnpde.sif femnpde", FEMNPDE_RUNS="/scratch/me")
    assert calls == ["srun --mpi=pmix_v4 apptainer exec femnpde.sif femnpde train demos/paper_heat.toml "
                     "--out /scratch/me/paper_heat --quiet"]


def test_wall_time_signal_is_forwarded_and_the_job_requeued(slurm):
    proc = slurm.start("demos/paper_heat.toml", "heat", FAKE_SRUN_MODE="wait")
    ready = pathlib.Path(str(slurm.log) + ".ready")
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 does
    out, err = proc.communicate(timeout=30)
    calls = slurm.log.read_text().splitlines()
    assert proc.returncode == 0, out + err
    assert calls == ["srun --mpi=pmix femnpde train demos/paper_heat.toml --out runs/heat --quiet",
                     "srun got USR1", "scontrol requeue 4242"]
    assert "requeued job 4242" in out


def test_a_failed_run_is_not_requeued(slurm):
    code, out, calls = slurm("demos/paper_heat.toml", FAKE_SRUN_EXIT="3")
    assert code == 3
    assert not any(c.startswith("scontrol") for c in calls)


@pytest.mark.parametrize("args", [[], ["a.toml", "b", "c"], ["a.toml", "../up"]])
def test_bad_arguments(slurm, args):
    code, out, calls = slurm(*args)
    assert code == 2 and calls == []


def test_batch_directives():
    text = SCRIPT.read_text()
    for directive in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
        assert directive in text
    assert "environment.yml" in text and "srun --mpi=pmix" in text and "external" in text
