#!/usr/bin/env bash
# Simulator speed, tier 1 (pure harness): schedules per second and simulated seconds per wall
# second, single-threaded and on all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ridondato
bin=target/release/ridondato
echo "tier 1 (pure harness), 1 thread:"
"$bin" sim --sweep 3000 --seed 100000 --threads 1 | head -1 || true
echo "tier 1 (pure harness), all cores:"
"$bin" sim --sweep 10000 --seed 100000 | head -1 || true
