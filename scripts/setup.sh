#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the CPU build of torch,
# hsa_graph and its test extras, and the offline real data (datasets/fetch_*.sh).
# Sourced by run.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || pip install -q torch==2.13.0
pip install -q -e ".[test,plot,text,graph,chem]" "torch==2.13.0"
export HSA_DATA="${HSA_DATA:-$ROOT/data}"
mkdir -p "$HSA_DATA"
for script in datasets/fetch_*.sh; do
    [ -e "$script" ] || continue
    echo "== $script"
    bash "$script" || { echo "$script failed" >&2; exit 1; }
done
