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

/// How far a node's database has come: how many transactions it holds, counted over every
/// replication domain (MariaDB: the sum of each domain's last sequence number).
///
/// A promoted replica continues the numbering of each domain, so between the two nodes of a
/// pair a larger count is more recent data and the difference is how many transactions one
/// lacks. Divergence (errant transactions) is found by the DB adapter, which compares the GTID
/// sets themselves, domain by domain.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position(pub u64);

/// What a forced resync (S11) covers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResyncKind {
    Db,
    Fs,
    All,
    /// The MongoDB member alone (S11's "Mongo"); last, so the existing variants keep their
    /// encoding.
    Mongo,
}

impl ResyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncKind::Db => "db",
            ResyncKind::Fs => "fs",
            ResyncKind::All => "all",
            ResyncKind::Mongo => "mongo",
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
    /// The last push from the peer that this node's rsync daemon refused or could not write,
    /// and why (rsync's own words: "No space left on device"); `None` once a push landed or
    /// this node pushes itself.
    #[serde(default)]
    pub refused: Option<String>,
}

/// A MongoDB optime: the term, then the timestamp's seconds and increment. MongoDB orders
/// optimes by term first, and so does the tuple.
pub type Optime = (i64, u32, u32);

/// What the MongoDB adapter says of the local replica-set member (S6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MongoReport {
    /// `PRIMARY`, `SECONDARY`, `ROLLBACK`, `STARTUP2`, ... (`UNREACHABLE` with `error`).
    pub state: String,
    /// The last applied optime.
    pub optime: Optime,
    /// Milliseconds behind the primary's last write (a secondary that sees a primary).
    pub lag_ms: Option<u64>,
    /// Rollbacks the member went through since it started: writes of a former primary that
    /// the new one never had, saved by MongoDB in its rollback directory.
    pub rollbacks: u64,
    /// The member did not answer (the driver's words); the other fields are then the last known.
    #[serde(default)]
    pub error: Option<String>,
}

impl MongoReport {
    /// A member that answers and is a primary or a replicating secondary: one that may serve.
    pub fn healthy(&self) -> bool {
        self.error.is_none() && matches!(self.state.as_str(), "PRIMARY" | "SECONDARY")
    }
}

/// What a heartbeat says of the sender's MongoDB member.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MongoBeat {
    pub optime: Optime,
    /// The member answers and is a primary or a secondary.
    pub healthy: bool,
}

/// What the cloud adapter says of the public IP and of the domain operators use (S13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudReport {
    pub public_ip: Option<String>,
    /// The instance holding the public IP at the last look, if any.
    pub holder_instance: Option<String>,
    /// The domain, and what it resolved to at the last check.
    pub domain: String,
    pub resolved: Vec<String>,
    /// Set while the domain does not lead to the public IP: operators using it reach the wrong
    /// place, or nothing.
    pub dns_warning: Option<String>,
    /// The last API call that failed, with the API's code and message.
    pub last_error: Option<String>,
}

/// What the database says of its own replication (not what the node asked of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Replication {
    /// Not configured as a replica (a Master, a fresh server).
    #[default]
    NotReplica,
    /// Receiving and applying, connected to its Master.
    Running,
    /// Both threads on, the receiving side (re)connecting to its Master.
    Connecting,
    /// Configured but stopped without an error (STOP SLAVE, a restarted server).
    Stopped,
    /// Stopped on an error: MariaDB's own message.
    Broken(String),
}

impl Replication {
    pub fn as_str(&self) -> &str {
        match self {
            Replication::NotReplica => "not a replica",
            Replication::Running => "running",
            Replication::Connecting => "connecting",
            Replication::Stopped => "stopped",
            Replication::Broken(e) => e,
        }
    }
}

/// One report of the local database, as it describes itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbFacts {
    /// Transactions applied here.
    pub position: Position,
    /// Transactions received from the Master (applied or still in the relay log); at least
    /// `position`. What a promotion will hold once the relay log is applied.
    pub received: Position,
    /// read_only is off, whoever set it.
    pub writable: bool,
    pub replication: Replication,
    /// The database's own estimate (`Seconds_Behind_Master`); the core measures its own too.
    pub lag_ms: Option<u64>,
    /// As a Master: semi-synchronous replication is active (a commit waits for the replica).
    pub semi_sync: bool,
    /// As a Master: replicas connected and receiving.
    pub replicas: u32,
    /// Settings that make a failover unsafe (the adapter's prerequisite check, re-run now and
    /// then), each naming the setting and the value wanted; empty when all is well.
    #[serde(default)]
    pub misconfigured: Vec<String>,
}
