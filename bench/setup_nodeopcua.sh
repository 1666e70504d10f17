#!/usr/bin/env bash
# Installs node-opcua (the OPC UA stack many SCADA test servers are built on) into
# bench/nodeopcua/ (gitignored, never committed): the plant server of bench.opcua_sessions, and
# the independent server and HMI client of tests/integration/test_nodeopcua_peer.py
# (scripts/setup runs this when npm is there). Versions pinned: a peer that moves under the
# tests would make their failures mean nothing.
# Usage: bench/setup_nodeopcua.sh        (needs node >= 18 + npm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/nodeopcua"

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install Node.js >= 18 to run the node-opcua server" >&2
  exit 1
fi
mkdir -p "$dest"
cd "$dest"
[ -f package.json ] || echo '{"name": "bridge-bench-nodeopcua", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error node-opcua-server@2.182.2 node-opcua-client@2.182.2
echo "node-opcua installed in $dest: $(node -e 'console.log(require("node-opcua-server/package.json").version)')"
