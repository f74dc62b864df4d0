//! Safety properties checked after every simulation step (I1–I4, I6–I9), and liveness (I5) at
//! the end. I7: a node flagged for resync (errant transactions, a lost split brain, a resync
//! that did not finish) never becomes Master unless an operator forced it. I8 (in the world
//! model): a write acknowledged under semi-sync is never lost by a promotion. I9 (in the Mongo
//! model): a MongoDB write acknowledged while the Slave's member received it is never lost.

use crate::fault::{node_name, Fault};
use crate::world::{AdapterFault, World};
use ridondato_core::{Mode, Node, Role, Status};

/// What the checker needs of a running node, from either tier (a core `Node` in the pure
/// harness, a driver's status snapshot under turmoil).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub epoch: u64,
    pub in_transition: bool,
    pub needs_resync: bool,
}

impl View {
    pub fn of(n: &Node) -> View {
        View { role: n.role(), epoch: n.epoch(), in_transition: n.in_transition(), needs_resync: n.status().needs_resync }
    }

    pub fn of_status(s: &Status) -> View {
        View { role: s.role, epoch: s.epoch, in_transition: s.transition.is_some(), needs_resync: s.needs_resync }
    }
}

/// Watches a run. Dual holding is a violation whenever the two hosts share a LAN segment,
/// except for a bounded grace after a fault that blinded the arbiter heals (a split with no
/// witness, a link loss with no witness configured): then it is measured and bounded.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    blind: bool,
    /// End of the grace window: the peers hear each other again and the loser starts releasing.
    grace_until: u64,
    /// Only for the database (see `check`).
    db_grace_until: u64,
    grace_ms: u64,
    since: [Option<u64>; 3],
    /// Longest dual holding seen inside a grace window (ms).
    pub max_dual_ms: u64,
    epoch: [u64; 2],
    claimed: [u64; 2],
    /// The node's state file was deleted: its next epoch may start lower.
    state_lost: [bool; 2],
    role: [Option<Role>; 2],
    /// The schedule runs the etcd lease arbiter (I10 applies).
    pub lease: bool,
    pub violations: Vec<String>,
}

/// MongoDB's default `heartbeatIntervalMillis`.
const MONGO_HEARTBEAT_MS: u64 = 2000;

const WHAT: [&str; 3] = ["I1: two hosts answer ARP for the VIP", "I2: two writable databases", "I2: two MongoDB primaries"];

impl Checker {
    pub fn new(grace_ms: u64) -> Checker {
        Checker { grace_ms, ..Checker::default() }
    }

    pub fn with_lease(mut self, lease: bool) -> Checker {
        self.lease = lease;
        self
    }

    fn blind_now(w: &World) -> bool {
        let no_witness = w.witnesses == 0;
        let split_blind = w.net.split.is_some_and(|side| no_witness || side.is_none());
        let link_blind = no_witness && w.hosts.iter().any(|h| h.powered && !h.link);
        // A host whose ARP probe fails cannot see a conflict: its arbiter is gone.
        let probe_blind = w.hosts.iter().any(|h| matches!(h.faults.get("arp-probe"), Some(AdapterFault::Fail | AdapterFault::Hang)));
        split_blind || link_blind || probe_blind
    }

    /// Called after every fault: a blinding fault that just ended opens the grace window.
    pub fn after_fault(&mut self, now: u64, w: &World, f: &Fault) {
        if let Fault::LoseState(ix) = f {
            self.state_lost[*ix] = true;
        }
        // A daemon that resumes while holding the VIP in a dual holding that began in a heal's
        // grace (it was hung through the heal, see `check`) hears its peer only now: the heal's
        // resolution starts now.
        if let (Fault::Resume(_), Some(start)) = (f, self.since[0]) {
            if start <= self.grace_until && w.hosts.iter().all(|h| h.vip) {
                self.grace_until = now + self.grace_ms;
            }
        }
        let blind = Self::blind_now(w);
        if self.blind && !blind {
            self.grace_until = now + self.grace_ms;
        }
        self.blind = blind;
    }

    pub fn in_grace(&self, now: u64) -> bool {
        now <= self.grace_until
    }

    pub fn check(&mut self, now: u64, w: &World, nodes: &[Option<View>; 2]) {
        let both = |f: &dyn Fn(usize) -> bool| f(0) && f(1);
        // In cloud mode clients reach only the public IP's holder, so "both writable" matters
        // where both are reachable: on a shared LAN, or through the public IP (impossible twice).
        let shared = w.mode == Mode::Lan && w.same_domain();
        let conds =
            [shared && both(&|i| w.answers_arp(i)), shared && both(&|i| w.hosts[i].powered && w.hosts[i].db.writable), shared && w.two_mongo_primaries()];
        // A host whose daemon died (or is stopped) keeps its database writable until systemd
        // restarts the daemon (or it resumes) and it lets go: that much dual writability is
        // measured, not forbidden (clients reach it no more: its VIP is gone). Its
        // VIP is not exempt: the kernel drops it when its lease runs out, and the peer's ARP
        // probe sees it until then.
        if w.hosts.iter().any(|h| h.powered && (!h.daemon || h.paused)) {
            self.db_grace_until = self.db_grace_until.max(now + self.grace_ms);
        }
        for (k, cond) in conds.into_iter().enumerate() {
            if !cond {
                self.since[k] = None;
                continue;
            }
            let start = *self.since[k].get_or_insert(now);
            let mut grace = if k >= 1 { self.grace_until.max(self.db_grace_until) } else { self.grace_until };
            if k == 0 && start <= grace {
                // Begun in a heal's grace window while one holder's daemon is stopped or dead: that
                // one cannot hear the other and let go; the kernel drops its VIP when the lease it
                // last renewed runs out. The lease is the bound.
                let lease_end = w.hosts.iter().filter_map(|h| h.vip_expires.filter(|_| h.vip)).max();
                grace = grace.max(lease_end.unwrap_or(0));
            }
            if k == 2 {
                // Two primaries that meet (a heal, a member restarted while cut off) are MongoDB's
                // own to resolve: the older term steps down at the next heartbeat.
                grace = grace.max(start + MONGO_HEARTBEAT_MS);
            }
            if now <= grace {
                self.max_dual_ms = self.max_dual_ms.max(now - start);
            } else if !self.blind {
                let msg = format!("{} at {}.{:03}s", WHAT[k], now / 1000, now % 1000);
                if !self.violations.iter().any(|v| v.starts_with(WHAT[k])) {
                    self.violations.push(msg);
                }
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            // I6: services follow the role. A node that is not Master may still run them only
            // while it is releasing (stopping units takes their own time).
            if w.hosts[i].services && n.role != Role::Master && !n.in_transition {
                let what = "I6: services run on a node that is not Master";
                if !self.violations.iter().any(|v| v.starts_with(what)) {
                    self.violations.push(format!("{what} ({}) at {}.{:03}s", node_name(i), now / 1000, now % 1000));
                }
            }
            if n.epoch < self.epoch[i] && std::mem::take(&mut self.state_lost[i]) {
                self.claimed[i] = 0;
            } else if n.epoch < self.epoch[i] {
                self.violations.push(format!("I3: {} epoch went from {} to {}", node_name(i), self.epoch[i], n.epoch));
            }
            self.epoch[i] = n.epoch;
            if n.role == Role::Master && self.role[i] != Some(Role::Master) && n.needs_resync {
                self.violations.push(format!("I7: {} became Master while flagged for resync at {}.{:03}s", node_name(i), now / 1000, now % 1000));
            }
            // I10: with the lease arbiter, a node becomes Master only holding the leader key.
            if self.lease && n.role == Role::Master && self.role[i] != Some(Role::Master) && w.lease_holder_now() != Some(i) {
                let what = "I10: became Master without holding the etcd lease";
                if !self.violations.iter().any(|v| v.starts_with(what)) {
                    self.violations.push(format!("{what}: {} at {}.{:03}s", node_name(i), now / 1000, now % 1000));
                }
            }
            self.role[i] = Some(n.role);
            if n.role == Role::Master {
                self.claimed[i] = self.claimed[i].max(n.epoch);
            }
        }
    }

    /// A node (re)started: its epoch restarts from its store, which must cover every claim.
    pub fn on_start(&mut self, ix: usize, epoch: u64, fresh: bool) {
        if fresh {
            // No state file (deleted, see `Fault::LoseState`): its claims went with it.
            self.claimed[ix] = 0;
            self.state_lost[ix] = false;
        }
        if epoch < self.claimed[ix] {
            self.violations.push(format!("I3: {} restarted at epoch {} below its claim {}", node_name(ix), epoch, self.claimed[ix]));
        }
        self.epoch[ix] = epoch;
    }
}

/// I5: with all faults healed, exactly one Master holding the front door with a writable DB,
/// and the other node a Slave replicating from it, running no services.
/// With `strict` false, a Slave flagged for resync counts as settled (its resync comes next).
pub fn settled(w: &World, nodes: &[Option<Node>; 2], strict: bool) -> Result<usize, String> {
    let roles: Vec<Option<Role>> = nodes.iter().map(|n| n.as_ref().map(Node::role)).collect();
    let masters: Vec<usize> = (0..2).filter(|&i| roles[i] == Some(Role::Master)).collect();
    let [m] = masters[..] else {
        return Err(format!("expected exactly one Master, roles are a={:?} b={:?}", roles[0], roles[1]));
    };
    let s = 1 - m;
    let ms = nodes[m].as_ref().map(Node::status).ok_or("master gone")?;
    if ms.transition.is_some() {
        return Err(format!("Master {} still {}", node_name(m), ms.transition.unwrap_or_default()));
    }
    if !w.front_door(m) {
        return Err(format!("Master {} does not hold the front door", node_name(m)));
    }
    if nodes[m].as_ref().is_some_and(|n| n.config().components.db) && !w.hosts[m].db.writable {
        return Err(format!("Master {} database is read-only", node_name(m)));
    }
    if roles[s] != Some(Role::Slave) {
        return Err(format!("expected {} to be Slave, it is {:?}", node_name(s), roles[s]));
    }
    if let Some(t) = nodes[s].as_ref().and_then(|n| n.status().transition) {
        return Err(format!("Slave {} still {t}", node_name(s)));
    }
    let h = &w.hosts[s];
    if h.vip || h.db.writable || h.services {
        return Err(format!("Slave {} still holds vip={} db_rw={} services={}", node_name(s), h.vip, h.db.writable, h.services));
    }
    let flagged = nodes[s].as_ref().is_some_and(|n| n.status().needs_resync);
    if nodes[s].as_ref().is_some_and(|n| n.config().components.db) && h.db.source != Some(m) && (strict || !flagged) {
        return Err(format!("Slave {} does not replicate from {}", node_name(s), node_name(m)));
    }
    Ok(m)
}
