#!/usr/bin/env bash
# The HTTP API's targets in the lab (root): health latency quiet and flooded, first paint, RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps-lan.sh
bash scripts/deps-web.sh
cargo bench --locked -q -p ridondato --bench api -- "${1:-2000}"
