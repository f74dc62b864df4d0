//! What the two nodes say to each other. Authentication and encoding belong to the transport.

use crate::persist::Maintenance;
use crate::time::Millis;
use crate::types::{MongoBeat, NodeId, Position, Role};
use serde::{Deserialize, Serialize};

/// Sent every heartbeat interval, and at once on every role change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: NodeId,
    /// The sender's boot counter: a larger one means it restarted and its `seq` starts over.
    pub boot: u64,
    /// Increases with every message of one boot; older or repeated ones are ignored.
    pub seq: u64,
    /// The sender's run (`Input::Start`): another run is a restart, whatever its boot counter.
    #[serde(default)]
    pub run: u64,
    /// The sender's monotonic clock when it sent this (only differences mean anything).
    pub sent_at: Millis,
    pub epoch: u64,
    pub role: Role,
    pub position: Position,
    pub needs_resync: bool,
    pub maintenance: Maintenance,
    /// The sender held the Master role last (start-up tie-break).
    pub was_master: bool,
    /// The sender is handing its Master role over and must not be promoted over.
    pub handing_over: bool,
    /// The sender is in the middle of a transition (releasing or taking resources): a peer
    /// waits for it to finish before taking what it is letting go.
    pub busy: bool,
    /// The sender's database replicates from the Master (a hand-over needs it), as the
    /// database itself said in its last report.
    pub replicating: bool,
    /// Transactions the sender's database has received (applied or in its relay log).
    pub received: Position,
    /// The sender's database answers.
    pub db_ok: bool,
    /// As a Master: semi-sync is active, so every acknowledged write is on the Slave too and a
    /// failover now is lossless.
    pub semi_sync: bool,
    /// The sender's promotion policy would let it become Master now.
    pub promotable: bool,
    /// The sender's MongoDB member, once it has reported (none without `[mongo]`). Last, so a
    /// heartbeat of a node that predates it still decodes (see the codec).
    #[serde(default)]
    pub mongo: Option<MongoBeat>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Heartbeat(Heartbeat),
    /// From a Slave whose operator asked for a switch-over: the Master runs it.
    SwitchoverRequest {
        from: NodeId,
        epoch: u64,
    },
    /// From a Master that is fenced and has dropped the VIP: "promote once you hold `position`".
    Handover {
        from: NodeId,
        epoch: u64,
        position: Position,
        sent_at: Millis,
    },
    /// An operator on the peer asks this node to take `target` (`set-state --peer`, the cloud
    /// switch-over's steps): decided here by the same rules as a local `set-state`.
    SetStateRequest {
        from: NodeId,
        target: crate::input::Target,
    },
}

impl Message {
    pub fn from(&self) -> NodeId {
        match self {
            Message::Heartbeat(h) => h.from,
            Message::SwitchoverRequest { from, .. } | Message::Handover { from, .. } | Message::SetStateRequest { from, .. } => *from,
        }
    }
}
