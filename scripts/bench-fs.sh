#!/usr/bin/env bash
# File sync against its anchors in one run: change-to-replica latency (ridondato, lsyncd default,
# lsyncd delay=0), the bandwidth cap in every 1-second window (ridondato, rsync --bwlimit),
# initial sync of 10 000 small files (ridondato, plain rsync). Needs rsync and lsyncd; installs
# them when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps-fs.sh
if ! command -v lsyncd >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "missing: lsyncd (run as root to install it)" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lsyncd >/dev/null
fi
cargo run --release --locked -q -p ridondato-adapters --features fs-sync --example bench_fs
