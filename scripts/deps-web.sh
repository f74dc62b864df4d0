#!/usr/bin/env bash
# What the browser test of the System Monitor page needs: Debian's chromium and chromedriver.
set -euo pipefail
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: chromium, chromium-driver (run as root to install them)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
