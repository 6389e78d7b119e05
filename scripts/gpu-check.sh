#!/usr/bin/env bash
# The GPU path, proven on a GPU: the checks of issue 28 in priority order, each saved as it comes.
#
#   bash scripts/gpu-check.sh [STEP ...]      # default: every step; STEP in env tests trials grid oom bench
#
# Meant for a lent GPU machine whose image holds torch but not the project's other needs: it unpacks
# `.gpupack/` (site.tar.xz: unsloth, bitsandbytes, trl, datasets, peft, optuna, pydantic...; llama.tar.xz:
# llama-cpp-python; home.tar.xz: a $HARNESS_HOME with the tokenizer, the built real-estate split and
# llama.cpp's converter) and runs from the checkout with PYTHONPATH. On a machine where
# `scripts/install.sh` ran, it runs with `.venv/bin/python` and skips the unpacking.
# Output: $OUT/log.txt (the steps and their exit codes) and $OUT/work.tgz (every step's log, results
# and bench JSON), refreshed after each step so a run cut short still returns what finished.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/gpu-check-out}
W=${GPU_CHECK_WORK:-/tmp/gpu-check}
mkdir -p "$OUT" "$W"
LOG=$OUT/log.txt
STEPS=${*:-env tests trials grid oom bench}

if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  if [ -d .gpupack ] && [ ! -d /tmp/.gpusite ]; then
    tar -xJf .gpupack/site.tar.xz -C /tmp && tar -xJf .gpupack/llama.tar.xz -C /tmp/.gpusite \
      && tar -xJf .gpupack/home.tar.xz -C /tmp || { echo "unpacking .gpupack failed" | tee -a "$LOG"; exit 1; }
  fi
  export PYTHONPATH=/tmp/.gpusite:$ROOT HARNESS_HOME=/tmp/.gpuhome HARNESS_TEST_HOME=/tmp/.gpuhome
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 WANDB_MODE=disabled \
  WANDB_SILENT=true TOKENIZERS_PARALLELISM=false UNSLOTH_DISABLE_STATISTICS=1 COLUMNS=200
H="$PY -m harness"
RES=$W/results

# Steps finish concurrently: each packs into its own file, and the rename is atomic.
save() { local tmp="$W.$BASHPID.tgz"
         tar -czf "$tmp" -C "$W" --exclude='*.safetensors' --exclude='*.gguf' --exclude='*.bin' --exclude='*.pt' \
           --exclude='checkpoint-*' . 2>/dev/null; [ -s "$tmp" ] && mv "$tmp" "$OUT/work.tgz"; }
# step NAME LIMIT CMD...: run CMD under a time limit into $W/NAME.log, say how it ended, save.
step() {
  local name=$1 limit=$2; shift 2
  echo "=== $name start $(date -u +%T)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 15 "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc $((SECONDS - t0))s" | tee -a "$LOG"
  tail -n 4 "$W/$name.log" | sed 's/^/    /' | tee -a "$LOG"
  save
}
want() { [[ " $STEPS " == *" $1 "* ]]; }

env_report() {
  nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("transformers", "peft", "trl", "datasets", "accelerate", "unsloth", "unsloth_zoo", "bitsandbytes",
             "liger-kernel", "triton", "optuna", "pydantic", "llama-cpp-python"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
EOF
  # The install decision on this image: which torch scripts/install.sh would keep or install.
  $PY scripts/choose_torch.py --python "$(command -v $PY || echo $PY)"
  $PY -c "import unsloth; from harness.backends.registry import backend_choices; print('backends', backend_choices())"
}

# 1. The GPU tests (the out-of-memory test alone later: it fills the card and would starve the others).
export PY; export -f env_report
want env && step env 180 bash -c env_report
if want tests || want trials || want grid; then
  pids=()
  if want tests; then
    step tests 300 $PY -m pytest -m gpu tests/gpu -k "not out_of_memory" -p no:cacheprovider -q --timeout 280 \
      --junitxml="$W/tests.xml" & pids+=($!)
  fi
  # 3. Real trials through the Unsloth backend, a QLoRA arm, the NF4 arm; 4. two workers pinned to one GPU.
  if want trials; then
    Q="--preset cpu --set eval.limit=32 --set model.base=random:llama-3.2-1b --set train.backend=unsloth --set tracking.wandb=disabled --results $RES"
    ( step quickstart 300 $H run quickstart $Q
      step quickstart-report 120 $H report quickstart $Q ) & pids+=($!)
    ( step rank_ablation 180 $H run rank_ablation --preset smoke --set tracking.wandb=disabled --results "$RES"
      step quant_delta 180 $H run quant_delta --preset smoke --set tracking.wandb=disabled --results "$RES" ) & pids+=($!)
  fi
  if want grid; then
    step grid 240 $H run rank_ablation --preset smoke --set tracking.wandb=disabled --gpus 0 --per-gpu 2 \
      --results "$W/results-gpus" & pids+=($!)
  fi
  wait "${pids[@]}"
  want grid && step grid-status 60 $H status rank_ablation --preset smoke --results "$W/results-gpus"
fi
want oom && step oom 150 $PY -m pytest -m gpu tests/gpu -k out_of_memory -p no:cacheprovider -q --timeout 140
# 2. Throughput beside the raw loops on the Llama-3.1-8B architecture (alone on the card).
if want bench; then
  B="$H bench --arch random:llama-3.1-8b --steps ${BENCH_STEPS:-5} --warmup ${BENCH_WARMUP:-2} --results $RES"
  step bench-unsloth-lora 200 $B --mode lora --backend unsloth
  step bench-unsloth-qlora 200 $B --mode qlora --backend unsloth
  step bench-hf-liger-lora 200 $B --mode lora --backend hf
fi
echo "=== done $(date -u +%T)" | tee -a "$LOG"
save
