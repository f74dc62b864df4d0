#!/usr/bin/env bash
# What the MariaDB tests need: mariadb-server (mariadbd, mariadb-install-db) and the client.
set -euo pipefail
command -v mariadbd >/dev/null && command -v mariadb >/dev/null && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: mariadb-server (run as root to install it)" >&2
    exit 1
fi
apt-get update -qq
# The package's own service is not wanted: the tests start their own servers.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
