#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb:
#   edgefleet-agent_VERSION_amd64.deb, edgefleet-agent_VERSION_arm64.deb  (agent, worker, ONNX
#     Runtime of that architecture, unit, example config, completions, man pages)
#   edgefleet_VERSION_amd64.deb                                            (controller and CLI)
#
#   scripts/package.sh [--arch amd64|arm64|all] [--profile device|release|dev] [--out DIR]
#                      [--features F] [--no-build] [--fast]
#
# --profile: the agent's build profile (default `device`: size-optimised, what a device should
#   run; the controller then uses `release`). `dev` packages debug builds, for tests.
# --features: cargo features for the agent (e.g. edgefleet-agent/tract).
# --no-build: package binaries already built with the same profile and target.
# --fast: quicker compression (larger files).
# Installs what it needs (cargo-deb, the aarch64 target and cross compiler) through
# scripts/setup_packaging.sh. Packages land in --out (default target/debian).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${EDGEFLEET_CACHE:-$ROOT/.cache/edgefleet}
ORT_VERSION=1.31.1
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

ARCHES=all PROFILE=device OUT=target/debian FEATURES="" BUILD=1 FAST=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCHES=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --features) FEATURES=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --fast) FAST=(--fast); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$ARCHES" in
  all) ARCHES="amd64 arm64" ;;
  amd64|arm64) ;;
  *) die "--arch must be amd64, arm64 or all, not $ARCHES" ;;
esac
case "$PROFILE" in
  dev) PROFILE_DIR=debug; CONTROLLER_PROFILE=dev ;;
  release) PROFILE_DIR=release; CONTROLLER_PROFILE=release ;;
  device) PROFILE_DIR=device; CONTROLLER_PROFILE=release ;;
  *) die "--profile must be device, release or dev, not $PROFILE" ;;
esac
[[ "$OUT" = /* ]] || OUT="$ROOT/$OUT"

bash scripts/setup_packaging.sh $([[ "$ARCHES" == *arm64* ]] && echo --cross)

triple_of() { case "$1" in amd64) echo x86_64-unknown-linux-gnu ;; arm64) echo aarch64-unknown-linux-gnu ;; esac; }
wheel_platform_of() { case "$1" in amd64) echo manylinux_2_27_x86_64 ;; arm64) echo manylinux_2_28_aarch64 ;; esac; }
# Where cargo puts a build for this architecture: the host's own folder for the host, so that
# the tests' and the demo's builds are reused.
build_dir_of() {
  local arch=$1 profile_dir=$2
  if [[ "$(triple_of "$arch")" == "$(rustc -vV | sed -n 's/^host: //p')" ]]; then
    echo "$ROOT/target/$profile_dir"
  else
    echo "$ROOT/target/$(triple_of "$arch")/$profile_dir"
  fi
}
target_args_of() {
  local triple; triple=$(triple_of "$1")
  [[ "$triple" == "$(rustc -vV | sed -n 's/^host: //p')" ]] || echo "--target $triple"
}

# The ONNX Runtime library of an architecture, from that architecture's PyPI wheel (cached).
ort_library() {
  local arch=$1 dir="$CACHE/lib/$1"
  local lib="$dir/libonnxruntime.so.$ORT_VERSION"
  # scripts/setup.sh already took the x86_64 one out of the same wheel.
  if [[ $arch == amd64 && -f "$CACHE/lib/libonnxruntime.so.$ORT_VERSION" ]]; then
    echo "$CACHE/lib/libonnxruntime.so.$ORT_VERSION"; return
  fi
  if [[ ! -f "$lib" ]]; then
    mkdir -p "$dir/wheel"
    log "downloading the onnxruntime==$ORT_VERSION wheel for $arch"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
      --python-version 3.11 --platform "$(wheel_platform_of "$arch")" -d "$dir/wheel" \
      "onnxruntime==$ORT_VERSION" || die "pip could not download onnxruntime==$ORT_VERSION for $arch"
    "$PY" - "$dir/wheel" "$lib" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("onnxruntime-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/capi/" + pathlib.Path(sys.argv[2]).name))
    pathlib.Path(sys.argv[2] + ".tmp").write_bytes(z.read(name))
pathlib.Path(sys.argv[2] + ".tmp").rename(sys.argv[2])
PYEOF
    rm -rf "$dir/wheel"
  fi
  echo "$lib"
}

HOST_BIN="$ROOT/target/$PROFILE_DIR"
if [[ $BUILD -eq 1 ]]; then
  for arch in $ARCHES; do
    log "building the agent for $arch ($PROFILE)"
    # shellcheck disable=SC2046
    cargo build --locked --profile "$PROFILE" -p edgefleet-agent --bins $(target_args_of "$arch") \
      ${FEATURES:+--features "$FEATURES"}
  done
  log "building the controller ($CONTROLLER_PROFILE)"
  cargo build --locked --profile "$CONTROLLER_PROFILE" -p edgefleet-controller --bins
  # The completions and man pages come from the host's binaries (the same clap definitions).
  [[ "$ARCHES" == *amd64* ]] || cargo build --locked --profile "$PROFILE" -p edgefleet-agent --bins
fi
CONTROLLER_BIN="$ROOT/target/$([[ $CONTROLLER_PROFILE == dev ]] && echo debug || echo release)"
[[ -x "$HOST_BIN/edgefleet-agent" && -x "$CONTROLLER_BIN/edgefleet" ]] \
  || die "no host build in $HOST_BIN and $CONTROLLER_BIN (run without --no-build)"

# Completions and man pages: written by the binaries themselves, then placed in each build
# folder, where the package metadata's target/release/deb-assets/ points.
ASSETS=$(mktemp -d)
trap 'rm -rf "$ASSETS"' EXIT
mkdir -p "$ASSETS/completions" "$ASSETS/man/agent" "$ASSETS/man/controller"
for pair in "edgefleet-agent:$HOST_BIN/edgefleet-agent:agent" "edgefleet:$CONTROLLER_BIN/edgefleet:controller"; do
  IFS=: read -r name binary kind <<<"$pair"
  "$binary" completions bash > "$ASSETS/completions/$name.bash"
  "$binary" completions zsh > "$ASSETS/completions/_$name"
  "$binary" completions fish > "$ASSETS/completions/$name.fish"
  "$binary" man-pages "$ASSETS/man/$kind"
done
gzip -9n "$ASSETS"/man/*/*.1

mkdir -p "$OUT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for arch in $ARCHES; do
  dir=$(build_dir_of "$arch" "$PROFILE_DIR")
  [[ -x "$dir/edgefleet-agent" && -x "$dir/edgefleet-agent-worker" ]] \
    || die "no $arch agent build in $dir (run without --no-build)"
  cp -f "$(ort_library "$arch")" "$dir/libonnxruntime.so.$ORT_VERSION"
  rm -rf "$dir/deb-assets" && cp -r "$ASSETS" "$dir/deb-assets"
  # shellcheck disable=SC2046
  cargo deb --no-build --quiet -p edgefleet-agent --profile "$PROFILE" $(target_args_of "$arch") \
    "${FAST[@]}" -o "$OUT/edgefleet-agent_${VERSION}-1_$arch.deb"
  log "wrote $OUT/edgefleet-agent_${VERSION}-1_$arch.deb"
done
rm -rf "$CONTROLLER_BIN/deb-assets" && cp -r "$ASSETS" "$CONTROLLER_BIN/deb-assets"
cargo deb --no-build --quiet -p edgefleet-controller --profile "$CONTROLLER_PROFILE" "${FAST[@]}" \
  -o "$OUT/edgefleet_${VERSION}-1_amd64.deb"
log "wrote $OUT/edgefleet_${VERSION}-1_amd64.deb"
