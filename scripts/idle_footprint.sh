#!/usr/bin/env bash
# Benchmark program: the agent daemon's resident memory while connected to a controller and idle,
# against the 5 MB AWS gives for its Greengrass nucleus lite (written in C). Measures the agent as
# it goes on a device (the `device` cargo profile, built here if needed) against the release
# controller; loopback only; stops what it starts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release"
AGENT_BIN="$ROOT/target/device/edgefleet-agent"
(cd "$ROOT" && cargo build --release --bin edgefleet && cargo build --profile device --bin edgefleet-agent) >&2
WORK=$(mktemp -d)
trap 'kill $AGENT $CONTROLLER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/edgefleet" serve --listen 127.0.0.1:0 --data-dir "$WORK/c" > "$WORK/addr" 2> "$WORK/c.log" &
CONTROLLER=$!
for _ in $(seq 50); do grep -q listening "$WORK/addr" && break; sleep 0.1; done
ADDR=$(sed -n 's/^edgefleet controller listening on //p' "$WORK/addr")
# As on a device: TLS, enrolled with a one-time token, a client certificate afterwards.
TOKEN=$("$BIN/edgefleet" --credentials "$WORK/c/credentials.json" agents enroll --name footprint)
"$AGENT_BIN" run --controller "https://$ADDR" --enroll-token "$TOKEN" --name footprint \
  --data-dir "$WORK/a" 2> "$WORK/a.log" &
AGENT=$!
sleep "${SETTLE_S:-10}"
grep -q "connected to the controller" "$WORK/a.log" || { echo "the agent did not connect:" >&2; cat "$WORK/a.log" >&2; exit 1; }
rss=$(awk '/^VmRSS/ {print $2}' /proc/$AGENT/status)
anon=$(awk '/^RssAnon/ {print $2}' /proc/$AGENT/status)
file=$(awk '/^RssFile/ {print $2}' /proc/$AGENT/status)
echo "agent idle resident memory: $((rss)) kB (anonymous $anon kB, file-backed $file kB: code pages and shared libraries)"
awk -v r="$rss" 'BEGIN { printf "ratio to the 5 MB (5000 kB) goal: %.2f\n", r / 5000 }'
