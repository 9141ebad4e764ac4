#!/bin/bash
# scripts/slurm-train.sh CONFIG [RUN_NAME]: a resumable femnpde training run on a Slurm cluster.
#
#   sbatch scripts/slurm-train.sh demos/paper_heat.toml heat-N500
#   sbatch --dependency=afterany:JOBID scripts/slurm-train.sh demos/paper_heat.toml heat-N500   # continues it
#
# The run directory is runs/RUN_NAME (RUN_NAME defaults to the config's file
# name; FEMNPDE_RUNS changes "runs"), not the job id: every job of the same
# name (requeued or chained with --dependency=afterany) resumes from the run's
# checkpoint.npz.  Submit from the repository root (or give absolute paths).
#
# Wall time: Slurm sends SIGUSR1 to this script 120 s before the limit
# (--signal=B:USR1@120).  The script forwards it to srun, which forwards it to
# every rank; femnpde train then finishes its epoch, writes a checkpoint and
# stops (exit 128+10), and the script requeues the job (scontrol requeue),
# which continues from that checkpoint.  Make 120 s more than one epoch plus a
# checkpoint write.
#
# Environment on the compute nodes (DOLFINx >= 0.10), one of:
#   * conda: the environment of environment.yml (the one conda package list):
#       conda env create -f environment.yml && conda activate femnpde && pip install --no-deps -e .
#     srun starts the ranks through the cluster's PMIx (srun --mpi=pmix; set
#     FEMNPDE_SRUN_MPI to what `srun --mpi=list` offers).  conda's own MPI does
#     not talk to the cluster's launcher and network: install the
#     external-MPI build instead ("mpich=*=external_*" or
#     "openmpi=*=external_*" in environment.yml) and load the cluster's MPI
#     module before activating the environment.
#   * the Docker image as an Apptainer image:
#       apptainer build femnpde.sif docker-daemon://femnpde:latest
#     and FEMNPDE_CMD="apptainer exec femnpde.sif femnpde" (the image has the
#     same MPI settings as scripts/env-run: PRTE_MCA_mapby=:oversubscribe).
#SBATCH --job-name=femnpde-train
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=femnpde-%x.out

set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: sbatch scripts/slurm-train.sh CONFIG [RUN_NAME]" >&2
    exit 2
fi
config=$1
name=${2:-$(basename "$config" .toml)}
case "$name" in
"" | */* | .*) echo "slurm-train.sh: error: RUN_NAME '$name' must be a plain name (no '/', not starting with '.')" >&2; exit 2 ;;
esac
out="${FEMNPDE_RUNS:-runs}/$name"
read -r -a femnpde_cmd <<<"${FEMNPDE_CMD:-femnpde}"

# One BLAS thread per MPI rank: the ranks already fill the cores.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# The oversubscription setting of scripts/env-run and the image (read by an
# mpirun inside the image; srun itself places the ranks on Slurm's slots).
export PRTE_MCA_mapby=${PRTE_MCA_mapby:-:oversubscribe}

if [ -f "$out/checkpoint.npz" ]; then
    echo "slurm-train.sh: job ${SLURM_JOB_ID:-?} resumes run '$name' from $out/checkpoint.npz"
    args=(train "$config" --resume "$out" --quiet)
else
    echo "slurm-train.sh: job ${SLURM_JOB_ID:-?} starts run '$name' in $out"
    args=(train "$config" --out "$out" --quiet)
fi

requeue=0
on_wall_time() {
    echo "slurm-train.sh: wall time nearly over: checkpoint, stop and requeue"
    requeue=1
    kill -USR1 "$pid" 2>/dev/null || true
}
trap on_wall_time USR1

srun --mpi="${FEMNPDE_SRUN_MPI:-pmix}" "${femnpde_cmd[@]}" "${args[@]}" &
pid=$!
# 'wait' returns early when the trap runs; wait again until srun has ended.
while :; do
    status=0
    wait "$pid" || status=$?
    kill -0 "$pid" 2>/dev/null || break
done

if [ "$requeue" = 1 ]; then
    if [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID"; then
        echo "slurm-train.sh: requeued job $SLURM_JOB_ID; it resumes run '$name'"
        exit 0
    fi
    echo "slurm-train.sh: error: could not requeue; resume with: sbatch scripts/slurm-train.sh $config $name" >&2
    exit 1
fi
exit "$status"
