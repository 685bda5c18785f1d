#!/usr/bin/env bash
# The main job: set up (idempotent), build, and run `edgefleet demo --out DIR` (default: demo-out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${1:-demo-out}
bash scripts/setup.sh
cargo build --release --locked --bins
exec target/release/edgefleet demo --out "$OUT"
