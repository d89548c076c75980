#!/usr/bin/env bash
# The one prepared check for a GPU machine (no network, little time): about 8 minutes in all.
#
#   bash scripts/gpu_check.sh OUTDIR                      # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh OUTDIR --device cpu --quick # dry run of every step on a CPU (tiny sizes)
#
# 1. installs what is missing from wheels carried in ./wheels (git-ignored) with pip --no-index; fill it
#    on a machine with network:  pip download omegaconf antlr4-python3-runtime==4.9.3 -d wheels/
#    (both pure Python; the dense CRF is not installed and its golden case is skipped);
# 2. the golden suite on the device, TF32 off (scripts/check_golden.py --device, when it has that option);
# 3. scripts/benchmark.py train-step fp32 and bf16 (mit_b1, crop 512, batch 4), validate and infer;
# 4. a short demo training on the device, plain and under torchrun --nproc_per_node=1;
# 5. nvidia-smi and every result as JSON (or text) in OUTDIR, summary in OUTDIR/summary.json.
# Each step has its own time limit; a failing step is recorded and the next one runs.
set -u
OUT=${1:?usage: gpu_check.sh OUTDIR [--device cpu|cuda] [--quick]}
shift
DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
export PYTHONPATH=$ROOT
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS="$OUT/steps.txt"
: > "$STEPS"

# step NAME LIMIT_S CMD...: run with a time limit, log to OUT/NAME.log, record rc and seconds
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - t0))" >> "$STEPS"
  echo "[gpu_check] $name: rc $rc in $((SECONDS - t0)) s"
  return 0
}

# last_json LOG DEST: the benchmark's last line (its JSON object) into DEST
last_json() { tail -n 1 "$1" > "$2"; }

# 1. missing pure-Python packages from ./wheels
if ! "$PY" -c "import omegaconf" 2>/dev/null; then
  if [ -d wheels ]; then
    step install 120 "$PY" -m pip install --no-index --find-links wheels omegaconf antlr4-python3-runtime==4.9.3
  else
    echo "install 1 0 (no ./wheels folder; see the header of this script)" >> "$STEPS"
  fi
fi
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } \
  > "$OUT/nvidia_smi.csv" 2>&1
"$PY" - > "$OUT/env.json" <<'PYEOF'
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                  "gpu": torch.cuda.get_device_name(0) if cuda else None}))
PYEOF

if [ "$QUICK" = 1 ]; then
  BB=mit_tiny; CROP=128; BATCH=2; ITERS=1; WARM=0; DEMO_ITERS=4; GOLDEN_ONLY="--only par radius_mask"
  DATA_SIZE=(--num-train 16 --num-val 4)
else
  BB=mit_b1; CROP=512; BATCH=4; ITERS=10; WARM=3; DEMO_ITERS=60; GOLDEN_ONLY=""
  DATA_SIZE=(--num-train 240 --num-val 60)
fi

# 2. golden suite (no dense CRF), TF32 off
if [ -z "$GOLDEN_ONLY" ]; then
  GOLDEN_ONLY="--only $(ls tests/golden/*.npz | xargs -n1 basename | sed 's/\.npz$//' \
    | grep -v -e '^model_state$' -e '^dense_crf$' | tr '\n' ' ')"
fi
GOLDEN_DEV=""
if "$PY" scripts/check_golden.py --help 2>/dev/null | grep -q -- "--device"; then
  GOLDEN_DEV="--device $DEVICE"
else
  echo "golden_device 1 0 (check_golden.py has no --device option: the cases ran on the CPU)" >> "$STEPS"
fi
# shellcheck disable=SC2086
step golden 150 "$PY" scripts/check_golden.py tests/golden $GOLDEN_DEV $GOLDEN_ONLY

# 3. benchmarks
BENCH=(--backbone "$BB" --crop "$CROP" --batch "$BATCH" --iters "$ITERS" --warmup "$WARM" --device "$DEVICE" --json)
step bench_train_fp32 120 "$PY" scripts/benchmark.py train-step "${BENCH[@]}"
last_json "$OUT/bench_train_fp32.log" "$OUT/bench_train_fp32.json"
step bench_train_bf16 120 "$PY" scripts/benchmark.py train-step "${BENCH[@]}" --amp bf16
last_json "$OUT/bench_train_bf16.log" "$OUT/bench_train_bf16.json"
step bench_train_fast_bf16 90 "$PY" scripts/benchmark.py train-step "${BENCH[@]}" --amp bf16 --fast
last_json "$OUT/bench_train_fast_bf16.log" "$OUT/bench_train_fast_bf16.json"
step bench_validate 60 "$PY" scripts/benchmark.py validate "${BENCH[@]}"
last_json "$OUT/bench_validate.log" "$OUT/bench_validate.json"
step bench_validate_batched 45 "$PY" scripts/benchmark.py validate "${BENCH[@]}" --val-batch "$BATCH"
last_json "$OUT/bench_validate_batched.log" "$OUT/bench_validate_batched.json"
step bench_infer 45 "$PY" scripts/benchmark.py infer "${BENCH[@]}"
last_json "$OUT/bench_infer.log" "$OUT/bench_infer.json"

# 4. demo training, plain and torchrun
DATA="$OUT/demo_data"
step demo_data 60 "$PY" scripts/make_demo_data.py --out "$DATA" "${DATA_SIZE[@]}"
DEMO=(--config configs/demo.yaml "dataset.root_dir=$DATA" "dataset.name_list_dir=$DATA" "device=$DEVICE"
      "train.max_iters=$DEMO_ITERS" "train.eval_iters=$DEMO_ITERS" "train.log_iters=$(( DEMO_ITERS / 2 ))"
      "train.cam_iters=$(( DEMO_ITERS / 4 ))" "afa.seg_label_switch_iter=$(( DEMO_ITERS / 2 ))"
      "scheduler.warmup_iter=1" "val.max_images=8" "dataset.num_workers=2")
step demo_plain 120 "$PY" train_voc.py "${DEMO[@]}" "work_dir.dir=$OUT/demo_plain"
step demo_torchrun 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train_voc.py \
  "${DEMO[@]}" "work_dir.dir=$OUT/demo_torchrun"

# 5. summary
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = {}
for line in (out / "steps.txt").read_text().splitlines():
    name, rc, rest = (line.split(" ", 2) + [""])[:3]
    steps[name] = {"rc": int(rc), "detail": rest}
bench = {}
for p in sorted(out.glob("bench_*.json")):
    try:
        r = json.loads(p.read_text())
        bench[p.stem] = {k: r.get(k) for k in ("sec_per_iter", "images_per_sec", "peak_mem_bytes")}
    except (json.JSONDecodeError, OSError):
        bench[p.stem] = None
golden = (out / "golden.log").read_text().strip().splitlines()[-1:] if (out / "golden.log").exists() else []
summary = {"steps": steps, "bench": bench, "golden": golden, "ok": all(s["rc"] == 0 for s in steps.values())}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PYEOF
