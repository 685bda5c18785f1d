#!/usr/bin/env bash
# Benchmark program: the agent daemon's resident memory while connected to a controller and idle,
# against the 5 MB AWS gives for its Greengrass nucleus lite (written in C). Measures the agent as
# it goes on a device (the `device` cargo profile, built here if needed) against the release
# controller, over TLS as deployed (enrolled with a one-time token, then restarted as a device
# runs most of its life), and the same binary over --insecure plaintext in the same run: their
# difference is what TLS's code and state cost. Loopback only; stops what it starts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release"
AGENT_BIN="$ROOT/target/device/edgefleet-agent"
(cd "$ROOT" && cargo build --release --bin edgefleet && cargo build --profile device --bin edgefleet-agent) >&2
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Starts `edgefleet serve` with extra flags in $WORK/$1; sets ADDR to its address.
serve() {
  "$BIN/edgefleet" serve --listen 127.0.0.1:0 --data-dir "$WORK/$1" "${@:2}" > "$WORK/$1.addr" 2> "$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 50); do grep -q listening "$WORK/$1.addr" && break; sleep 0.1; done
  ADDR=$(sed -n 's/^edgefleet controller listening on //p' "$WORK/$1.addr")
}

# Runs the agent with the given flags until it has settled, connected; sets PID.
agent() {
  local log=$1; shift
  "$AGENT_BIN" run --name footprint "$@" > /dev/null 2>> "$log" &
  PID=$!
  PIDS+=($PID)
  sleep "${SETTLE_S:-10}"
  grep -q "connected to the controller" "$log" || { echo "the agent did not connect:" >&2; cat "$log" >&2; exit 1; }
}

report() {
  local label=$1 pid=$2
  local rss anon file
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  anon=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status)
  file=$(awk '/^RssFile/ {print $2}' /proc/$pid/status)
  echo "$label: $rss kB resident (anonymous $anon kB, file-backed $file kB: code pages and shared libraries); ratio to the 5 MB (5000 kB) goal: $(awk -v r="$rss" 'BEGIN { printf "%.2f", r / 5000 }')"
}

serve tls
TOKEN=$("$BIN/edgefleet" --credentials "$WORK/tls/credentials.json" agents enroll --name footprint)
agent "$WORK/a.log" --controller "https://$ADDR" --enroll-token "$TOKEN" --data-dir "$WORK/a"
report "TLS, just enrolled" "$PID"
kill "$PID"; sleep 1
agent "$WORK/a.log" --controller "https://$ADDR" --data-dir "$WORK/a"
report "TLS, restarted (enrolled)" "$PID"

serve plain --insecure --token footprint
agent "$WORK/p.log" --controller "http://$ADDR" --insecure --token footprint --data-dir "$WORK/p"
report "plaintext (--insecure), same binary" "$PID"
