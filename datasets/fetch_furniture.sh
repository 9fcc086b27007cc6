#!/usr/bin/env bash
# Sweet Home 3D furniture libraries for hsa_graph.datasets.SweetHome3DFurniture
# (docs/point_clouds.md, docs/multimodal.md).
#
#   Debian package sweethome3d-furniture (120 MB, no Java): 820 OBJ models with
#   128x128 icons in /usr/share/sweethome3d/furniture/*.sh3f. Licences: CC-BY 3.0
#   (Scopia, KatorLegaz, Reallusion, BlendSwap-CC-BY) and CC0 (BlendSwap-CC-0); see
#   LICENSE.TXT inside each .sh3f archive.
#
# The dataset copies the .sh3f files into its own raw/ folder on first use; set
# HSA_SH3D_DIR to read them from somewhere else.
# Idempotent: does nothing when the libraries are already installed.
set -euo pipefail
DIR="${HSA_SH3D_DIR:-/usr/share/sweethome3d/furniture}"
if ls "$DIR"/*.sh3f >/dev/null 2>&1; then
  echo "[fetch_furniture] already installed in $DIR"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
echo "[fetch_furniture] apt-get install -y sweethome3d-furniture"
$SUDO apt-get install -y -qq sweethome3d-furniture >/dev/null 2>&1 || {
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq sweethome3d-furniture >/dev/null; }
echo "[fetch_furniture] done: $(ls /usr/share/sweethome3d/furniture/*.sh3f | wc -l) libraries"
