//! `GET /metrics`: the node's state in Prometheus' text format, built with `prometheus-client`
//! from the status at scrape time (so a value is never older than the scrape), plus the
//! counters the event watcher keeps.

use super::events::Counters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ridondato_core::{Role, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabel {
    alarm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn seconds(r: &mut Registry, name: &str, help: &str, ms: u64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(ms as f64 / 1000.0);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

/// The exposition text.
pub fn render(s: &Status, drops: &BTreeMap<String, u64>, link: (u64, u64), counters: &Counters) -> String {
    let mut r = Registry::with_prefix("ridondato");
    let roles: Family<RoleLabel, Gauge> = Family::default();
    for role in [Role::Booting, Role::Master, Role::Slave, Role::Off] {
        roles.get_or_create(&RoleLabel { role: role.as_str().to_lowercase() }).set(i64::from(s.role == role));
    }
    r.register("role", "1 for the node's current role", roles);
    gauge(&mut r, "epoch", "The node's epoch (the fencing token of the Master role)", s.epoch as i64);
    gauge(&mut r, "peer_alive", "1 while the peer is heard within the failover timeout", i64::from(s.peer.alive));
    if let Some(ms) = s.peer.silent_for_ms {
        seconds(&mut r, "peer_last_heard_seconds", "Seconds since the peer was last heard", ms);
    }
    gauge(&mut r, "vip_held", "1 while this node holds the virtual IP", i64::from(s.vip_held));
    gauge(&mut r, "services_running", "1 while the application's services run here", i64::from(s.services_running));
    gauge(&mut r, "db_writable", "1 while the local database accepts writes", i64::from(s.db_writable));
    gauge(&mut r, "db_replicating", "1 while the local database replicates from the Master", i64::from(s.db_replicating));
    gauge(&mut r, "semi_sync_active", "1 while semi-synchronous replication is active on the Master", i64::from(s.semi_sync_active));
    if let Some(ms) = s.db_lag_ms {
        seconds(&mut r, "db_lag_seconds", "Replication lag of the local database", ms);
    }
    if let Some(m) = &s.mongo {
        gauge(&mut r, "mongo_primary", "1 while the local MongoDB member is the primary", i64::from(m.state == "PRIMARY"));
        if let Some(ms) = m.lag_ms {
            seconds(&mut r, "mongo_lag_seconds", "Replication lag of the local MongoDB member", ms);
        }
        gauge(&mut r, "mongo_rollbacks", "Rollbacks the local MongoDB member went through since it started", m.rollbacks as i64);
    }
    if let Some(fs) = &s.fs {
        gauge(&mut r, "fs_backlog", "Changed paths not yet on the Slave", fs.backlog as i64);
        counter(&mut r, "fs_bytes", "Bytes of file sync sent and received", fs.bytes);
    }
    if let Some(j) = &s.job {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(f64::from(j.percent()) / 100.0);
        r.register("job_progress_ratio", "Progress of the running resync (0 to 1)", g);
    }
    let alarms: Family<AlarmLabel, Gauge> = Family::default();
    for a in &s.alarms {
        let name = a.to_string();
        let kind = name.split('(').next().unwrap_or_default().to_string();
        alarms.get_or_create(&AlarmLabel { alarm: kind }).set(1);
    }
    r.register("alarm", "1 for each alarm raised now", alarms);
    let rejected: Family<ReasonLabel, Counter> = Family::default();
    for (reason, n) in drops {
        rejected.get_or_create(&ReasonLabel { reason: reason.clone() }).inc_by(*n);
    }
    r.register("datagrams_rejected", "Datagrams refused by the peer link, by reason", rejected);
    counter(&mut r, "messages_sent", "Messages (heartbeats and the rest) sent to the peer", link.0);
    counter(&mut r, "messages_received", "Authenticated messages received from the peer", link.1);
    let promotions: Family<KindLabel, Counter> = Family::default();
    for kind in ["startup", "failover", "switchover", "operator"] {
        promotions.get_or_create(&KindLabel { kind: kind.into() }).inc_by(counters.promotions().get(kind).copied().unwrap_or(0));
    }
    r.register("promotions", "Times this node became Master since start, by kind (startup, failover, switchover, operator)", promotions);
    counter(&mut r, "demotions", "Times this node stopped being Master since start", counters.demotions.load(Ordering::Relaxed));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Alarm, Config, Node, NodeId};

    #[test]
    fn the_exposition_names_role_alarms_and_rejections() {
        let mut s = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        s.role = Role::Master;
        s.alarms = vec![Alarm::PeerSilent];
        let drops = [("bad tag".to_string(), 7)].into_iter().collect();
        let c = Counters::default();
        c.promoted("failover");
        c.promoted("failover");
        let out = render(&s, &drops, (40, 39), &c);
        for line in [
            "ridondato_role{role=\"master\"} 1",
            "ridondato_role{role=\"slave\"} 0",
            "ridondato_alarm{alarm=\"peer-silent\"} 1",
            "ridondato_datagrams_rejected_total{reason=\"bad tag\"} 7",
            "ridondato_promotions_total{kind=\"failover\"} 2",
            "ridondato_promotions_total{kind=\"switchover\"} 0",
            "ridondato_messages_sent_total 40",
            "ridondato_messages_received_total 39",
            "# TYPE ridondato_epoch gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "missing `{line}` in:\n{out}");
        }
    }
}
