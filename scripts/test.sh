#!/usr/bin/env bash
# The test command (CI runs exactly this): set up (idempotent), check formatting and lints, build
# the binaries the end-to-end tests start as processes, then run every test in the workspace.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace --bins
cargo test --locked --workspace
