#!/usr/bin/env bash
# The main job (README's first command): two real ridondato daemons in network namespaces, a
# client pinging the node IP (VIP), and the Master's cable pulled. Prints who holds the VIP as
# the client sees it, and both nodes' status; a file written on the Master shows up on the Slave,
# before and after the failover. Needs root; installs iproute2, ping, rsync and protoc (to build) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the demo creates network namespaces" >&2; exit 1; }
missing=""
command -v ip >/dev/null || missing="$missing iproute2"
command -v ping >/dev/null || missing="$missing iputils-ping"
command -v rsync >/dev/null || missing="$missing rsync"
# The daemon links the etcd client, whose build compiles etcd's protocol files.
command -v protoc >/dev/null || missing="$missing protobuf-compiler"
if [ -n "$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; fi
cargo build --release --locked -q -p ridondato
bin=$PWD/target/release/ridondato
lab="demo$(( $$ % 10000 ))"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    bash scripts/lab.sh down "$lab"
    rm -rf "$work"
}
trap cleanup EXIT
bash scripts/lab.sh up "$lab"
eval "$(bash scripts/lab.sh env "$lab")"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secret"; chmod 600 "$work/secret"
for n in a b; do
    mkdir -p "$work/$n/files"
    bash scripts/lab-node.sh "$lab" "$n" "$work" "[fs]" "paths = [\"$work/$n/files\"]"
done
start() { bash scripts/lab.sh exec "$lab" "$1" "$bin" run --config "$work/$1.toml" > "$work/$1.log" 2>&1 & pids+=($!); }
status() { bash scripts/lab.sh exec "$lab" "$1" "$bin" status --socket "$work/$1.sock" | sed "s/^/  $1 | /"; }
mac_of() { bash scripts/lab.sh exec "$lab" "$1" cat /sys/class/net/eth0/address; }

echo "== lab $lab: node a $LAB_A, node b $LAB_B, client $LAB_CLIENT, node IP (VIP) $LAB_VIP"
echo "== starting node a, then node b (S10: the first one started becomes Master)"
start a; sleep 2.5; start b; sleep 1.5
status a; status b
echo "== file sync: writing greeting.txt on node a (the Master)"
echo "hello from a, the Master" > "$work/a/files/greeting.txt"
sleep 1
echo "   node b has: $(cat "$work/b/files/greeting.txt" 2>/dev/null || echo '(nothing yet)')"
echo "== the client talks to the VIP only; node a is $(mac_of a), node b is $(mac_of b)"
(
    t0=$(date +%s%N)
    for _ in $(seq 1 120); do
        ok=fail; bash scripts/lab.sh exec "$lab" c ping -c1 -W0.1 -q "$LAB_VIP" >/dev/null 2>&1 && ok=ok
        mac=$(bash scripts/lab.sh exec "$lab" c ip neigh show "$LAB_VIP" | awk '{print $5}')
        printf '  client %6d ms  ping %-4s  VIP at %s\n' $(( ($(date +%s%N) - t0) / 1000000 )) "$ok" "${mac:-?}"
        sleep 0.05
    done
) > "$work/client.log" &
pids+=($!)
sleep 2
echo "== pulling node a's cable (the Master loses its link)"
bash scripts/lab.sh link-down "$lab" a
sleep 3
echo "hello from b, the new Master" > "$work/b/files/after-failover.txt"
echo "== plugging it back: node a returns and stays Slave (S12, no preemption)"
bash scripts/lab.sh link-up "$lab" a
sleep 3
wait "${pids[-1]}" 2>/dev/null || true
uniq -f4 "$work/client.log" | head -40
sleep 1
echo "== file sync follows the Master: after-failover.txt, written on b while a was cut off"
echo "   node a has: $(cat "$work/a/files/after-failover.txt" 2>/dev/null || echo '(nothing yet)')"
status a; status b
echo "== done (logs were in $work, now removed)"
