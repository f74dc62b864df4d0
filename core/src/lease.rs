//! The etcd lease as an arbiter (B11), as Patroni uses its DCS: a Master holds a leader key on
//! a lease it keeps alive; a node takes the role only by creating that key (the promotion's
//! `MayTake` of the lease arbiter, like the ARP probe); a Master that has not refreshed it for
//! `keep_for` (the TTL minus a margin that covers one operation's deadline and clock rates)
//! while its peer is silent steps down before the lease can expire for the other.
//!
//! Losing etcd entirely while the pair is healthy does not stop a working Master: as long as it
//! hears its peer as a Slave, the Slave (which hears it too) takes nothing, and a takeover needs
//! the key anyway. Patroni demotes instead; with two nodes that hear each other that would turn
//! an etcd outage into a service outage for nothing. The alarm `lease-stale` says it meanwhile.

use crate::action::Op;
use crate::arbiter::ArbiterKind;
use crate::event::Event;
use crate::node::Node;
use crate::status::Alarm;
use crate::time::Millis;
use crate::types::{NodeId, Role};
use serde::{Deserialize, Serialize};

/// How the lease is used, derived from its TTL by the configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTiming {
    /// A Master refreshes this often.
    pub refresh_every: u64,
    /// A refresh older than this (from when it started) no longer counts: TTL minus the margin.
    pub keep_for: u64,
}

impl Node {
    /// The last refresh (or acquisition) started less than `keep_for` ago.
    pub(crate) fn lease_fresh(&self) -> bool {
        self.cfg.lease.is_some_and(|l| self.lease_ok_at.is_some_and(|t| self.now.since(t) < l.keep_for))
    }

    /// A Master keeps its lease alive; one that cannot, and hears no peer, steps down.
    pub(crate) fn watch_lease(&mut self) {
        let Some(l) = self.cfg.lease else { return };
        if self.role != Role::Master {
            // Kept while promoting: the acquisition comes before the claim.
            if self.plan.is_none() {
                self.lease_ok_at = None;
            }
            self.clear(&Alarm::LeaseStale);
            return;
        }
        if self.now >= self.next_lease_refresh && !self.background_has(|o| matches!(o, Op::MayKeep { arbiter: ArbiterKind::EtcdLease, .. })) {
            self.next_lease_refresh = self.now.after(l.refresh_every);
            self.lease_refresh_started = self.now;
            self.run_background(Op::MayKeep { arbiter: ArbiterKind::EtcdLease, epoch: self.epoch });
        }
        if self.lease_fresh() || self.plan.is_some() {
            self.clear(&Alarm::LeaseStale);
            return;
        }
        self.raise(Alarm::LeaseStale);
        let silent = self.peer.last_heard.is_none_or(|h| self.now.since(h) >= self.cfg.timing.isolation_timeout);
        if silent && !self.paused_isolation() {
            self.raise(Alarm::SteppedDownIsolated);
            self.become_slave("the etcd lease could not be refreshed and the peer is silent: stepping down before the lease can expire for the other");
        }
    }

    /// A refresh answered: who holds the leader key now.
    pub(crate) fn lease_refreshed(&mut self, holder: Option<(NodeId, u64)>) {
        match holder {
            Some((n, _)) if n == self.cfg.node => self.lease_ok_at = Some(self.lease_refresh_started),
            Some((n, epoch)) if self.role == Role::Master => {
                // Someone else took the key: our lease expired for etcd. It is that node's role.
                self.emit(Event::TakeoverRefused { why: format!("the etcd leader key is held by {n} (epoch {epoch}): this Master lost its lease") });
                self.raise(Alarm::SteppedDownIsolated);
                self.become_slave(&format!("the etcd leader key is held by {n}"));
            }
            _ => {}
        }
    }

    /// The promotion's acquisition succeeded at `at`.
    pub(crate) fn lease_acquired(&mut self, at: Millis) {
        self.lease_ok_at = Some(at);
        self.next_lease_refresh = at.after(self.cfg.lease.map_or(0, |l| l.refresh_every));
    }
}
