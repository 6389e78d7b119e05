#!/usr/bin/env bash
# Runs the `cpu` preset of every registered experiment for real (embedded SmolLM2, 2 CPU cores are
# enough) and writes results/<experiment>-cpu/: report.md, report.json, report/{tables,figures} and
# reproduction.json (commit, date, wall and CPU seconds of the run and its report).
#
#   bash scripts/reproduce-results.sh                      # all of them, one after another
#   bash scripts/reproduce-results.sh voice quickstart     # some of them
#
# distill_vs_data's teacher and three_way's "frontier" are endpoints. Offline, they are a local stand-in:
# llama.cpp's OpenAI-compatible server (llama-cpp-python) serving the embedded SmolLM2-135M-Instruct GGUF,
# started here on STANDIN_PORT (default 8080). Point them at a real endpoint with
#   STANDIN_URL=https://.../v1 STANDIN_MODEL=name bash scripts/reproduce-results.sh three_way
# (and an api_key_env / prices through HARNESS_SET, e.g. HARNESS_SET="contestants.0.endpoint.api_key_env=OPENAI_API_KEY").
# `forgetting` reads the lm-eval benchmark subsets from $HARNESS_BENCHMARKS (README: "Benchmark data").
# A run that is stopped resumes where it stopped: run the same command again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PY=${PY:-.venv/bin/python}
export WANDB_SILENT=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

ALL=(quickstart sft_vs_dpo rank_ablation forgetting quant_delta sft_vs_grpo voice distill_vs_data three_way)
if [ $# -gt 0 ]; then EXPERIMENTS=("$@"); else EXPERIMENTS=("${ALL[@]}"); fi

PORT=${STANDIN_PORT:-8080}
URL=${STANDIN_URL:-}
MODEL=${STANDIN_MODEL:-smollm2-135m-instruct-q4_1}
SERVER_PID=""
stop_server() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; SERVER_PID=""; }
trap stop_server EXIT

NOTE_SETS=()  # a real endpoint given: the presets' "local stand-in" notes no longer apply
[ -n "$URL" ] && NOTE_SETS=(--set "distill.teacher.note=" --set "contestants.0.endpoint.note=")
start_standin() {
    [ -n "$URL" ] && return 0
    local gguf log
    gguf=$("$PY" -c "from harness.models import embedded_gguf_path; print(embedded_gguf_path('smollm2-135m-instruct'))")
    log=$(mktemp -t standin-server-XXXX.log)
    echo "local stand-in endpoint: llama.cpp server on 127.0.0.1:$PORT serving $(basename "$gguf") (log: $log)"
    "$PY" -m llama_cpp.server --model "$gguf" --model_alias "$MODEL" --host 127.0.0.1 --port "$PORT" \
        --n_ctx 2048 >"$log" 2>&1 &
    SERVER_PID=$!
    URL="http://127.0.0.1:$PORT/v1"
    for _ in $(seq 1 180); do
        if "$PY" -c "import httpx,sys; sys.exit(httpx.get('$URL/models', timeout=2).status_code != 200)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "the stand-in server exited:"; tail -20 "$log"; exit 1; }
        sleep 1
    done
    echo "the stand-in server did not answer on $URL within 180 s:"; tail -20 "$log"; exit 1
}

for exp in "${EXPERIMENTS[@]}"; do
    sets=()
    for s in ${HARNESS_SET:-}; do sets+=(--set "$s"); done
    case "$exp" in
        distill_vs_data)
            start_standin
            sets+=(--set "distill.teacher.url=$URL" --set "distill.teacher.model=$MODEL" "${NOTE_SETS[@]:0:2}") ;;
        three_way)
            start_standin
            sets+=(--set "contestants.0.endpoint.url=$URL" --set "contestants.0.endpoint.model=$MODEL" "${NOTE_SETS[@]:2:2}") ;;
    esac
    echo "== $exp (cpu preset) $(date -u +%FT%TZ)"
    # The run and its report, timed together; CPU seconds are this process tree's (not the stand-in server's).
    "$PY" - "$exp" "${sets[@]}" <<'EOF'
import json, os, resource, subprocess, sys, time
from datetime import datetime, timezone
from pathlib import Path

exp, sets = sys.argv[1], sys.argv[2:]
py = os.environ.get("PY", ".venv/bin/python")
out = Path("results") / f"{exp}-cpu"
# The code the run starts with (a pull during a long run must not relabel it).
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "harness", "analysis", "experiments"],
                            capture_output=True, text=True).stdout.strip())
steps = {}
t_all = time.monotonic()
for step in ("run", "report"):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    code = subprocess.call([py, "-m", "harness", step, exp, "--preset", "cpu", *sets])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    steps[step] = {"wall_s": round(time.monotonic() - t0, 1),
                   "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
                   "exit": code}
    if code != 0:
        sys.exit(f"harness {step} {exp} --preset cpu exited {code}")
record = {"experiment": exp, "preset": "cpu", "sets": sets, "commit": commit + ("-dirty" if dirty else ""),
          "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu_count": os.cpu_count(),
          "wall_s": round(time.monotonic() - t_all, 1), "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 1),
          "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
          "steps": steps}
tmp = out / "reproduction.json.tmp"
tmp.write_text(json.dumps(record, indent=2) + "\n")
tmp.replace(out / "reproduction.json")
print(f"{exp}: {record['wall_s'] / 60:.1f} min wall, {record['cpu_s'] / 60:.1f} CPU min -> {out}/report.md")
EOF
done
