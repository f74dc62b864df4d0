#!/usr/bin/env bash
# What the LAN lab tests and the demo need: iproute2, nftables, ping, curl (the API's client),
# haproxy (the load-balancer example).
# Installs only what is missing.
set -euo pipefail
missing=""
command -v ip >/dev/null || missing="$missing iproute2"
command -v nft >/dev/null || missing="$missing nftables"
command -v ping >/dev/null || missing="$missing iputils-ping"
command -v curl >/dev/null || missing="$missing curl"
command -v haproxy >/dev/null || missing="$missing haproxy"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing:$missing (run as root to install them)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
