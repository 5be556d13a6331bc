#!/bin/bash
# Adversarial training of ResNet-152 Denoise on 16 nodes x 8 GPUs (total batch 4096) with Slurm.
# Submit from the project folder with its environment (or the Docker image) available on every node:
#   sbatch scripts/slurm_train.sh /path/to/imagenet
#SBATCH --job-name=feature-denoising
#SBATCH --nodes=16
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=10
#SBATCH --time=96:00:00
#SBATCH --output=slurm-%j.log
set -euo pipefail
DATA=${1:?usage: sbatch scripts/slurm_train.sh IMAGENET_DIR}
PYTHON=${PYTHON:-.venv/bin/python}

# One process per GPU; Horovod reads its rank from the MPI/PMI environment srun sets up.
# A log directory on a shared file system lets a re-submitted job continue with --resume.
srun --mpi=pmi2 --kill-on-bad-exit=1 "$PYTHON" main.py --train --data "$DATA" \
    --arch ResNetDenoise -d 152 --attack-iter 30 --workers 8 \
    --logdir "train_log/R152-Denoise-slurm" --resume
