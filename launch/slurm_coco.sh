#!/usr/bin/env bash
# MS COCO as published: 4 GPUs × 2 images (global batch 8), 80k iterations.
#   sbatch -p <partition> [-A <account>] launch/slurm_coco.sh [key=value ...]
# All variables of launch/slurm_train.sh apply (GPUS_PER_NODE, DATA_ROOT, WORK_DIR, ...).
#SBATCH --job-name=afa-coco
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=72:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=coco GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-4}} exec bash launch/slurm_train.sh "$@"
