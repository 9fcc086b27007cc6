#!/usr/bin/env bash
# Installs everything (idempotent) and runs the main job: HSA vs flat softmax
# attention (FSA) on real document classification, quick mode (< 5 minutes).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup.sh
python examples/document_classification.py --quick "$@"
