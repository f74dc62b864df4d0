#!/usr/bin/env bash
# A network-namespace lab: a LAN switch (bridge), nodes a and b, a client, all in 198.18.0.0/15.
#
#   lab.sh up NAME          create the lab NAME (≤ 8 characters, unique per run)
#   lab.sh down NAME        delete it, whatever state it is in
#   lab.sh env NAME         print its addresses as shell variables
#   lab.sh exec NAME NODE CMD...        run CMD in a, b, c (client) or sw
#   lab.sh link-down|link-up NAME NODE  pull or plug NODE's cable (switch port down/up)
#   lab.sh unplug NAME NODE             delete NODE's veth: the cable is gone for good
#   lab.sh drop-udp NAME NODE PORT both|in|out   nftables drop of UDP PORT on NODE
#   lab.sh loss NAME NODE PORT PCT      drop PCT % of UDP PORT packets into NODE at random
#   lab.sh heal NAME NODE               remove NODE's nftables faults
# `tc netem` is not available on this kernel; faults are link state and nftables.
set -euo pipefail

cmd=${1:?usage: lab.sh up|down|env|exec|link-down|link-up|drop-udp|loss|heal NAME ...}
name=${2:?lab name missing}
[[ $name =~ ^[a-z0-9]{1,8}$ ]] || { echo "lab name must be 1-8 lowercase letters or digits" >&2; exit 2; }
# A third octet from the name, so parallel labs use different subnets.
octet=$(( $(printf '%s' "$name" | cksum | cut -d' ' -f1) % 250 + 1 ))
net="198.18.$octet"
ns() { echo "rd$name-$1"; }

case $cmd in
up)
    for n in sw a b c; do ip netns add "$(ns $n)"; ip -n "$(ns $n)" link set lo up; done
    ip -n "$(ns sw)" link add br0 type bridge
    ip -n "$(ns sw)" link set br0 up
    declare -A addr=([a]=1 [b]=2 [c]=10)
    for n in a b c; do
        ip link add "rd$name$n" type veth peer name "rd${name}${n}p"
        ip link set "rd$name$n" netns "$(ns $n)"
        ip link set "rd${name}${n}p" netns "$(ns sw)"
        ip -n "$(ns $n)" link set "rd$name$n" name eth0
        ip -n "$(ns sw)" link set "rd${name}${n}p" name "port$n" master br0
        ip -n "$(ns sw)" link set "port$n" up
        ip -n "$(ns $n)" addr add "$net.${addr[$n]}/24" dev eth0
        ip -n "$(ns $n)" link set eth0 up
    done
    ;;
down)
    for n in sw a b c; do ip netns del "$(ns $n)" 2>/dev/null || true; done
    ;;
env)
    echo "LAB_NET=$net"
    echo "LAB_A=$net.1 LAB_B=$net.2 LAB_CLIENT=$net.10 LAB_VIP=$net.100"
    echo "LAB_NS_A=$(ns a) LAB_NS_B=$(ns b) LAB_NS_CLIENT=$(ns c) LAB_NS_SW=$(ns sw)"
    ;;
exec)
    node=${3:?node}; shift 3
    exec ip netns exec "$(ns "$node")" "$@"
    ;;
link-down | link-up)
    node=${3:?node}
    ip -n "$(ns sw)" link set "port$node" "${cmd#link-}"
    ;;
unplug)
    node=${3:?node}
    ip -n "$(ns sw)" link del "port$node"
    ;;
drop-udp)
    node=${3:?node} port=${4:?port} dir=${5:-both}
    n=$(ns "$node")
    ip netns exec "$n" nft add table inet rdlab
    ip netns exec "$n" nft add chain inet rdlab input '{ type filter hook input priority 0; }'
    ip netns exec "$n" nft add chain inet rdlab output '{ type filter hook output priority 0; }'
    [[ $dir == out ]] || ip netns exec "$n" nft add rule inet rdlab input udp dport "$port" drop
    [[ $dir == in ]] || ip netns exec "$n" nft add rule inet rdlab output udp dport "$port" drop
    ;;
loss)
    node=${3:?node} port=${4:?port} pct=${5:?percent}
    n=$(ns "$node")
    ip netns exec "$n" nft add table inet rdlab
    ip netns exec "$n" nft add chain inet rdlab input '{ type filter hook input priority 0; }'
    ip netns exec "$n" nft add rule inet rdlab input udp dport "$port" numgen random mod 100 "<" "$pct" drop
    ;;
heal)
    node=${3:?node}
    ip netns exec "$(ns "$node")" nft delete table inet rdlab 2>/dev/null || true
    ;;
*)
    echo "unknown lab command $cmd" >&2
    exit 2
    ;;
esac
