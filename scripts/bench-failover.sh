#!/usr/bin/env bash
# Failover benchmark, one run, one lab: a client pings the VIP every 10 ms; the Master's cable is
# pulled; outage = the longest gap between replies. 5 trials for each of: ridondato at defaults,
# keepalived at defaults (unicast VRRPv3, advert_int 1), keepalived tuned (advert_int 0.1),
# ridondato tuned (heartbeat as fast as tuned keepalived's adverts), ridondato at a 50 ms
# heartbeat. Then a false-failover soak of each ridondato setting with 5 % random heartbeat loss
# (role changes and suspicions), and the daemon's RSS and idle CPU. Needs root.
#   bench-failover.sh [TRIALS] [SOAK_SECONDS]     (SOAK_SECONDS 0: no soak)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-5}
soak=${2:-300}
bash scripts/deps-lan.sh
command -v keepalived >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived >/dev/null; }
cargo build --release --locked -q -p ridondato
bin=$PWD/target/release/ridondato
out=$(mktemp -d)
lab="bf$(( $$ % 10000 ))"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
cleanup() { stop_all; bash scripts/lab.sh down "$lab"; rm -rf "$out"; }
trap cleanup EXIT

keepalived_conf() { # node advert_int
    local me peer prio
    if [ "$1" = a ]; then me=$LAB_A peer=$LAB_B prio=150; else me=$LAB_B peer=$LAB_A prio=100; fi
    cat > "$out/ka-$1.conf" <<CONF
global_defs {
    vrrp_version 3
    script_user root
    enable_script_security
}
vrrp_instance VI_1 {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int $2
    unicast_src_ip $me
    unicast_peer {
        $peer
    }
    virtual_ipaddress {
        $LAB_VIP/24 dev eth0
    }
}
CONF
}

start_pair() { # kind advert_int|tuning
    local kind=$1 arg=$2
    for n in a b; do
        if [ "$kind" = ridondato ]; then
            rm -rf "$out/$n"
            if [ "$arg" = tuned ]; then
                bash scripts/lab-node.sh "$lab" "$n" "$out" "[timing]" "heartbeat_interval_ms = 100" "failover_timeout_ms = 300" "isolation_timeout_ms = 200" "[garp]" "probe_count = 1" "probe_wait_ms = 30"
            elif [ "$arg" = fast ]; then
                # Twice keepalived's tuned advert rate, and one more heartbeat lost before a
                # takeover attempt than its three adverts.
                bash scripts/lab-node.sh "$lab" "$n" "$out" "[timing]" "heartbeat_interval_ms = 50" "failover_timeout_ms = 200" "isolation_timeout_ms = 120" "[garp]" "probe_count = 1" "probe_wait_ms = 30"
            else
                bash scripts/lab-node.sh "$lab" "$n" "$out"
            fi
            bash scripts/lab.sh exec "$lab" "$n" "$bin" run --config "$out/$n.toml" 2>"$out/$n.log" &
        else
            keepalived_conf "$n" "$arg"
            bash scripts/lab.sh exec "$lab" "$n" keepalived -n -l -D -f "$out/ka-$n.conf" -p "$out/ka-$n.pid" -r "$out/ka-$n.vrrp.pid" >"$out/$n.log" 2>&1 &
        fi
        pids+=($!)
        [ "$n" = a ] && sleep 2.5
    done
    sleep 4
}

# Longest gap between replies, in ms, from `ping -D` output.
gap() { python3 - "$1" <<'PY'
import re, sys
ts = [float(m.group(1)) for m in (re.match(r"\[(\d+\.\d+)\].*bytes from", l) for l in open(sys.argv[1])) if m]
print(round(max((b - a for a, b in zip(ts, ts[1:])), default=float("nan")) * 1000))
PY
}

trial() { # kind arg -> outage ms
    bash scripts/lab.sh up "$lab"
    eval "$(bash scripts/lab.sh env "$lab")"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$out/secret"; chmod 600 "$out/secret"
    start_pair "$1" "$2"
    bash scripts/lab.sh exec "$lab" c ping -D -n -i 0.01 -W 1 "$LAB_VIP" > "$out/ping.log" 2>&1 &
    local pinger=$!
    # The cable is pulled at a random moment (1 to 2 s from now): with a fixed delay it fell at
    # the same phase of the heartbeat (and of VRRP's adverts) in every trial, and the trials
    # measured that one phase instead of the spread a real pull has.
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 1 + r / 32768 }')"
    bash scripts/lab.sh link-down "$lab" a
    sleep 6
    kill "$pinger" 2>/dev/null || true; wait "$pinger" 2>/dev/null || true
    gap "$out/ping.log"
    stop_all
    bash scripts/lab.sh down "$lab"
}

declare -A p50 max
row() { # label kind arg
    local xs=()
    for _ in $(seq 1 "$trials"); do xs+=("$(trial "$2" "$3")"); done
    local sorted; sorted=$(printf '%s\n' "${xs[@]}" | sort -n)
    p50[$1]=$(echo "$sorted" | sed -n "$(( (trials + 1) / 2 ))p")
    max[$1]=$(echo "$sorted" | tail -1)
    printf '%-34s p50 %6s ms   max %6s ms   trials: %s\n' "$1" "${p50[$1]}" "${max[$1]}" "${xs[*]}"
}

echo "== VIP outage after the Master's link goes down (client pings every 10 ms), $trials trials each"
row "ridondato, defaults" ridondato default
row "keepalived, defaults (advert 1 s)" keepalived 1
row "keepalived, tuned (advert 0.1 s)" keepalived 0.1
row "ridondato, tuned (heartbeat 100 ms)" ridondato tuned
row "ridondato, tuned (heartbeat 50 ms)" ridondato fast
awk -v r="${p50[ridondato, defaults]}" -v k="${p50[keepalived, defaults (advert 1 s)]}" -v rt="${p50[ridondato, tuned (heartbeat 100 ms)]}" \
    -v rf="${p50[ridondato, tuned (heartbeat 50 ms)]}" -v kt="${p50[keepalived, tuned (advert 0.1 s)]}" \
    'BEGIN { printf "ratios (p50): defaults ridondato/keepalived %.2f; tuned ridondato/keepalived %.2f at the same heartbeat rate, %.2f at 50 ms\n", r / k, rt / kt, rf / kt }'

# A pair under 5 % random loss of the heartbeats into both nodes for SECONDS: role changes
# (false failovers) and suspicions (a node that heard its peer for a failover timeout: the
# Slave then asks the arbiter, which refuses while the Master's kernel answers ARP).
soak() { # label tuning seconds
    bash scripts/lab.sh up "$lab"
    eval "$(bash scripts/lab.sh env "$lab")"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$out/secret"; chmod 600 "$out/secret"
    start_pair ridondato "$2"
    local from_a from_b
    from_a=$(wc -l < "$out/a.log"); from_b=$(wc -l < "$out/b.log")
    bash scripts/lab.sh loss "$lab" a 7400 5
    bash scripts/lab.sh loss "$lab" b 7400 5
    sleep "$3"
    local during; during=$( (tail -n +"$((from_a + 1))" "$out/a.log"; tail -n +"$((from_b + 1))" "$out/b.log") )
    printf '%-34s %ss: role changes %s, suspicions %s, takeovers refused %s\n' "$1" "$3" \
        "$(grep -c "role .* -> " <<<"$during" || true)" "$(grep -c "alarm + peer-silent" <<<"$during" || true)" "$(grep -c "takeover refused" <<<"$during" || true)"
    if [ "$2" = default ]; then
        for i in 0 1; do
            local pid=${pids[$i]} n; n=$([ "$i" = 0 ] && echo a || echo b)
            local rss t1 t2 hz
            rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
            t1=$(awk '{print $14 + $15}' "/proc/$pid/stat"); sleep 60; t2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
            hz=$(getconf CLK_TCK)
            awk -v n="$n" -v rss="$rss" -v d="$(( t2 - t1 ))" -v hz="$hz" 'BEGIN { printf "node %s: RSS %.1f MB, CPU %.2f %% of a core (60 s, default heartbeat, under 5 %% loss)\n", n, rss / 1024, d / hz / 60 * 100 }'
        done
    fi
    stop_all
    bash scripts/lab.sh down "$lab"
}

[ "$soak" -gt 0 ] || exit 0
echo "== false-failover soak: 5 % random loss of heartbeats into both nodes"
soak "ridondato, defaults" default "$soak"
soak "ridondato, tuned (heartbeat 100 ms)" tuned "$soak"
soak "ridondato, tuned (heartbeat 50 ms)" fast "$soak"
