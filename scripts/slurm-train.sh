#!/bin/bash
# Example Slurm batch script for a femnpde training run on a cluster.
# Submit from the repository root:   sbatch scripts/slurm-train.sh demos/paper_heat.toml
#
# It needs DOLFINx >= 0.10 on the compute nodes, from one of:
#   * a conda environment:  conda create -n femnpde -c conda-forge fenics-dolfinx mpich matplotlib tqdm scipy
#                           conda activate femnpde && pip install -e .
#   * the Docker image converted for Apptainer/Singularity:  apptainer build femnpde.sif docker-daemon://femnpde:latest
#     (then replace the srun line by: srun apptainer exec femnpde.sif femnpde train ...)
#SBATCH --job-name=femnpde-train
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --output=femnpde-%j.out

set -euo pipefail
config=${1:-demos/paper_heat.toml}
name=$(basename "$config" .toml)

# One BLAS thread per MPI rank: the ranks already fill the cores.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# source ~/miniforge3/bin/activate femnpde     # if using conda
out="runs/${name}-${SLURM_JOB_ID:-local}"
# --resume continues from the last checkpoint if the job is requeued.
if [ -f "$out/checkpoint.npz" ]; then
    srun femnpde train "$config" --out "$out" --resume "$out" --quiet
else
    srun femnpde train "$config" --out "$out" --quiet
fi
