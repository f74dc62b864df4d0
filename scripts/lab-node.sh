#!/usr/bin/env bash
# Writes the configuration of lab node a or b (used by the demo, the lab tests and the benchmark).
#   lab-node.sh LAB NODE WORKDIR [extra TOML lines...]
set -euo pipefail
lab=$1 node=$2 work=$3; shift 3
eval "$(bash "$(dirname "$0")/lab.sh" env "$lab")"
case $node in
a) id=1 peer_id=2 me=$LAB_A peer=$LAB_B ;;
b) id=2 peer_id=1 me=$LAB_B peer=$LAB_A ;;
*) echo "node must be a or b" >&2; exit 2 ;;
esac
mkdir -p "$work/$node"
cat > "$work/$node.toml" <<TOML
[node]
id = $id
peer_id = $peer_id
peer_ip = "$peer"
management_ip = "$me"
secret_file = "$work/secret"
state_dir = "$work/$node"
control_socket = "$work/$node.sock"

[[shared_ip]]
interface = "eth0"
address = "$LAB_VIP"
prefix = 24
primary = true
label = "eth0:tvox"

[services]
start_hook = "touch $work/$node/services-running"
stop_hook = "rm -f $work/$node/services-running"
TOML
for line in "$@"; do printf '%s\n' "$line" >> "$work/$node.toml"; done
