#!/usr/bin/env bash
# Benchmark program: the agent daemon's resident memory while connected to a controller and idle,
# against the 5 MB AWS gives for its Greengrass nucleus lite (written in C). Measures the agent as
# it goes on a device (the `device` cargo profile, built here if needed) against the release
# controller, over TLS as deployed (enrolled with a one-time token, then restarted as a device
# runs most of its life), and the same binary over --insecure plaintext in the same run: their
# difference is what TLS's code and state cost. Beside them, the smallest C client holding the
# same mutual-TLS connection idle with the system's OpenSSL (scripts/idle_tls_peer.c, built with
# the C compiler and libssl-dev): RSS counts every shared library page whole, PSS shares them
# out, private memory is what the process alone holds. Loopback only; stops what it starts.
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
  local rss anon file pss private
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  anon=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status)
  file=$(awk '/^RssFile/ {print $2}' /proc/$pid/status)
  pss=$(awk '/^Pss:/ {print $2}' /proc/$pid/smaps_rollup)
  private=$(awk '/^Private_(Clean|Dirty):/ {n += $2} END {print n}' /proc/$pid/smaps_rollup)
  echo "$label: RSS $rss kB (anonymous $anon kB, file-backed $file kB), PSS $pss kB, private $private kB; RSS to the 5 MB (5000 kB) goal: $(awk -v r="$rss" 'BEGIN { printf "%.2f", r / 5000 }')"
}

serve tls
TOKEN=$("$BIN/edgefleet" --credentials "$WORK/tls/credentials.json" agents enroll --name footprint)
agent "$WORK/a.log" --controller "https://$ADDR" --enroll-token "$TOKEN" --data-dir "$WORK/a"
report "TLS, just enrolled" "$PID"
kill "$PID"; sleep 1
agent "$WORK/a.log" --controller "https://$ADDR" --data-dir "$WORK/a"
report "TLS, restarted (enrolled)" "$PID"
AGENT_PID=$PID

# The C peer, with the agent's own certificate, beside it.
if [[ ! -f /usr/include/openssl/ssl.h ]]; then
  echo "libssl-dev is missing for the C peer: apt-get install libssl-dev" >&2
  exit 1
fi
cc -O2 -o "$WORK/idle_tls_peer" "$ROOT/scripts/idle_tls_peer.c" -lssl -lcrypto
"$WORK/idle_tls_peer" 127.0.0.1 "${ADDR##*:}" "$WORK/a/ca.pem" "$WORK/a/agent.pem" "$WORK/a/agent.key" \
  > "$WORK/peer.out" 2> "$WORK/peer.err" &
PEER=$!
PIDS+=($PEER)
sleep "${SETTLE_S:-10}"
grep -q connected "$WORK/peer.out" || { echo "the C peer did not connect:" >&2; cat "$WORK/peer.err" >&2; exit 1; }
report "C peer, system OpenSSL, one idle mutual-TLS connection" "$PEER"
report "TLS agent again, same moment" "$AGENT_PID"
awk -v a="$(awk '/^VmRSS/ {print $2}' /proc/$AGENT_PID/status)" -v p="$(awk '/^VmRSS/ {print $2}' /proc/$PEER/status)" \
  -v ap="$(awk '/^Pss:/ {print $2}' /proc/$AGENT_PID/smaps_rollup)" -v pp="$(awk '/^Pss:/ {print $2}' /proc/$PEER/smaps_rollup)" \
  'BEGIN { printf "agent / C peer: RSS %.2fx, PSS %.2fx\n", a / p, ap / pp }'
kill "$PEER" 2>/dev/null || true

serve plain --insecure --token footprint
agent "$WORK/p.log" --controller "http://$ADDR" --insecure --token footprint --data-dir "$WORK/p"
report "plaintext (--insecure), same binary" "$PID"
