//! What `GET /events` streams (server-sent events) and what the metrics count: role changes,
//! alarms raised and cleared, resync progress, found by comparing each status with the last.

use ridondato_core::{Role, Status};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Counted since the daemon started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Times this node became Master, by kind (see [`promotion_kind`]).
    pub promotions: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub demotions: AtomicU64,
}

impl Counters {
    pub fn promoted(&self, kind: &'static str) {
        if let Ok(mut m) = self.promotions.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    pub fn promotions(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.promotions.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What made this node Master, told from the status just before: out of start-up, a failover
/// (the peer was silent), a switch-over (the peer was heard: it handed over, or an operator
/// moved the role while both ran), or an operator's command on a node whose services were off.
pub fn promotion_kind(before: Option<&Status>) -> &'static str {
    match before {
        None => "startup",
        Some(b) => match b.role {
            Role::Booting => "startup",
            Role::Off => "operator",
            _ if b.peer.alive => "switchover",
            _ => "failover",
        },
    }
}

/// One event: its SSE name and its JSON data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    pub data: serde_json::Value,
}

/// The events between two statuses of the node.
pub fn diff(before: Option<&Status>, now: &Status) -> Vec<Event> {
    let mut out = Vec::new();
    let role_was = before.map(|b| b.role);
    if role_was != Some(now.role) {
        out.push(Event {
            kind: "role",
            data: serde_json::json!({ "node": now.node.0, "from": role_was.map(Role::as_str), "to": now.role.as_str(), "epoch": now.epoch, "why": now.transition }),
        });
    }
    let old: Vec<String> = before.map(|b| b.alarms.iter().map(ToString::to_string).collect()).unwrap_or_default();
    let new: Vec<String> = now.alarms.iter().map(ToString::to_string).collect();
    for a in new.iter().filter(|a| !old.contains(a)) {
        out.push(Event { kind: "alarm", data: serde_json::json!({ "node": now.node.0, "raised": a }) });
    }
    for a in old.iter().filter(|a| !new.contains(a)) {
        out.push(Event { kind: "alarm", data: serde_json::json!({ "node": now.node.0, "cleared": a }) });
    }
    let job_key = |s: &Status| s.job.as_ref().map(|j| (j.id, j.state, j.percent(), j.phase_index));
    if let Some(j) = now.job.as_ref().filter(|_| before.map(job_key) != Some(job_key(now))) {
        out.push(Event {
            kind: "job",
            data: serde_json::json!({ "node": now.node.0, "id": j.id, "kind": j.kind.as_str(), "state": format!("{:?}", j.state), "phase": j.phase.as_str(), "percent": j.percent(), "error": j.error }),
        });
    }
    out
}

/// Follows the node's status for as long as it runs: counts role changes and sends the events
/// to whoever listens (a listener that falls behind loses the oldest, never the daemon's time).
pub fn spawn_watcher(mut rx: watch::Receiver<Option<Status>>, counters: Arc<Counters>) -> broadcast::Sender<Event> {
    let (tx, _) = broadcast::channel(256);
    let out = tx.clone();
    tokio::spawn(async move {
        let mut last: Option<Status> = None;
        while rx.changed().await.is_ok() {
            let Some(now) = rx.borrow_and_update().clone() else { continue };
            let was_master = last.as_ref().is_some_and(|l| l.role == Role::Master);
            if now.role == Role::Master && !was_master {
                counters.promoted(promotion_kind(last.as_ref()));
            }
            if was_master && now.role != Role::Master {
                counters.demotions.fetch_add(1, Ordering::Relaxed);
            }
            for e in diff(last.as_ref(), &now) {
                let _ = tx.send(e);
            }
            last = Some(now);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Alarm, Config, Node, NodeId};

    #[test]
    fn role_changes_and_alarms_become_events() {
        let a = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        let mut b = a.clone();
        b.role = Role::Master;
        b.alarms = vec![Alarm::PeerSilent];
        let ev = diff(Some(&a), &b);
        assert_eq!(ev.iter().map(|e| e.kind).collect::<Vec<_>>(), vec!["role", "alarm"]);
        assert_eq!(ev[0].data["to"], "master");
        assert_eq!(ev[1].data["raised"], "peer-silent");
        let mut peer_heard = a.clone();
        peer_heard.role = Role::Slave;
        peer_heard.peer.alive = true;
        let mut peer_silent = peer_heard.clone();
        peer_silent.peer.alive = false;
        assert_eq!(promotion_kind(Some(&peer_heard)), "switchover");
        assert_eq!(promotion_kind(Some(&peer_silent)), "failover");
        assert_eq!(promotion_kind(None), "startup");
        let back = diff(Some(&b), &a);
        assert_eq!(back[1].data["cleared"], "peer-silent");
        assert!(diff(Some(&a), &a).is_empty(), "no change, no event");
    }
}
