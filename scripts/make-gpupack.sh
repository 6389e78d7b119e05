#!/usr/bin/env bash
# Packs what a bare GPU image (Python 3.12 with torch, transformers, pandas...) lacks for
# scripts/gpu-check.sh into .gpupack/ (about 18 MB, compressed to travel in a 64 MiB working tree):
#   site.tar.xz   unsloth, bitsandbytes, trl, datasets, liger-kernel (via MAKE_GPUSITE, a builder such as
#                 the team's make-gpusite.sh) plus peft, optuna, pydantic, sqlalchemy (pure Python), gguf
#   llama.tar.xz  llama-cpp-python as installed in .venv (a ctypes wheel, any Python 3)
#   home.tar.xz   a $HARNESS_HOME: the default tokenizer (no weights), the built real-estate split,
#                 llama.cpp's converter
# Usage: MAKE_GPUSITE=/path/to/make-gpusite.sh bash scripts/make-gpupack.sh   (after scripts/install.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MAKE_GPUSITE:?set MAKE_GPUSITE to a script that builds a Python 3.12 site folder of unsloth & co.}"
SP=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
HOME_SRC=${HARNESS_HOME:-$HOME/.cache/harness}
EXTRA_PKGS="pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 optuna==5.1.0
 alembic==1.20.1 colorlog==6.12.0 SQLAlchemy==2.1.9 Mako==1.4.3 peft==0.21.2 gguf==0.19.0" \
  bash "$MAKE_GPUSITE" .gpusite
# SQLAlchemy runs without its Cython speed-ups; greenlet (asyncio only) and test folders are not needed.
find .gpusite/sqlalchemy \( -name '*.so' -o -name '*.c' -o -name '*.pyx' -o -name '*.pxd' \) -delete
rm -rf .gpusite/greenlet .gpusite/greenlet-*.dist-info .gpusite/test .gpusite/tests .gpusite/include
find .gpusite -name __pycache__ -prune -exec rm -rf {} +
# The tokenizer and the default real-estate split, provisioned into the cache if missing.
.venv/bin/python -c "from harness.models import resolve_model; from harness.data.realestate import load_builtin
from pathlib import Path; import os; resolve_model('smollm2-135m-instruct')
load_builtin(0, Path('$HOME_SRC') / 'data')"
rm -rf .gpuhome && mkdir -p .gpuhome/models/smollm2-135m-instruct .gpuhome/data
(cd "$HOME_SRC/models/smollm2-135m-instruct" && cp ./*.json ./*.jinja "$OLDPWD/.gpuhome/models/smollm2-135m-instruct/")
cp -r "$HOME_SRC/data/realestate" .gpuhome/data/
[ -d "$HOME_SRC/llama.cpp" ] && cp -r "$HOME_SRC/llama.cpp" .gpuhome/
mkdir -p .gpupack
tar -cJf .gpupack/site.tar.xz .gpusite
tar -cJf .gpupack/home.tar.xz .gpuhome
tar -cJf .gpupack/llama.tar.xz -C "$SP" --exclude=__pycache__ llama_cpp llama_cpp_python-*.dist-info diskcache \
  diskcache-*.dist-info
for d in .gpupack .gpuhome .gpusite; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
du -sh .gpupack/*
