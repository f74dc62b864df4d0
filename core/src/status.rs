//! The status snapshot an operator (CLI, API, status page) reads.

use crate::persist::Maintenance;
use crate::time::Millis;
use crate::types::{CloudReport, FsReport, MongoReport, NodeId, Position, Replication, ResyncKind, ResyncPhase, Role};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Conditions an operator should see. Ordered, so a set of them prints the same way every time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Alarm {
    /// The Master is silent and the arbiter says another host still answers for the VIP
    /// (heartbeat path cut while the Master lives): no takeover.
    VipAnsweredElsewhere,
    /// The Master is silent but no witness answers: this node may be the isolated one.
    WitnessesUnreachable,
    /// Cloud mode with manual switch-over: the Master is silent, an operator must act (S14).
    MasterUnreachable,
    /// This Master lost peer and witnesses and stepped down.
    SteppedDownIsolated,
    /// Two Masters met; this one had the lower claim and was fenced.
    FencedBySplitBrain,
    /// Errant transactions or a lost split brain: waiting for a resync (S11).
    NeedsResync,
    ErrantTransactions {
        count: u64,
    },
    /// An operation keeps failing.
    OpFailing {
        op: String,
    },
    /// Another host answered ARP for the VIP while this node was Master and the peer silent.
    VipConflict,
    /// The interface carrying the VIP has no carrier.
    LinkDown,
    /// The VIP was removed or added behind the node's back.
    VipTamperedWith,
    /// The cloud public IP is associated with another node while this one was Master.
    CloudIpMovedAway,
    /// Cloud: the domain operators use does not resolve to the public IP (what it resolves to).
    DomainMismatch {
        what: String,
    },
    /// MongoDB rolled back writes of this member when it rejoined (a former primary's writes
    /// the new primary never had): they are in the member's rollback directory, not lost
    /// silently. Cleared when the member restarts (its count starts again) or is resynced.
    MongoRolledBack {
        count: u64,
    },
    /// Cloud: the Master is silent but its instance runs: no automatic takeover.
    PeerInstanceRunning,
    SwitchoverFailed,
    ResyncFailed,
    /// The promotion policy would refuse this node as Master now: why, and how to override.
    NotPromotable {
        why: String,
    },
    /// The Master's file sync cannot deliver to the Slave (the adapter's last error): changes
    /// wait in the backlog and a failover now would lose them.
    FsSyncFailing {
        error: String,
    },
    /// The Slave's side of `FsSyncFailing`: its rsync daemon refused or could not write the
    /// Master's last push (why, in rsync's words).
    FsReceiveFailing {
        error: String,
    },
    /// The peer has not been heard for a failover timeout (on either side): no redundancy.
    PeerSilent,
    /// A former Slave alone at start-up waits `lone_slave_wait` for the absent Master, which may
    /// hold newer data (`set-state master` ends the wait).
    WaitingForPeer,
    /// The local database does not answer.
    DbUnreachable,
    /// The local database has settings that make a failover unsafe: which, and what is wanted.
    DbMisconfigured {
        what: String,
    },
    /// A Slave's replication is stopped although it should run (being restarted).
    ReplicationStopped,
    /// A Slave's replication stopped on an error: MariaDB's message.
    ReplicationBroken {
        error: String,
    },
    /// A Master's Slave does not replicate (silent peer, stopped or broken replica, dead DB):
    /// a failure now has no up-to-date copy to fail over to.
    RedundancyLost,
    /// Semi-sync expected but inactive on the Master: a failover now may lose acknowledged writes.
    SemiSyncInactive,
    /// This node became Master knowing that transactions of the old Master may be missing.
    PossibleLoss {
        count: u64,
    },
    /// The etcd leader key is held by another node: no takeover (its Master lives for etcd).
    LeaseHeldElsewhere,
    /// This Master could not refresh its etcd lease lately; it keeps the role only while it
    /// hears its peer.
    LeaseStale,
    /// A Master's Slave has no healthy MongoDB member (silent, not a secondary, resyncing): a
    /// failure now has no up-to-date copy of MongoDB to fail over to.
    MongoRedundancyLost,
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alarm::VipAnsweredElsewhere => f.write_str("vip-answered-elsewhere"),
            Alarm::WitnessesUnreachable => f.write_str("witnesses-unreachable"),
            Alarm::MasterUnreachable => f.write_str("master-unreachable"),
            Alarm::SteppedDownIsolated => f.write_str("stepped-down-isolated"),
            Alarm::FencedBySplitBrain => f.write_str("fenced-by-split-brain"),
            Alarm::NeedsResync => f.write_str("needs-resync"),
            Alarm::ErrantTransactions { count } => write!(f, "errant-transactions({count})"),
            Alarm::OpFailing { op } => write!(f, "op-failing({op})"),
            Alarm::VipTamperedWith => f.write_str("vip-tampered-with"),
            Alarm::VipConflict => f.write_str("vip-conflict"),
            Alarm::LinkDown => f.write_str("link-down"),
            Alarm::CloudIpMovedAway => f.write_str("cloud-ip-moved-away"),
            Alarm::DomainMismatch { what } => write!(f, "domain-mismatch({what})"),
            Alarm::PeerInstanceRunning => f.write_str("peer-instance-running"),
            Alarm::MongoRolledBack { count } => write!(f, "mongo-rolled-back({count})"),
            Alarm::SwitchoverFailed => f.write_str("switchover-failed"),
            Alarm::ResyncFailed => f.write_str("resync-failed"),
            Alarm::NotPromotable { why } => write!(f, "not-promotable({why})"),
            Alarm::DbUnreachable => f.write_str("db-unreachable"),
            Alarm::PeerSilent => f.write_str("peer-silent"),
            Alarm::FsSyncFailing { error } => write!(f, "fs-sync-failing({error})"),
            Alarm::FsReceiveFailing { error } => write!(f, "fs-receive-failing({error})"),
            Alarm::WaitingForPeer => f.write_str("waiting-for-peer"),
            Alarm::DbMisconfigured { what } => write!(f, "db-misconfigured({what})"),
            Alarm::ReplicationStopped => f.write_str("replication-stopped"),
            Alarm::ReplicationBroken { error } => write!(f, "replication-broken({error})"),
            Alarm::RedundancyLost => f.write_str("redundancy-lost"),
            Alarm::SemiSyncInactive => f.write_str("semi-sync-inactive(a failover now may lose writes)"),
            Alarm::PossibleLoss { count } => write!(f, "possible-loss({count} transactions of the old Master may be missing)"),
            Alarm::MongoRedundancyLost => f.write_str("mongo-redundancy-lost"),
            Alarm::LeaseHeldElsewhere => f.write_str("lease-held-elsewhere"),
            Alarm::LeaseStale => f.write_str("lease-stale"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub role: Option<Role>,
    pub epoch: u64,
    pub position: Position,
    /// The peer's last heartbeat said semi-sync was active on its database.
    #[serde(default)]
    pub semi_sync: bool,
    /// Milliseconds since the last message, `None` if never heard.
    pub silent_for_ms: Option<u64>,
    pub alive: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A resync job (S11) as the operator follows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: u64,
    pub kind: ResyncKind,
    pub state: JobState,
    pub phase: ResyncPhase,
    /// 0-based index of `phase` among `phases`.
    pub phase_index: usize,
    pub phases: usize,
    pub done: u64,
    pub total: u64,
    /// Files checked of files to check, for a phase that deals in files.
    #[serde(default)]
    pub files: Option<(u64, u64)>,
    pub error: Option<String>,
}

impl JobStatus {
    /// Whole-job progress in percent, each phase weighing the same.
    pub fn percent(&self) -> u32 {
        if self.state == JobState::Done {
            return 100;
        }
        let frac = if self.total == 0 { 0.0 } else { (self.done.min(self.total) as f64) / (self.total as f64) };
        (((self.phase_index as f64 + frac) / self.phases.max(1) as f64) * 100.0).floor() as u32
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeId,
    pub role: Role,
    pub epoch: u64,
    /// A transition under way ("promoting", "demoting", "handing-over"), if any.
    pub transition: Option<String>,
    pub maintenance: Maintenance,
    pub needs_resync: bool,
    pub peer: PeerStatus,
    pub vip_held: bool,
    pub db_writable: bool,
    pub db_position: Position,
    pub db_replicating: bool,
    pub db_lag_ms: Option<u64>,
    pub semi_sync_active: bool,
    /// Transactions received (applied or in the relay log).
    #[serde(default)]
    pub db_received: Position,
    /// What the database says of its replication.
    #[serde(default)]
    pub db_replication: Replication,
    /// Replicas connected to this database (as a Master).
    #[serde(default)]
    pub db_replicas: u32,
    /// The last report failed: why. The other `db_` fields are then the last known values.
    #[serde(default)]
    pub db_error: Option<String>,
    /// As a Slave: transactions the Master reported that this node has not applied yet.
    #[serde(default)]
    pub db_lag_tx: Option<u64>,
    /// Why the promotion policy would refuse this node as Master now (`None`: it would not).
    #[serde(default)]
    pub promotion_blocker: Option<String>,
    pub fs_pushing: bool,
    /// The file-sync adapter's last report, if it has one.
    #[serde(default)]
    pub fs: Option<FsReport>,
    pub services_running: bool,
    pub cloud_holder: Option<NodeId>,
    /// The cloud adapter's last report (cloud mode).
    #[serde(default)]
    pub cloud: Option<CloudReport>,
    /// The MongoDB adapter's last report.
    #[serde(default)]
    pub mongo: Option<MongoReport>,
    pub job: Option<JobStatus>,
    pub alarms: Vec<Alarm>,
    pub now: Millis,
}
