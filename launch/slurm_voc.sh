#!/usr/bin/env bash
# PASCAL VOC as published: 2 GPUs × 2 images (global batch 4), 20k iterations.
#   sbatch -p <partition> [-A <account>] launch/slurm_voc.sh [key=value ...]
# All variables of launch/slurm_train.sh apply (GPUS_PER_NODE, DATA_ROOT, WORK_DIR, ...).
#SBATCH --job-name=afa-voc
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=voc exec bash launch/slurm_train.sh "$@"
