#!/usr/bin/env bash
# What the cloud tests need: moto's server (PyPI `moto[server]`), which answers the EC2 API on
# loopback, in its own virtual environment so that the system's Python stays untouched.
set -euo pipefail
VENV=/opt/ridondato-moto
[ -x "$VENV/bin/moto_server" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: $VENV/bin/moto_server (run as root to install it)" >&2
    exit 1
fi
PY=/usr/bin/python3
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q 'moto[server]'
"$VENV/bin/moto_server" --help >/dev/null
