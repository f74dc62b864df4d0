#!/usr/bin/env bash
# Planned switch-over write outage and replication lag on two real mariadbd servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps-db.sh
cargo run --release --locked -q -p ridondato-adapters --features mariadb --example bench_db
# Failover row: Master power losses under writes through the VIP, semi-sync vs async (lab, root).
bash scripts/deps-lan.sh
cargo bench --locked -q -p ridondato --bench db_failover -- "${1:-5}"
