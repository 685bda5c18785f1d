#!/usr/bin/env bash
# Installs the edgefleet agent on this device (run as root):
#   sudo ./install-agent.sh --binary ./edgefleet-agent --onnxruntime ./libonnxruntime.so.1.31.1 \
#        --controller https://controller:7070 --enroll-token TOKEN [--label site=store-42 ...]
# (TOKEN from `edgefleet agents enroll` on the controller; used once, then the agent holds its
# own certificate.)
# Puts the binary and library under /opt/edgefleet, writes /etc/edgefleet/agent.toml (unless it
# exists), creates the edgefleet user, installs and starts the systemd unit. Safe to run again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BINARY="" LIBRARY="" CONTROLLER="" TOKEN="" LABELS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --onnxruntime) LIBRARY=$2; shift 2 ;;
    --controller) CONTROLLER=$2; shift 2 ;;
    --enroll-token) TOKEN=$2; shift 2 ;;
    --label) LABELS+=("$2"); shift 2 ;;
    *) echo "install-agent: unknown option $1" >&2; exit 64 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "install-agent: run as root" >&2; exit 1; }
[[ -x "$BINARY" ]] || { echo "install-agent: --binary must point to the edgefleet-agent binary" >&2; exit 64; }
[[ -x "$(dirname "$BINARY")/edgefleet-agent-worker" ]] || { echo "install-agent: edgefleet-agent-worker must sit next to --binary" >&2; exit 64; }
[[ -f "$LIBRARY" ]] || { echo "install-agent: --onnxruntime must point to libonnxruntime.so.1.31.1" >&2; exit 64; }
[[ -n "$CONTROLLER" && -n "$TOKEN" ]] || { echo "install-agent: --controller and --enroll-token are required" >&2; exit 64; }

install -d -m 0755 /opt/edgefleet/bin /opt/edgefleet/lib /etc/edgefleet
install -m 0755 "$BINARY" /opt/edgefleet/bin/edgefleet-agent
# The benchmark worker the daemon starts for each job lives next to it.
install -m 0755 "$(dirname "$BINARY")/edgefleet-agent-worker" /opt/edgefleet/bin/edgefleet-agent-worker
install -m 0644 "$LIBRARY" /opt/edgefleet/lib/libonnxruntime.so.1.31.1
id edgefleet >/dev/null 2>&1 || useradd --system --home /var/lib/edgefleet-agent --shell /usr/sbin/nologin edgefleet
if [[ ! -f /etc/edgefleet/agent.toml ]]; then
  umask 077
  {
    echo "controller = \"$CONTROLLER\""
    echo "enroll_token = \"$TOKEN\""
    echo "data_dir = \"/var/lib/edgefleet-agent\""
    echo "onnxruntime_library = \"/opt/edgefleet/lib/libonnxruntime.so.1.31.1\""
    echo "[labels]"
    for label in "${LABELS[@]}"; do echo "${label%%=*} = \"${label#*=}\""; done
  } > /etc/edgefleet/agent.toml
  chown root:edgefleet /etc/edgefleet/agent.toml && chmod 0640 /etc/edgefleet/agent.toml
fi
/opt/edgefleet/bin/edgefleet-agent check --config /etc/edgefleet/agent.toml
install -m 0644 "$HERE/systemd/edgefleet-agent.service" /etc/systemd/system/edgefleet-agent.service
systemctl daemon-reload
systemctl enable edgefleet-agent.service
# restart, not just start: an upgrade must replace the running daemon
systemctl restart edgefleet-agent.service
echo "install-agent: running; it appears in \`edgefleet agents\` once it reaches $CONTROLLER"
