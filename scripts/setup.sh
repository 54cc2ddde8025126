#!/usr/bin/env bash
# Create (or update) ./.venv with clipmath and everything it needs, CPU-only, offline weights included.
# Usage: bash scripts/setup.sh            (VENV=path to use another folder; EXTRAS=serve,caption,test,distributed to
#                                         choose the optional parts: distributed brings Ray for `--engine ray`)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-serve,caption,test}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# torch first, pinned: an unpinned torch would pull several GB of CUDA builds.
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -c constraints.txt -e ".[$EXTRAS]"
"${PIP[@]}" install -c constraints.txt --no-deps -r requirements-offline.txt
"$VENV/bin/python" -c "import torch, transformers, faiss; print('clipmath environment ready:', 'torch', torch.__version__, '| transformers', transformers.__version__)"
