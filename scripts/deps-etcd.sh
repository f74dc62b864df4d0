#!/usr/bin/env bash
# What the etcd arbiter needs: etcd-server (`etcd`) for its tests and protobuf-compiler
# (`protoc`) to build etcd-client. The package's own etcd service is not wanted: the tests start
# their own members on free ports, and a stray member on 127.0.0.1:2379 is only in the way.
set -euo pipefail

# Stops the package's etcd service and keeps it from starting at boot (systemd or sysvinit).
# Idempotent: nothing running and nothing enabled is the normal case after the first run.
disable_service() {
    if [ -d /run/systemd/system ]; then
        if systemctl list-unit-files etcd.service >/dev/null 2>&1; then
            systemctl disable --now etcd.service >/dev/null 2>&1 || true
        fi
    elif [ -x /etc/init.d/etcd ]; then
        /etc/init.d/etcd stop >/dev/null 2>&1 || true
        update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
}

service_running() {
    if [ -d /run/systemd/system ]; then
        systemctl is-active --quiet etcd.service 2>/dev/null
    else
        # The init script runs it as user etcd with a pidfile; our tests run it as ourselves.
        pgrep -u etcd -x etcd >/dev/null 2>&1
    fi
}

missing=0
command -v etcd >/dev/null && command -v protoc >/dev/null || missing=1
if [ "$(id -u)" != 0 ]; then
    if [ "$missing" = 1 ]; then
        echo "missing: etcd-server and/or protobuf-compiler (run as root to install them)" >&2
        exit 1
    fi
    if service_running; then
        echo "warning: the package's etcd service is running (run as root to disable it)" >&2
    fi
    exit 0
fi
if [ "$missing" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
disable_service
command -v etcd >/dev/null && command -v protoc >/dev/null
