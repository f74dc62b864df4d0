//! What a node keeps across reboots. Written through the state store before it is acted on.

use crate::types::Role;
use serde::{Deserialize, Serialize};

/// The durable part of a node. The epoch only grows; a promotion is durable before it is visible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Highest epoch this node has claimed or seen a Master claim.
    pub epoch: u64,
    /// The role the node held last; `None` on a freshly installed node.
    pub last_role: Option<Role>,
    /// This node lost a split brain or holds errant transactions: it waits for a resync.
    pub needs_resync: bool,
    /// Cluster-wide maintenance flag and its version (the higher version wins between nodes).
    pub maintenance: Maintenance,
    /// Incremented at every start, so the peer can tell a reboot from a replay.
    pub boots: u64,
}

/// Maintenance mode (B6): automatic failover paused on both nodes. Versioned so that the last
/// operator decision wins when the two nodes compare notes after a partition.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub on: bool,
    pub version: u64,
}
