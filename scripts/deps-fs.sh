#!/usr/bin/env bash
# What the file-sync tests need: rsync. Installs it only when missing.
set -euo pipefail
command -v rsync >/dev/null && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: rsync (run as root to install it)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
