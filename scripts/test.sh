#!/usr/bin/env bash
# The full test run (README's second command, and what CI runs): installs what the tests need if
# it is missing, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "error: cargo is required (a Rust toolchain from rustup)" >&2
    exit 1
fi
# Each real backend brings its own installer (scripts/deps-*.sh); they do nothing when all is there.
for deps in scripts/deps-*.sh; do
    [ -e "$deps" ] && bash "$deps"
done
# What a reviewer runs first: formatting and lints (warnings are errors).
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# A one-shot build gains nothing from incremental caches and they cost gigabytes of disk.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --workspace --all-features --locked
# The sweeps run the binary the tests just built (same profile and features): a second, release
# build of the whole workspace would double the disk and add minutes for a few seconds saved.
# Ten thousand random fault schedules (seeds 1..10000, about 13 s here); any failure prints the
# one command that replays it.
cargo run --all-features --locked -q -p ridondato -- sim --sweep 10000
# The same kind of schedules through the real async driver under turmoil (about 100 s unoptimised
# at its 5 ms tick).
cargo run --all-features --locked -q -p ridondato -- sim --sweep 300 --tier2
# The scenario files once more through the operator's command, as a newcomer would run them.
cargo run --all-features --locked -q -p ridondato -- sim scenarios/*.scn > /tmp/ridondato-scenarios.txt
grep -c '^PASS' /tmp/ridondato-scenarios.txt | xargs -I{} echo "{} scenarios passed through \`ridondato sim\`"
# What this run left on disk (a clean build is about 4 GB; CI machines may have little more).
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
