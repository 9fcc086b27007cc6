#!/usr/bin/env bash
# The CPU benchmark suite behind docs/performance.md (about 12 minutes on 2 idle cores).
# Usage: bash benchmarks/run_cpu_suite.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
T=${1:-2}
OUT=benchmarks/results
mkdir -p "$OUT"
# 1. HSA vs SDPA and PyG layers, batch 1, balanced and ragged trees, fwd+bwd, float32, 8 x 64, b = 16.
$PY benchmarks/attention.py --device cpu --threads "$T" --leaves 1024 4096 16384 65536 \
    --methods hsa sdpa tconv_knn --reps 3 --budget 8 --out $OUT/cpu_attention.json
$PY benchmarks/attention.py --device cpu --threads "$T" --leaves 1024 4096 \
    --methods gps dense_hsa --shapes balanced --reps 2 --budget 8 --out $OUT/cpu_pyg_dense.json
# 2. A batch of 8 trees of 4,096 leaves.
$PY benchmarks/attention.py --device cpu --threads "$T" --leaves 4096 --batch 8 \
    --methods hsa sdpa --shapes balanced --reps 3 --budget 8 --out $OUT/cpu_batch8.json
# 3. Branching sweep at 16,384 leaves.
$PY benchmarks/attention.py --device cpu --threads "$T" --leaves 16384 --branching 2 4 8 16 32 64 \
    --methods hsa --shapes balanced ragged --reps 3 --budget 5 --out $OUT/cpu_branching.json
$PY benchmarks/report.py $OUT/cpu_attention.json $OUT/cpu_pyg_dense.json $OUT/cpu_batch8.json \
    --png docs/img/perf_cpu.png --title "CPU, $T threads, float32, fwd+bwd"
$PY benchmarks/report.py $OUT/cpu_branching.json
