# ridondato developer recipes. The README's two commands are scripts/demo.sh and scripts/test.sh.

# every test (what CI runs)
test:
    bash scripts/test.sh

# the scenario files, with their timelines
sim:
    cargo run --release -q -p ridondato -- sim scenarios/*.scn

# N random fault schedules (default 10000) from a first seed
sweep N="10000" SEED="1":
    cargo run --release -q -p ridondato -- sim --sweep {{N}} --seed {{SEED}}

# replay one schedule of the sweep, with its full timeline
repro SEED:
    cargo run --release -q -p ridondato -- sim --sweep 1 --seed {{SEED}}

# record scenario timelines anew, on purpose
rewrite:
    REWRITE=1 cargo test -p ridondato-tests --test scenarios

# simulator speed: simulated seconds per wall second and schedules per second
bench:
    bash scripts/bench-sim.sh

# VIP outage on master link loss, ridondato vs keepalived, false-failover soak, RSS and CPU
bench-failover TRIALS="5" SOAK="300":
    bash scripts/bench-failover.sh {{TRIALS}} {{SOAK}}

# MariaDB: planned switch-over write outage, replication lag p50/p99, power-loss failover semi-sync vs async
bench-db TRIALS="5":
    bash scripts/bench-db.sh {{TRIALS}}

# file sync: latency vs lsyncd, the cap in 1-s windows vs rsync --bwlimit, initial sync vs rsync
bench-fs:
    bash scripts/bench-fs.sh

# cloud mode against moto: public IP move time and the four-step switch-over, step by step
bench-cloud TRIALS="5":
    bash scripts/bench-cloud.sh {{TRIALS}}

# The HTTP API: health checks quiet and under a heartbeat-port flood, the page's first paint, RSS.
bench-api CHECKS="2000":
    bash scripts/bench-api.sh {{CHECKS}}
