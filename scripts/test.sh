#!/usr/bin/env bash
# The test command (CI runs exactly this): set up (idempotent), check formatting and lints, build
# the binaries the end-to-end tests start as processes, then run every test in the workspace.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# cargo-deb, the aarch64 target, its cross compiler and qemu-user, for the package and ARM tests,
# and the throwaway Debian root the package tests install into.
bash scripts/setup_packaging.sh --cross --debian-root
cargo fmt --all -- --check
# The tract engine is a cargo feature of the agent; CI builds and tests it too.
# No incremental caches: a test run builds once, and they would double target/ on a shared disk
# (set CARGO_INCREMENTAL=1 to keep them while iterating).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
FEATURES=(--features edgefleet-agent/tract)
cargo clippy --locked --workspace --all-targets "${FEATURES[@]}" -- -D warnings
cargo build --locked --workspace --bins "${FEATURES[@]}"
# The aarch64 agent, once, for tests/e2e/tests/arm.rs (it runs under qemu-user on tract) and the
# arm64 package in tests/e2e/tests/packages.rs; without debug info, which it does not need.
CARGO_PROFILE_DEV_DEBUG=0 cargo build --locked -p edgefleet-agent --bins \
  --target aarch64-unknown-linux-gnu "${FEATURES[@]}"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
# --no-fail-fast: every test binary runs, so one failure does not hide the others.
cargo test --locked --no-fail-fast --workspace "${FEATURES[@]}" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary, doc-tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
