#!/usr/bin/env bash
# Set up the real openpi client (openpi-client 0.1.2 from PyPI) in its own venv, .venv-openpi at the
# repository root (or $VIPA_OPENPI_VENV), for tests/test_openpi.py: openpi-client pins numpy<2, which
# cannot share the project's .venv (numpy==2.4.6). Small: numpy 1.26, msgpack, websockets, dm-tree.
# Idempotent: a second run only checks. Usage: scripts/setup_openpi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VIPA_OPENPI_VENV:-.venv-openpi}"
py=$(command -v python3.11 || true)
if [ -z "$py" ]; then
  echo "setup_openpi: python3.11 not found" >&2
  exit 1
fi
stamp="$venv/.vipa-openpi-installed"
if [ -f "$stamp" ] && [ ! "$0" -nt "$stamp" ]; then
  echo "setup_openpi: ready ($venv/bin/python)"
  exit 0
fi
t0=$(date +%s)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# openpi-client 0.1.2 imports typing_extensions without declaring it
"$venv/bin/python" -m pip install -q "openpi-client==0.1.2" typing-extensions
"$venv/bin/python" -c "from openpi_client.websocket_client_policy import WebsocketClientPolicy"
touch "$stamp"
echo "setup_openpi: ready ($venv/bin/python) in $(( $(date +%s) - t0 )) s"
