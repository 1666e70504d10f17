#!/usr/bin/env bash
# Installs what the peer comparison and the REST load test need, outside the Python venv:
#   - Node-RED + node-red-contrib-opcua into bench/nodered/ (gitignored, never committed)
#   - wrk (Debian package) for the HTTP load figures (and bench.peer's sink ceiling)
# bench.peer's MES stand-in (bench/sink.js) needs only node.
# Usage: bench/setup_nodered.sh        (needs node >= 18 + npm; apt-get for wrk when root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/nodered"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
  else
    echo "wrk is missing: install it (Debian: sudo apt-get install -y wrk)" >&2
  fi
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install Node.js >= 18 to run the Node-RED comparison" >&2
  exit 1
fi
mkdir -p "$dest"
cd "$dest"
[ -f package.json ] || echo '{"name": "bridge-bench-nodered", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error node-red@4 node-red-contrib-opcua
echo "Node-RED installed in $dest: $(node -e 'console.log(require("node-red/package.json").version)')"
