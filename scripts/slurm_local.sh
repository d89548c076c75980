#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, to test the launch scripts under a real scheduler.
#
#   bash scripts/slurm_local.sh test
#
# `test` (as root; CI runs it after `make test`):
#   1. installs slurm-wlm and munge from the Debian packages when they are missing (apt-get);
#   2. starts munged, slurmctld and slurmd for this host only (loopback addresses, free ports,
#      proctrack/linuxproc, task/none, CPUs only, no GPU gres; config, state, spool and logs in a
#      temporary folder);
#   3. submits launch/slurm_voc.sh with the demo data and a short CPU schedule (2 gloo ranks), and
#      beside it runs the same training uninterrupted with torchrun;
#   4. requeues the job in mid-run (`scontrol requeue`, then `scontrol update StartTime=now` to
#      release it), and checks that the second attempt resumed (AUTO_RESUME, SLURM_RESTART_COUNT=1),
#      that the job log kept the first attempt (--open-mode=append), and that the final weights and
#      optimiser state equal the uninterrupted run's bit for bit;
#   5. cancels what is left, stops the daemons it started and removes its temporary folder, on
#      success, failure or interrupt.
# Exits 0 only if every check passed. VENV (default .venv) is the Python environment to train with;
# SLURM_LOCAL_KEEP=1 keeps the temporary folder (logs, checkpoints) for inspection.
set -euo pipefail

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-${REPO}/.venv}
DEADLINE=$((SECONDS + ${SLURM_LOCAL_TIMEOUT:-270}))  # the whole test, install included
MAX_ITERS=10
TMP=""
JOB=""
PIDS=()
REF_PID=""
POLICY_RC=""

say() { echo "slurm_local: $*"; }
die() {
    echo "slurm_local: FAIL: $*" >&2
    exit 1
}

# Run "$@" until it succeeds, up to $1 seconds and never past the deadline.
wait_until() {
    local limit=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ "${SECONDS}" -ge "${limit}" ] || [ "${SECONDS}" -ge "${DEADLINE}" ]; then
            return 1
        fi
        sleep 0.5
    done
}

install_if_missing() {
    local tool missing=0
    for tool in munged slurmctld slurmd sbatch scontrol; do
        command -v "${tool}" >/dev/null 2>&1 || missing=1
    done
    [ "${missing}" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed, and installing them needs root"
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm and munge are missing and there is no apt-get"
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep the packages from starting system daemons
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC=/usr/sbin/policy-rc.d
    fi
    say "installing slurm-wlm and munge (apt-get)"
    local start=${SECONDS}
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge \
        </dev/null >/dev/null
    say "installed in $((SECONDS - start)) s"
    if [ -n "${POLICY_RC}" ]; then
        rm -f "${POLICY_RC}"
        POLICY_RC=""
    fi
}

free_port() {
    "${VENV}/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    if [ -n "${JOB}" ]; then
        scancel "${JOB}" 2>/dev/null
        wait_until 30 job_gone >/dev/null 2>&1  # let slurmstepd end the job's processes
    fi
    if [ -n "${REF_PID}" ] && kill -0 "${REF_PID}" 2>/dev/null; then
        kill "${REF_PID}"
        wait "${REF_PID}" 2>/dev/null
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # slurmd, slurmctld, munged: the reverse of starting
        pid=${PIDS[i]}
        kill "${pid}" 2>/dev/null
        for _ in $(seq 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${pid}" 2>/dev/null
        wait "${pid}" 2>/dev/null
    done
    if [ "${rc}" != 0 ] && [ -n "${TMP}" ] && [ -d "${TMP}/log" ]; then
        for f in "${TMP}"/log/*.log "${TMP}"/job-*.out "${TMP}"/ref.out; do
            [ -f "${f}" ] && { echo "---- ${f} (tail)"; tail -n 25 "${f}"; } >&2
        done
    fi
    [ -n "${POLICY_RC}" ] && rm -f "${POLICY_RC}"
    if [ -n "${TMP}" ] && [ "${SLURM_LOCAL_KEEP:-0}" = 1 ]; then
        echo "slurm_local: kept ${TMP} (SLURM_LOCAL_KEEP=1)" >&2
    elif [ -n "${TMP}" ]; then
        rm -rf "${TMP}"
    fi
    exit "${rc}"
}

job_state() { scontrol show job -o "${JOB}" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
job_gone() { case "$(job_state)" in "" | COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) return 0 ;; *) return 1 ;; esac; }
node_idle() { [ "$(sinfo -h -n "${NODE}" -o %t 2>/dev/null)" = "idle" ]; }
job_running() { [ "$(job_state)" = "RUNNING" ]; }
job_pending() { [ "$(job_state)" = "PENDING" ]; }
job_done() { job_gone && [ -n "$(job_state)" ]; }
checkpoint_at_2() { [ -f "${TMP}/work_slurm/checkpoints/iter_2.pt" ]; }

write_config() {
    local node_line
    node_line=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=... of this machine
    NODE=$(sed 's/^NodeName=\([^ ]*\).*/\1/' <<<"${node_line}")
    cat >"${TMP}/slurm.conf" <<EOF
ClusterName=afalocal
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${TMP}/munge/munge.socket
CredType=cred/munge
StateSaveLocation=${TMP}/state
SlurmdSpoolDir=${TMP}/spool
SlurmctldPidFile=${TMP}/slurmctld.pid
SlurmdPidFile=${TMP}/slurmd.pid
SlurmctldLogFile=${TMP}/log/slurmctld.log
SlurmdLogFile=${TMP}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobRequeue=1
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
${node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=afa Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_cluster() {
    mkdir -p "${TMP}/munge" "${TMP}/state" "${TMP}/spool" "${TMP}/log"
    chmod 711 "${TMP}" "${TMP}/munge"  # munged wants its socket reachable
    head -c 1024 /dev/urandom >"${TMP}/munge/munge.key"
    chmod 400 "${TMP}/munge/munge.key"
    munged -F --force --key-file="${TMP}/munge/munge.key" --socket="${TMP}/munge/munge.socket" \
        --pid-file="${TMP}/munge/munged.pid" --seed-file="${TMP}/munge/munged.seed" \
        >>"${TMP}/log/munged.log" 2>&1 &
    PIDS+=($!)
    wait_until 20 test -S "${TMP}/munge/munge.socket" || die "munged did not start"
    write_config
    export SLURM_CONF="${TMP}/slurm.conf"
    slurmctld -D -i -f "${SLURM_CONF}" >>"${TMP}/log/slurmctld.stdout" 2>&1 &
    PIDS+=($!)
    slurmd -D -f "${SLURM_CONF}" >>"${TMP}/log/slurmd.stdout" 2>&1 &
    PIDS+=($!)
    wait_until 60 node_idle || die "node ${NODE} did not become idle: $(sinfo -N 2>&1 | tail -n 2)"
    say "cluster up: node ${NODE}, $(sinfo -h -o '%c CPUs, %m MB' 2>/dev/null)"
}

compare_weights() {
    "${VENV}/bin/python" - "$@" <<'EOF'
import sys

import torch

from utils.runtime.checkpoint import load_checkpoint

a, b, steps = load_checkpoint(sys.argv[1]), load_checkpoint(sys.argv[2]), int(sys.argv[3])
assert a["step"] == b["step"] == steps, (a["step"], b["step"])
diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
diff += [f"optimizer {p}" for p, s in a["optimizer"]["state"].items()
         if not torch.equal(s["exp_avg_sq"], b["optimizer"]["state"][p]["exp_avg_sq"])]
assert not diff, f"tensors differ: {diff[:5]}"
assert len(a["rng"]) == len(b["rng"]) == 2
assert all(torch.equal(x["torch"], y["torch"]) for x, y in zip(a["rng"], b["rng"]))
print(f"{len(a['model'])} weight tensors and the optimiser state identical at step {steps}")
EOF
}

run_test() {
    [ -x "${VENV}/bin/python" ] || die "no Python environment at ${VENV} (run 'make test' first or set VENV)"
    export PATH="${VENV}/bin:${PATH}" PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}" OMP_NUM_THREADS=1
    install_if_missing
    TMP=$(mktemp -d /tmp/afa-slurm.XXXXXX)
    start_cluster
    cd "${REPO}"
    python scripts/make_demo_data.py --out "${TMP}/demo" --num-train 8 --num-val 2 >/dev/null
    local overrides=(
        "dataset.root_dir=${TMP}/demo" "dataset.name_list_dir=${TMP}/demo" dataset.crop_size=64
        dataset.num_workers=0 train.batch_size=2 "train.max_iters=${MAX_ITERS}" train.cam_iters=2
        train.eval_iters=1000 train.log_iters=1 train.ckpt_iters=2 afa.seg_label_switch_iter=5
        val.max_images=2 device=cpu
    )
    torchrun --standalone --nproc_per_node=2 train_voc.py --config configs/demo.yaml \
        "work_dir.dir=${TMP}/work_ref" "${overrides[@]}" >"${TMP}/ref.out" 2>&1 &
    REF_PID=$!
    JOB=$(sbatch --parsable --gres=none --cpus-per-task="$(nproc)" --time=10 \
        --output="${TMP}/job-%j.out" \
        --export="ALL,CONFIG=configs/demo.yaml,WORK_DIR=${TMP}/work_slurm,GPUS_PER_NODE=2,MASTER_ADDR=127.0.0.1,VENV=${VENV}" \
        launch/slurm_voc.sh "${overrides[@]}")
    say "submitted job ${JOB}"
    wait_until 60 job_running || die "job ${JOB} did not start: $(job_state)"
    wait_until 120 checkpoint_at_2 || die "no checkpoint at iteration 2 (state $(job_state))"
    job_running || die "job ${JOB} ended before the requeue ($(job_state))"
    scontrol requeue "${JOB}"
    say "requeued job ${JOB} after iteration $(grep -c ' iter [0-9]' "${TMP}/work_slurm/train.log" || true)"
    wait_until 60 job_pending || die "job ${JOB} not pending after the requeue: $(job_state)"
    scontrol update JobId="${JOB}" StartTime=now
    wait_until 150 job_done || die "job ${JOB} did not finish: $(job_state)"
    local show out
    show=$(scontrol show job -o "${JOB}")
    out="${TMP}/job-${JOB}.out"
    grep -q "JobState=COMPLETED" <<<"${show}" || die "job ended as $(job_state)"
    grep -q "Restarts=1" <<<"${show}" || die "job shows no restart: ${show}"
    grep -q "attempt 1, resume no" "${out}" || die "the first attempt's log was not kept"
    grep -q "attempt 2, resume yes" "${out}" || die "the requeued attempt did not resume"
    grep -q "resumed from ${TMP}/work_slurm/checkpoints/" "${TMP}/work_slurm/train.log" ||
        die "train.log has no resume line"
    wait "${REF_PID}" || die "the uninterrupted run failed"
    REF_PID=""
    compare_weights "${TMP}/work_ref/checkpoints/last.pt" "${TMP}/work_slurm/checkpoints/last.pt" "${MAX_ITERS}" ||
        die "the requeued job's weights differ from the uninterrupted run's"
    say "$(grep -h 'resumed from' "${TMP}/work_slurm/train.log" | sed "s|${TMP}/||")"
    say "PASS: job ${JOB} requeued, resumed (SLURM_RESTART_COUNT=1) and matched the uninterrupted run" \
        "in $((SECONDS - START)) s"
}

case "${1:-}" in
test)
    START=${SECONDS}
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    run_test
    ;;
-h | --help | help)
    usage
    ;;
*)
    usage >&2
    exit 2
    ;;
esac
