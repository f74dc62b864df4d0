#!/usr/bin/env bash
# The main job (README's first command): a simulated two-node pair, the Master loses power, the
# Slave takes over; printed as a timeline. No database or network set-up needed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -q -p ridondato -- sim scenarios/master_crash.scn scenarios/master_reboot.scn
