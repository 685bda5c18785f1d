#!/usr/bin/env bash
# Installs the edgefleet agent package on this device and enrolls it, as root:
#   sudo ./install-agent.sh edgefleet-agent_VERSION_ARCH.deb \
#        --controller https://controller:7070 --enroll-token TOKEN [--label site=store-42 ...]
# The same as the two commands it runs: `apt-get install ./PACKAGE.deb` (its dependencies
# resolved; dpkg refuses a package of another architecture) and `edgefleet-agent enroll ARGS`
# (writes /etc/edgefleet/agent.toml, keeps the certificate in /var/lib/edgefleet-agent, starts
# edgefleet-agent.service). TOKEN comes from `edgefleet agents enroll` on the controller.
# Installing a newer package the same way upgrades in place: the agent restarts with its
# identity, models and unsent results (run `enroll` only once).
set -euo pipefail
[[ $# -ge 1 && -f "$1" && "$1" == *.deb ]] \
  || { echo "install-agent: the first argument must be the edgefleet-agent .deb" >&2; exit 64; }
[[ $EUID -eq 0 ]] || { echo "install-agent: run as root" >&2; exit 64; }
PACKAGE=$(realpath "$1")
shift
apt-get install -y "$PACKAGE"
if [[ $# -gt 0 ]]; then
  exec edgefleet-agent enroll "$@"
fi
echo "install-agent: installed; enroll with: edgefleet-agent enroll --controller URL --enroll-token TOKEN"
