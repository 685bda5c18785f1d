#!/usr/bin/env bash
# Idempotent set-up for packaging and for the ARM tests: cargo-deb (pinned), and with --cross the
# aarch64 Rust target, Debian's aarch64 cross compiler and qemu-user (which runs the aarch64
# agent here, with qemu-user-binfmt); systemd-analyze checks the units; Debian's chromium renders
# the HTML report for its browser test, and chromium-driver drives it for the web console's;
# tinyproxy and libfaketime serve the proxy and wrong-clock tests; PostgreSQL's server binaries
# run the store's tests on PostgreSQL; s3s-fs serves the object-store tests. Debian packages need
# root (apt-get); without it this says which command to run. With --debian-root it also makes a
# minimal Debian 12 root with debootstrap (from the mirror this machine's apt uses) under the
# cache, which the package tests copy to install the packages for real without touching this
# machine. A second run checks and does nothing more.
set -euo pipefail
CARGO_DEB_VERSION=3.8.0
log() { printf 'setup-packaging: %s\n' "$*" >&2; }
die() { printf 'setup-packaging: error: %s\n' "$*" >&2; exit 1; }
CROSS=0 DEBIAN_ROOT=0
for arg in "$@"; do
  case "$arg" in
    --cross) CROSS=1 ;;
    --debian-root) DEBIAN_ROOT=1 ;;
    *) die "unknown option $arg (--cross, --debian-root)" ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EDGEFLEET_CACHE:-$ROOT/.cache/edgefleet}

# Debian packages this needs, by the command each provides.
NEED=()
command -v systemd-analyze >/dev/null || NEED+=(systemd)
command -v dpkg-deb >/dev/null || NEED+=(dpkg)
# The report's browser test (tests/e2e/tests/report_browser.rs) opens report.html in it.
command -v chromium >/dev/null || NEED+=(chromium)
# The web console's browser tests (tests/e2e/tests/console.rs) drive it over WebDriver.
command -v chromedriver >/dev/null || NEED+=(chromium-driver)
# The proxy and wrong-clock tests: an HTTP proxy (tests/e2e/src/http_proxy.rs) and libfaketime
# (tests/e2e/src/fake_clock.rs; the faketime package pulls in libfaketime with its
# multi-threaded libfaketimeMT.so.1). tinyproxy-bin is the program alone: Debian's tinyproxy
# package adds a system service that starts on install where services may start; the tests run
# their own tinyproxy, on their own ports, and need no service.
[[ -x /usr/bin/tinyproxy || -x /usr/sbin/tinyproxy ]] || NEED+=(tinyproxy-bin)
compgen -G '/usr/lib/*-linux-gnu/faketime/libfaketimeMT.so.1' >/dev/null || NEED+=(faketime)
# The store's tests and the end-to-end flows on PostgreSQL start their own throwaway cluster
# with its server binaries (tests/postgres); the package's own cluster and service are unused.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || NEED+=(postgresql)
# Several controller replicas behind one address (tests/e2e/tests/replicas.rs): HAProxy in TCP
# mode, run by the tests in the foreground on their own ports.
[[ -x /usr/sbin/haproxy ]] || NEED+=(haproxy)
if [[ $CROSS -eq 1 ]]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || NEED+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || NEED+=(qemu-user)
  [[ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]] || NEED+=(qemu-user-binfmt)
fi
if [[ $DEBIAN_ROOT -eq 1 ]]; then
  command -v debootstrap >/dev/null || NEED+=(debootstrap)
fi
if [[ ${#NEED[@]} -gt 0 ]]; then
  if [[ $EUID -ne 0 ]]; then
    die "missing Debian packages; run: sudo apt-get install ${NEED[*]}"
  fi
  log "installing ${NEED[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${NEED[@]}" >/dev/null \
    || die "apt-get could not install ${NEED[*]}"
fi
[[ -x /usr/bin/tinyproxy || -x /usr/sbin/tinyproxy ]] \
  || die "tinyproxy is in neither /usr/bin nor /usr/sbin after installing tinyproxy-bin"

# The aarch64 agent starts its aarch64 worker as a child process: the kernel must hand aarch64
# programs to qemu (binfmt_misc, as Debian's qemu-user-binfmt sets up under systemd; done here
# by hand where systemd does not run, e.g. in a container or CI).
BINFMT=/proc/sys/fs/binfmt_misc
if [[ $CROSS -eq 1 && ! -e $BINFMT/qemu-aarch64 ]]; then
  [[ $EUID -eq 0 ]] || die "aarch64 programs are not handed to qemu (no $BINFMT/qemu-aarch64); as root: mount -t binfmt_misc binfmt_misc $BINFMT; cat /usr/lib/binfmt.d/qemu-aarch64.conf > $BINFMT/register"
  [[ -e $BINFMT/register ]] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
    || die "cannot mount binfmt_misc on $BINFMT"
  [[ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]] || die "qemu-user-binfmt is not installed (apt-get install qemu-user-binfmt)"
  log "handing aarch64 programs to qemu (binfmt_misc)"
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$BINFMT/register" || die "cannot register qemu-aarch64 with binfmt_misc"
fi

if [[ $CROSS -eq 1 ]] && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  command -v rustup >/dev/null || die "rustup not found: the aarch64 target comes from rustup (https://rustup.rs)"
  log "adding the Rust target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

if [[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]]; then
  log "installing cargo-deb $CARGO_DEB_VERSION (about a minute)"
  cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi

# The S3 server the object-store tests run against (tests/s3): s3s-fs checks signatures and the
# expiry of presigned URLs. Pinned (later versions need a newer Rust); built once into the
# repository's cache, about three and a half minutes on two cores.
S3S_FS_VERSION=0.14.1
S3S_FS="$ROOT/.cache/s3s-fs/bin/s3s-fs"
if [[ "$("$S3S_FS" --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]]; then
  log "building the S3 server for tests, s3s-fs $S3S_FS_VERSION, into $ROOT/.cache/s3s-fs (about 4 minutes)"
  cargo install --quiet --locked --version "$S3S_FS_VERSION" --features binary \
    --root "$ROOT/.cache/s3s-fs" s3s-fs
fi

# The throwaway Debian root (tests/e2e/tests/packages.rs): minbase, plus init-system-helpers
# (deb-systemd-helper, which every systemd machine has) so that the packages' maintainer scripts
# enable their units as they would on a device. Made once; the tests copy it.
if [[ $DEBIAN_ROOT -eq 1 ]]; then
  BASE="$CACHE/debian-root/bookworm"
  if [[ ! -x "$BASE/usr/bin/apt-get" || ! -x "$BASE/usr/bin/deb-systemd-helper" ]]; then
    [[ $EUID -eq 0 ]] || die "making a Debian root needs root (debootstrap, chroot)"
    # The mirror this machine's own apt fetches bookworm from (deb822 or one-line sources).
    MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
      /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [[ -n "$MIRROR" ]] || MIRROR=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
      /etc/apt/sources.list 2>/dev/null | head -1)
    [[ -n "$MIRROR" ]] || die "no Debian mirror in /etc/apt/sources.list{,.d}: debootstrap needs one"
    log "making a Debian 12 root for the package tests in $BASE (about 200 MB, half a minute)"
    rm -rf "$BASE.tmp" && mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase --include=init-system-helpers bookworm "$BASE.tmp" "$MIRROR" \
      >"$CACHE/debian-root/debootstrap.log" 2>&1 \
      || die "debootstrap failed (see $CACHE/debian-root/debootstrap.log)"
    rm -rf "$BASE" && mv "$BASE.tmp" "$BASE"
  fi
fi
