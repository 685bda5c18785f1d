#!/usr/bin/env bash
# The main job: set up (idempotent), build, and run `edgefleet demo --out DIR` (default: demo-out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-demo-out}
[[ "$OUT" = /* ]] || OUT="$PWD/$OUT"   # relative to where the command was run
cd "$ROOT"
bash scripts/setup.sh
cargo build --release --locked --bins
# The binaries find .cache/edgefleet by themselves; a cache moved elsewhere is passed on.
if [[ -n "${EDGEFLEET_CACHE:-}" ]]; then
  export ORT_DYLIB_PATH="$EDGEFLEET_CACHE/lib/libonnxruntime.so.1.31.1" EDGEFLEET_MODELS="$EDGEFLEET_CACHE/models"
fi
exec target/release/edgefleet demo --out "$OUT"
