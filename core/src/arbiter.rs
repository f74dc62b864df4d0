//! The arbiters behind one interface (B11): something outside the pair that a node asks "may I
//! take the role now?" before a claim and "may I keep it?" while it holds the role. Two nodes
//! alone cannot tell "my peer is dead" from "I am cut off"; an arbiter can.
//!
//! Each arbiter answers with the facts it knows ([`Verdict`]); what they mean (take, refuse,
//! step down) is decided here and in the plans, never in an adapter. Which arbiters a node asks,
//! and in which order, follows from its configuration ([`Node::arbiters_for_take`]).

use crate::action::Op;
use crate::node::Node;
use crate::plan::Via;
use crate::status::Alarm;
use crate::types::NodeId;
use crate::types::{Mode, Role};
use serde::{Deserialize, Serialize};

/// One judge outside the pair.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ArbiterKind {
    /// LAN: does any other host answer ARP for the VIP (the Master alive behind a cut)?
    ArpProbe,
    /// Witness hosts: one that answers while the peer does not means this node is not the one
    /// cut off.
    Witnesses,
    /// Cloud: who holds the public IP, and is the peer's instance running, per the host's API?
    CloudApi,
    /// etcd: a leader key on a lease, created only if absent (a real quorum).
    EtcdLease,
}

/// The question asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// Before a claim: may this node take the role now (as the claim of the given epoch)?
    MayTake,
    /// While Master: may it keep the role?
    MayKeep,
}

/// What an arbiter found: facts in its own terms, judged by the core ([`Verdict::refusal`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Whether another host answered ARP for the VIP.
    Arp { answered: bool },
    /// How many of the configured witnesses answered.
    Witnesses { reachable: u32 },
    /// Who the public IP is associated with; whether the peer's instance runs (asked only when
    /// the IP is not already this node's).
    Cloud { holder: Option<NodeId>, peer_running: Option<bool> },
    /// Who holds the etcd leader key after the call (node, epoch); `None`: nobody.
    Lease { holder: Option<(NodeId, u64)> },
}

impl ArbiterKind {
    /// The operation's stable name, for logs, alarms and traces (those of the operations that
    /// each arbiter used before they shared one interface, so timelines read the same).
    pub fn op_name(self, q: Question) -> &'static str {
        match (self, q) {
            (ArbiterKind::ArpProbe, _) => "arp-probe",
            (ArbiterKind::Witnesses, _) => "check-witnesses",
            (ArbiterKind::CloudApi, Question::MayTake) => "check-peer-instance",
            (ArbiterKind::CloudApi, Question::MayKeep) => "query-cloud-ip",
            (ArbiterKind::EtcdLease, Question::MayTake) => "lease-acquire",
            (ArbiterKind::EtcdLease, Question::MayKeep) => "lease-refresh",
        }
    }

    /// The alarm raised when this arbiter refuses a takeover (or cannot answer one).
    pub(crate) fn refusal_alarm(self) -> Alarm {
        match self {
            ArbiterKind::ArpProbe => Alarm::VipAnsweredElsewhere,
            ArbiterKind::Witnesses => Alarm::WitnessesUnreachable,
            ArbiterKind::CloudApi => Alarm::PeerInstanceRunning,
            ArbiterKind::EtcdLease => Alarm::LeaseHeldElsewhere,
        }
    }
}

impl Verdict {
    /// Why `me` may not take the role on this verdict; `None`: it may.
    pub fn refusal(&self, me: NodeId) -> Option<String> {
        match self {
            Verdict::Arp { answered: true } => Some("another host answers ARP for the VIP".into()),
            Verdict::Arp { answered: false } => None,
            Verdict::Witnesses { reachable: 0 } => Some("no witness host answers".into()),
            Verdict::Witnesses { .. } => None,
            // Both instances usually reach the cloud API even when they cannot reach each other:
            // taking the public IP from a running peer would make the two chase it in turn.
            // Holding it already takes nothing from the peer (a lone start).
            Verdict::Cloud { holder, peer_running } => {
                (*holder != Some(me) && *peer_running != Some(false)).then(|| "the peer's instance is running (cloud API)".to_string())
            }
            Verdict::Lease { holder: Some((n, _)) } if *n == me => None,
            Verdict::Lease { holder: Some((n, epoch)) } => Some(format!("the etcd leader key is held by {n} (epoch {epoch})")),
            Verdict::Lease { holder: None } => Some("etcd names no holder of the leader key after the attempt".into()),
        }
    }

    /// Does the verdict come from `arbiter` (an answer of another kind is refused as such)?
    pub fn from(&self, arbiter: ArbiterKind) -> bool {
        matches!(
            (self, arbiter),
            (Verdict::Arp { .. }, ArbiterKind::ArpProbe)
                | (Verdict::Witnesses { .. }, ArbiterKind::Witnesses)
                | (Verdict::Cloud { .. }, ArbiterKind::CloudApi)
                | (Verdict::Lease { .. }, ArbiterKind::EtcdLease)
        )
    }
}

impl Node {
    /// The arbiters asked before a claim, in order. They judge a silent peer: a peer we hear
    /// (start-up tie-break, services off) is its own witness.
    pub(crate) fn arbiters_for_take(&self, via: Via) -> Vec<ArbiterKind> {
        let c = &self.cfg;
        let lan = c.mode == Mode::Lan;
        let peer_silent = !self.peer_alive();
        let mut v = Vec::new();
        if !lan && via == Via::Arbiter && peer_silent {
            v.push(ArbiterKind::CloudApi);
        }
        // An operator's `set-state master` is checked too: a node cut from its LAN would
        // otherwise create the split brain it was asked to end.
        if via != Via::Handover && c.witnesses > 0 && peer_silent {
            v.push(ArbiterKind::Witnesses);
        }
        // The ARP probe comes late, right before the epoch and the VIP: the LAN may have healed
        // while a slower check ran, and only a fresh answer counts. A failover's was asked
        // ahead of the deadline when it heard nobody a moment ago ([`crate::vip_watch`]), unless
        // a slower check comes first.
        let looked_ahead = via == Via::Arbiter && v.is_empty() && self.watch_clear().is_some();
        if via != Via::Handover && lan && c.components.vip && c.arp_probe && !looked_ahead {
            v.push(ArbiterKind::ArpProbe);
            if v.contains(&ArbiterKind::Witnesses) {
                // The witnesses once more (a connect each, about a millisecond on a LAN): a cut
                // that falls while the probe listens hides the Master from the probe, and only
                // the witnesses would tell this node that it is the one cut off.
                v.push(ArbiterKind::Witnesses);
            }
        }
        // The lease, last before the claim like the probe, and even on a hand-over: the key
        // names this claim, and no claim goes without it.
        if c.lease.is_some() {
            v.push(ArbiterKind::EtcdLease);
        }
        v
    }

    /// An arbiter's answer outside a promotion: a Master's "may I keep it?" (and the probe a
    /// Master runs before raising a VIP it lost).
    pub(crate) fn keep_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Witnesses { reachable } => self.isolation_result(reachable),
            Verdict::Lease { holder } => self.lease_refreshed(holder),
            Verdict::Arp { answered } => self.arp_verdict(answered),
            Verdict::Cloud { holder, .. } => {
                if self.role == Role::Master && holder != Some(self.cfg.node) {
                    self.raise(Alarm::CloudIpMovedAway);
                    if self.cfg.cloud_auto_failover && self.plan.is_none() {
                        self.become_slave("the cloud public IP is associated with the peer");
                    }
                } else {
                    self.clear(&Alarm::CloudIpMovedAway);
                }
            }
        }
    }

    fn arp_verdict(&mut self, answered: bool) {
        if self.role != Role::Master || !self.plan.as_ref().is_none_or(|p| p.goal == crate::plan::Goal::Master) {
            return;
        }
        if !answered {
            self.clear(&Alarm::VipConflict);
            // A probe before re-raising a VIP we lost (see `repair_master`).
            if !self.vip_held && self.plan.is_none() && !self.background_has(|o| matches!(o, Op::RaiseVip)) {
                self.run_background(Op::RaiseVip);
            }
            return;
        }
        self.raise(Alarm::VipConflict);
        if !self.vip_held {
            // Someone else serves the VIP we do not hold: it is theirs.
            if self.db_writable {
                self.needs_resync = true;
                self.raise(Alarm::NeedsResync);
            }
            self.become_slave("another host serves the VIP this Master could not raise");
            return;
        }
        // Neither side can learn the other's epoch without heartbeats, so a fixed rule both
        // apply alike decides: the lower node id keeps the VIP.
        if self.cfg.node > self.cfg.peer {
            self.needs_resync = true;
            self.raise(Alarm::NeedsResync);
            self.become_slave("another host answers ARP for the VIP and the peer is silent");
        } else {
            self.run_background(Op::Garp);
        }
    }
}

/// An ARP probe, asked as either question.
pub fn is_arp_probe(op: &Op) -> bool {
    matches!(op, Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. } | Op::MayKeep { arbiter: ArbiterKind::ArpProbe, .. })
}
