#!/usr/bin/env bash
# Installs JupyterHub's configurable-http-proxy from the npm registry into
# tests/jupyterhub/node_modules, for tests/test_hub.py; does nothing when it
# is there already. Installs Debian's node and npm first if npm is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$here/tests/jupyterhub"
[ -x "$prefix/node_modules/.bin/configurable-http-proxy" ] && exit 0
command -v npm >/dev/null || "$here/scripts/system-deps.sh" nodejs npm
# The lock file pins the whole tree.
npm ci --prefix "$prefix" --no-audit --no-fund --loglevel=error
