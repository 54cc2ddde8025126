#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-serve,caption,test,models,distributed,milvus,laion,video} bash scripts/setup.sh   # the Ray tests start a local cluster
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
"${VENV:-.venv}/bin/python" -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$status"
