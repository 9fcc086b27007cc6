#!/usr/bin/env bash
# Runs the three 3-D examples side by side (one process each, sharing one GPU
# when there is one) with full settings, each stopping new runs after
# MAX_MINUTES. Results, curves and logs go to OUT (default runs/3d).
#
#   bash examples/run_3d_examples.sh [OUT]
#
# Needs the processed furniture and b9 data (datasets/fetch_furniture.sh,
# datasets/fetch_meshes.sh; processed on first use).
set -uo pipefail
OUT="${1:-runs/3d}"
MAX_MINUTES="${MAX_MINUTES:-6}"
LIMIT_S="${LIMIT_S:-520}"
THREADS="${THREADS:-4}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"

run() {  # name, then the example's arguments
  local name="$1"; shift
  timeout "$LIMIT_S" "$PY" "examples/$name.py" --threads "$THREADS" \
      --max-minutes "$MAX_MINUTES" --out "$OUT/$name" "$@" \
      > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name exit $rc" >> "$OUT/status.txt"
}

"$PY" -c "import torch, hsa_graph; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    > "$OUT/env.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/env.txt" 2>&1 || true

run point_cloud_classification --num-points 2048 --epochs 30 --seeds 3 &
run multimodal_classification --num-points 1024 --epochs 25 --seeds 3 &
run mesh_segmentation --epochs 100 --seeds 3 &
wait
cat "$OUT/status.txt"
