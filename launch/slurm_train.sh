#!/usr/bin/env bash
# Train AFA under Slurm: srun starts one torchrun per node, torchrun one process per GPU.
#
#   sbatch -p <partition> -A <account> launch/slurm_train.sh [key=value ...]
#   DATASET=coco GPUS_PER_NODE=4 sbatch --gres=gpu:4 -p <partition> launch/slurm_train.sh
#
# Partition and account are yours to pass to sbatch; nothing here names them. The #SBATCH lines
# below are defaults that sbatch's own flags override (e.g. --gres=gpu:4 --time=48:00:00).
#
# Environment variables (defaults in brackets):
#   DATASET        voc | coco                                  [voc]
#   CONFIG         YAML config                                 [configs/$DATASET.yaml]
#   GPUS_PER_NODE  processes per node                          [$SLURM_GPUS_ON_NODE, else 2]
#   DATA_ROOT      dataset.root_dir override                   [the config's]
#   WORK_DIR       work_dir.dir (checkpoints, logs)            [work_dir_$DATASET]
#   AUTO_RESUME    1: pass --resume when WORK_DIR/checkpoints/last.pt exists (requeued jobs) [1]
#   VENV           virtual environment to activate             [.venv]
#   MASTER_PORT    rendezvous port                             [29500]
# The global batch is train.batch_size (VOC 4, COCO 8) whatever the GPU count: each process
# gets batch_size / (nodes × GPUS_PER_NODE) images.
#SBATCH --job-name=afa
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
DATASET=${DATASET:-voc}
CONFIG=${CONFIG:-configs/${DATASET}.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-2}}
WORK_DIR=${WORK_DIR:-work_dir_${DATASET}}
AUTO_RESUME=${AUTO_RESUME:-1}
VENV=${VENV:-.venv}
MASTER_PORT=${MASTER_PORT:-29500}
MASTER_ADDR=$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)

if [ -f "${VENV}/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "${VENV}/bin/activate"
fi

ARGS=(--config "${CONFIG}" "work_dir.dir=${WORK_DIR}")
if [ -n "${DATA_ROOT:-}" ]; then
    ARGS+=("dataset.root_dir=${DATA_ROOT}")
fi
if [ "${AUTO_RESUME}" = "1" ] && [ -f "${WORK_DIR}/checkpoints/last.pt" ]; then
    ARGS+=(--resume)
fi

srun --kill-on-bad-exit=1 torchrun \
    --nnodes="${SLURM_NNODES:-1}" \
    --nproc_per_node="${GPUS_PER_NODE}" \
    --rdzv_id="${SLURM_JOB_ID:-afa}" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="${MASTER_ADDR}:${MASTER_PORT}" \
    "train_${DATASET}.py" "${ARGS[@]}" "$@"
