#!/usr/bin/env bash
# The controller's memory while it registers a big model:
#   scripts/models_add_peak.sh [BIN] [MODEL]
# starts `BIN serve` (default target/release/edgefleet) on a fresh data folder, registers MODEL
# (default SmolLM2's single-file fp32 model from the set-up, 538 MB) and prints the server's peak
# resident memory (VmHWM) before and after. The registry reads an ONNX file's structure as a
# stream and seeks over its weights, so the peak should not grow with the model.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/edgefleet}
MODEL=${2:-${EDGEFLEET_CACHE:-$ROOT/.cache/edgefleet}/models/smollm2-135m/model.fp32.onnx}
[[ -x "$BIN" ]] || { echo "no $BIN: cargo build --release --bins first" >&2; exit 1; }
[[ -f "$MODEL" ]] || { echo "no $MODEL: run scripts/setup.sh first" >&2; exit 1; }
D=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$D/c" > "$D/out" 2> "$D/log" &
PID=$!
for _ in $(seq 300); do grep -q listening "$D/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on //p' "$D/out")
export EDGEFLEET_CONTROLLER=https://$ADDR EDGEFLEET_CREDENTIALS=$D/c/credentials.json
for _ in $(seq 300); do "$BIN" agents >/dev/null 2>&1 && break; sleep 0.2; done
before=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
"$BIN" models add "$MODEL" --name big --version fp32 >/dev/null
after=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
echo "$(basename "$MODEL") ($(( $(stat -c %s "$MODEL") / 1000000 )) MB): controller peak RSS $((before/1024)) MB before models add, $((after/1024)) MB after"
kill "$PID"; wait "$PID" 2>/dev/null || true; rm -rf "$D"
