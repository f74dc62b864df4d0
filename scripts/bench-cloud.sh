#!/usr/bin/env bash
# Cloud mode against moto: the public IP move and the four-step switch-over (lab, root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps-lan.sh
bash scripts/deps-cloud.sh
cargo bench --locked -q -p ridondato --bench cloud_switchover -- "${1:-5}"
