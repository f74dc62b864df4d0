#!/usr/bin/env bash
# Simulator speed for both tiers: schedules per second and simulated seconds per wall second.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ridondato
target/release/ridondato sim --bench
