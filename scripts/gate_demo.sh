#!/bin/bash
# The performance gate on one agent with release binaries: fp32 installed, int8 let through
# the gate, fp32 stopped by it. Needs scripts/setup.sh and `cargo build --release --bins`.
set -u
cd "$(dirname "$0")/.."
B=target/release
D=$(mktemp -d)
$B/edgefleet serve --listen 127.0.0.1:0 --data-dir $D/ctl --heartbeat-s 1 > $D/ctl.out 2> $D/ctl.log &
CTL=$!
sleep 1
ADDR=https://$(head -1 $D/ctl.out | sed 's/.*listening on //')
# The file serve wrote: the address, its CA and an operator token.
export EDGEFLEET_CREDENTIALS=$D/ctl/credentials.json
TOKEN=$($B/edgefleet agents enroll --name edge-1)
$B/edgefleet-agent run --controller $ADDR --enroll-token "$TOKEN" --name edge-1 --data-dir $D/agent --onnxruntime-library .cache/edgefleet/lib/libonnxruntime.so.1.31.1 2> $D/agent.log &
AG=$!
sleep 2
M=.cache/edgefleet/models/minilm-l6
$B/edgefleet models add $M/model.fp32.onnx --name minilm --version fp32 --quant fp32 --with $M/tokenizer.json
$B/edgefleet models add $M/model.int8.onnx --name minilm --version int8 --quant int8 --with $M/tokenizer.json
$B/edgefleet rollout start minilm@fp32 --watch > /dev/null
$B/edgefleet rollout start minilm@int8 --gate "p90<=1.10x,energy<=1.10x,quality>=0.99" --watch
$B/edgefleet rollout start minilm@fp32 --gate "p90<=1.10x,memory<=1.10x,quality>=0.99" --watch
$B/edgefleet rollout status
kill $AG $CTL; wait; rm -rf "$D"
