//! Small value types shared by every part of the core.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the pair. Ids are configured, distinct, and break the last tie.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u8);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The role a node announces. `Off` is the seed's "services off": alive, holding nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Booting,
    Slave,
    Master,
    Off,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Booting => "booting",
            Role::Slave => "slave",
            Role::Master => "master",
            Role::Off => "off",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LAN: a virtual IP moved between hosts, ARP as the arbiter.
/// Cloud: the host's public IP association (an Elastic IP) replaces the VIP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Lan,
    Cloud,
}

/// How far a node's database has come: the sequence number of the last transaction it holds.
///
/// MariaDB numbers GTIDs per replication domain and a promoted replica continues the numbering,
/// so within the single domain a pair uses, a larger `seq` is more recent data. Divergence
/// (errant transactions) is detected by the DB adapter, which compares the GTID sets themselves.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position(pub u64);

/// What a forced resync (S11) covers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResyncKind {
    Db,
    Fs,
    All,
}

impl ResyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncKind::Db => "db",
            ResyncKind::Fs => "fs",
            ResyncKind::All => "all",
        }
    }
}

/// One phase of a resync job; each is one adapter operation reporting progress as it goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResyncPhase {
    /// Copy the Master's database onto this node (dump and restore, progress in bytes).
    DbCopy,
    /// Set the copied position and restart replication from the Master.
    DbReplicate,
    /// Resynchronise the MongoDB member from the primary.
    MongoCopy,
    /// Compare and transfer the synced directories (progress in bytes).
    FsCopy,
}

impl ResyncPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncPhase::DbCopy => "db-copy",
            ResyncPhase::DbReplicate => "db-replicate",
            ResyncPhase::MongoCopy => "mongo-copy",
            ResyncPhase::FsCopy => "fs-copy",
        }
    }
}

/// How far a resync phase has got: bytes (or the phase's own unit) and, where the phase deals in
/// files, how many of them have been checked.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub files: Option<(u64, u64)>,
}

impl Progress {
    pub fn of(done: u64, total: u64) -> Progress {
        Progress { done, total, files: None }
    }
}

/// What the file-sync adapter says of itself (the status page's "FS backlog").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsReport {
    /// Changed paths waiting for a transfer (a pending full pass counts one).
    pub backlog: u64,
    /// Full passes completed (at start, after an overflow, while short of watches, verifying).
    pub rescans: u64,
    /// inotify queue overflows seen (each one owes a full pass).
    pub overflows: u64,
    /// inotify ran out of watches: changes are found by periodic full passes instead.
    pub watch_limited: bool,
    /// Bytes sent and received for file sync so far (real-time and resync).
    pub bytes: u64,
    pub last_error: Option<String>,
}
