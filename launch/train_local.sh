#!/usr/bin/env bash
# Train on the GPUs of this machine with torchrun (no Slurm).
#   GPUS=2 bash launch/train_local.sh [key=value ...]
#   DATASET=coco GPUS=4 bash launch/train_local.sh dataset.root_dir=/data/MSCOCO
# Variables: DATASET (voc|coco) [voc], CONFIG [configs/$DATASET.yaml], GPUS [2],
#            RESUME (1: pass --resume) [0].
# GPUS=1 runs one process with the full global batch (train.batch_size), which reproduces the
# multi-GPU schedule apart from BatchNorm statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-voc}
CONFIG=${CONFIG:-configs/${DATASET}.yaml}
GPUS=${GPUS:-2}
ARGS=(--config "${CONFIG}")
if [ "${RESUME:-0}" = "1" ]; then
    ARGS+=(--resume)
fi
if [ "${GPUS}" = "1" ]; then
    exec python "train_${DATASET}.py" "${ARGS[@]}" "$@"
fi
exec torchrun --standalone --nproc_per_node="${GPUS}" "train_${DATASET}.py" "${ARGS[@]}" "$@"
