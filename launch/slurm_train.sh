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
#   AUTO_RESUME    1: pass --resume when WORK_DIR/checkpoints/ holds last.pt or an iter_<n>.pt [1]
#   VENV           virtual environment to activate             [.venv]
#   MASTER_ADDR    rendezvous host                             [the job's first node]
#   MASTER_PORT    rendezvous port                             [10000 + SLURM_JOB_ID mod 20000]
#
# A requeued job (scontrol requeue, preemption, node failure) reruns this script with
# SLURM_RESTART_COUNT=1, 2, ...; it resumes from the newest intact checkpoint, and --open-mode=append
# keeps the earlier attempts' output in the same log. The port differs between jobs, so two jobs
# sharing a node do not collide; srun passes --cpus-per-task on, since from Slurm 22.05 a step no
# longer inherits it from the batch allocation.
# The global batch is train.batch_size (VOC 4, COCO 8) whatever the GPU count: each process
# gets batch_size / (nodes × GPUS_PER_NODE) images.
#SBATCH --job-name=afa
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
DATASET=${DATASET:-voc}
CONFIG=${CONFIG:-configs/${DATASET}.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-2}}
WORK_DIR=${WORK_DIR:-work_dir_${DATASET}}
AUTO_RESUME=${AUTO_RESUME:-1}
VENV=${VENV:-.venv}
MASTER_PORT=${MASTER_PORT:-$((10000 + ${SLURM_JOB_ID:-19500} % 20000))}
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)}

if [ -f "${VENV}/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "${VENV}/bin/activate"
fi

has_checkpoint() {  # last.pt or any iter_<n>.pt (train_*.py --resume takes the newest intact one)
    local f
    for f in "$1"/last.pt "$1"/iter_*.pt; do
        [ -f "$f" ] && return 0
    done
    return 1
}
ARGS=(--config "${CONFIG}")
RESUMING=no
if [ "${AUTO_RESUME}" = "1" ] && has_checkpoint "${WORK_DIR}/checkpoints"; then
    ARGS+=(--resume)  # flags before the key=value list: argparse does not take them in between
    RESUMING=yes
fi
ARGS+=("work_dir.dir=${WORK_DIR}")
if [ -n "${DATA_ROOT:-}" ]; then
    ARGS+=("dataset.root_dir=${DATA_ROOT}")
fi
echo "afa: job ${SLURM_JOB_ID:-none} attempt $((${SLURM_RESTART_COUNT:-0} + 1)), resume ${RESUMING}," \
    "rendezvous ${MASTER_ADDR}:${MASTER_PORT}" >&2

SRUN=(srun --kill-on-bad-exit=1)
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    SRUN+=(--cpus-per-task="${SLURM_CPUS_PER_TASK}")
fi
"${SRUN[@]}" torchrun \
    --nnodes="${SLURM_NNODES:-1}" \
    --nproc_per_node="${GPUS_PER_NODE}" \
    --rdzv_id="${SLURM_JOB_ID:-afa}" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="${MASTER_ADDR}:${MASTER_PORT}" \
    "train_${DATASET}.py" "${ARGS[@]}" "$@"
