//! Everything a node asks of the world: imperatives. Each `Run` reports back as `Input::Done`.

use crate::arbiter::{ArbiterKind, Question};
use crate::event::Event;
use crate::message::Message;
use crate::persist::PersistedState;
use crate::time::Millis;
use crate::types::{NodeId, Position, ResyncPhase};
use serde::{Deserialize, Serialize};

/// Identifies one requested operation so that its result can be matched (stale ones ignored).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// One operation on an outside world. Each maps to one adapter call run under a deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Make the state durable (write temp, fsync, rename). Nothing that depends on it runs first.
    Persist(PersistedState),
    RaiseVip,
    DropVip,
    /// Gratuitous ARP burst (and unsolicited NA for IPv6) so switches and phones learn the MAC.
    Garp,
    /// Ask an arbiter whether this node may take the role now, as the claim of `epoch`
    /// (answers `Done::Verdict`).
    MayTake {
        arbiter: ArbiterKind,
        epoch: u64,
    },
    /// Ask an arbiter whether this Master (of `epoch`) may keep the role; for the etcd lease
    /// this keeps it alive (answers `Done::Verdict`).
    MayKeep {
        arbiter: ArbiterKind,
        epoch: u64,
    },
    /// Let go of whatever the arbiter holds for this node (the etcd key), so that the peer
    /// need not wait for its expiry.
    Release {
        arbiter: ArbiterKind,
    },
    /// Wait, bounded, until everything received is applied and the position reached, staying
    /// read-only (the first step of a hand-over, before anything is claimed).
    CatchUpDb {
        position: Position,
    },
    /// Apply everything received (at least `wait_for` when given), stop replication, go read-write.
    PromoteDb {
        wait_for: Option<Position>,
    },
    /// Read-only on, client sessions killed, verified; reports the final position.
    FenceDb,
    /// Become a replica of the peer's database.
    ReplicateDb {
        from: NodeId,
    },
    PromoteMongo,
    DemoteMongo,
    /// Start pushing file changes to the peer.
    FsPushStart {
        to: NodeId,
    },
    FsPushStop,
    /// Associate the cloud public IP with `to`.
    MoveCloudIp {
        to: NodeId,
    },
    StartServices,
    StopServices,
    /// Run one phase of a resync job, reporting `Input::JobProgress` while it goes.
    Resync {
        job: u64,
        phase: ResyncPhase,
    },
}

impl Op {
    /// A short stable name, for logs, alarms and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Persist(_) => "persist",
            Op::RaiseVip => "raise-vip",
            Op::DropVip => "drop-vip",
            Op::Garp => "garp",
            Op::MayTake { arbiter, .. } => arbiter.op_name(Question::MayTake),
            Op::MayKeep { arbiter, .. } => arbiter.op_name(Question::MayKeep),
            Op::Release { arbiter: ArbiterKind::EtcdLease } => "lease-release",
            Op::Release { .. } => "arbiter-release",
            Op::CatchUpDb { .. } => "catch-up-db",
            Op::PromoteDb { .. } => "promote-db",
            Op::FenceDb => "fence-db",
            Op::ReplicateDb { .. } => "replicate-db",
            Op::PromoteMongo => "promote-mongo",
            Op::DemoteMongo => "demote-mongo",
            Op::FsPushStart { .. } => "fs-push-start",
            Op::FsPushStop => "fs-push-stop",
            Op::MoveCloudIp { .. } => "move-cloud-ip",
            Op::StartServices => "start-services",
            Op::StopServices => "stop-services",
            Op::Resync { .. } => "resync",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Send(Message),
    Run {
        id: OpId,
        op: Op,
    },
    /// Abort a running operation (a cancelled resync phase); it then reports `Cancelled`.
    Cancel {
        id: OpId,
    },
    /// Something worth a log line and a timeline entry.
    Event(Event),
    /// The answer to an operator command.
    Reply {
        req: u64,
        result: Result<String, String>,
    },
    /// Shutdown finished: the process may exit.
    Exit,
}

/// What one call to `Node::handle` produced. Dropping it would lose actions.
#[must_use]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub actions: Vec<Action>,
    /// Call `handle(.., Input::Tick)` at or after this instant.
    pub next_wakeup: Option<Millis>,
}
