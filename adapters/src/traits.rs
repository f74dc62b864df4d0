//! One trait per outside world. The driver calls them under a deadline and feeds each result
//! back to the core as an input; the simulator implements them over its modelled world.
//!
//! Every method is idempotent where the name says a state ("raise", "fence"): the core may ask
//! twice after a crash or a timeout, and the second call must succeed without harm.

use async_trait::async_trait;
use ridondato_core::{DbFacts, FsReport, NodeId, PersistedState, Position, Progress, Verdict};
use std::sync::Arc;

/// An adapter failure: what failed and why, for the log and the status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(pub String);

impl AdapterError {
    pub fn new(msg: impl Into<String>) -> Self {
        AdapterError(msg.into())
    }
}

pub type AdapterResult<T> = Result<T, AdapterError>;

/// Progress of a long operation (resync), in the operation's unit.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Datagrams to and from the peer. Authentication and encoding sit above it (`wire`).
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, datagram: &[u8]) -> AdapterResult<()>;
    /// Waits for the next datagram from the peer's address.
    async fn recv(&self) -> AdapterResult<Vec<u8>>;
    /// The peer's address, for log lines about what came from it.
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// The shared IPs of LAN mode (S3, S4) and the ARP arbiter (B1, B3).
#[async_trait]
pub trait Vip: Send + Sync {
    async fn raise(&self) -> AdapterResult<()>;
    async fn drop_vip(&self) -> AdapterResult<()>;
    /// Gratuitous ARP burst (and unsolicited NA for IPv6 addresses).
    async fn garp(&self) -> AdapterResult<()>;
    /// Does any *other* host answer ARP for the VIP right now?
    async fn probe(&self) -> AdapterResult<bool>;
    /// Is the VIP configured on this host (to notice changes behind our back)?
    async fn held(&self) -> AdapterResult<bool>;
    /// Does the interface carrying the VIP have carrier? A Master lets go at once when not.
    async fn link_up(&self) -> AdapterResult<bool>;
    /// Extends the kernel-enforced lease of the addresses this node holds (called from the
    /// driver's loop: a stalled daemon stops renewing and its addresses expire). Never re-adds
    /// an address that is gone. Without a lease, nothing to do.
    async fn renew(&self) -> AdapterResult<()> {
        Ok(())
    }
    /// Carrier changes of the VIP's interfaces as the kernel announces them (netlink link
    /// notifications), taken once by the driver; `None` where there are none (the driver's
    /// periodic `link_up` is then the only source).
    fn link_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<bool>> {
        None
    }
}

/// An arbiter (B11): a judge outside the pair, asked before a claim and while Master. It
/// answers the facts it knows; what they mean is the core's decision (`Verdict::refusal`).
#[async_trait]
pub trait Arbiter: Send + Sync {
    /// May `me` take the role now, as the claim of `epoch`? (The etcd lease takes its key.)
    async fn may_take(&self, me: NodeId, epoch: u64) -> AdapterResult<Verdict>;
    /// May `me`, Master of `epoch`, keep the role? (The etcd lease keeps its key alive.)
    async fn may_keep(&self, me: NodeId, epoch: u64) -> AdapterResult<Verdict>;
    /// Let go of what the arbiter holds for this node, so the peer need not wait for it to
    /// expire; most hold nothing.
    async fn release(&self) -> AdapterResult<()> {
        Ok(())
    }
}

/// What the DB adapter reports periodically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbReport {
    pub facts: DbFacts,
    /// Transactions here that the Master lacks (errant GTIDs): how many, and which.
    pub errant: Option<(u64, String)>,
}

/// The MariaDB database (S5, S8, B4).
#[async_trait]
pub trait Db: Send + Sync {
    /// Wait until everything received is applied and `position` is reached; stays read-only.
    async fn catch_up(&self, position: Position) -> AdapterResult<()>;
    /// Apply everything received (at least `wait_for`), stop and reset replication, read-write.
    async fn promote(&self, wait_for: Option<Position>) -> AdapterResult<()>;
    /// Read-only, client sessions killed, verified. Returns the final position.
    async fn fence(&self) -> AdapterResult<Position>;
    /// Replicate from the peer's database (GTID, slave_pos).
    async fn replicate_from(&self, peer: NodeId) -> AdapterResult<()>;
    async fn report(&self) -> AdapterResult<DbReport>;
    /// Rebuild this database from the peer's (dump and restore), reporting bytes.
    async fn copy_from_peer(&self, peer: NodeId, progress: ProgressFn) -> AdapterResult<()>;
}

/// MongoDB replica-set membership (S6).
#[async_trait]
pub trait Mongo: Send + Sync {
    async fn promote(&self) -> AdapterResult<()>;
    async fn demote(&self) -> AdapterResult<()>;
    async fn resync(&self, progress: ProgressFn) -> AdapterResult<()>;
    /// The member's state, optime, lag and rollbacks (none from a backend without them).
    async fn report(&self) -> AdapterResult<Option<ridondato_core::MongoReport>> {
        Ok(None)
    }
}

/// Real-time file sync Master -> Slave under a bandwidth cap (S7).
#[async_trait]
pub trait FsSync: Send + Sync {
    async fn push_start(&self, peer: NodeId) -> AdapterResult<()>;
    async fn push_stop(&self) -> AdapterResult<()>;
    /// Full comparison and transfer from the peer (Master) to here, reporting bytes.
    async fn resync_from(&self, peer: NodeId, progress: ProgressFn) -> AdapterResult<()>;
    /// Backlog, rescans and errors, for the status (none from a backend without them).
    fn report(&self) -> Option<FsReport> {
        None
    }
}

/// The cloud public IP association (S13, S14).
#[async_trait]
pub trait CloudIp: Send + Sync {
    async fn associate(&self, to: NodeId) -> AdapterResult<()>;
    async fn holder(&self) -> AdapterResult<Option<NodeId>>;
    /// Is that node's instance running, per the cloud API (the cloud arbiter)?
    async fn instance_running(&self, node: NodeId) -> AdapterResult<bool>;
    /// The public IP, its holder and the domain check, for the status.
    fn report(&self) -> Option<ridondato_core::CloudReport> {
        None
    }
}

/// The application's own services (B10).
#[async_trait]
pub trait Services: Send + Sync {
    async fn start(&self) -> AdapterResult<()>;
    async fn stop(&self) -> AdapterResult<()>;
}

/// Durable node state, written crash-safely.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self) -> AdapterResult<Option<PersistedState>>;
    async fn save(&self, state: &PersistedState) -> AdapterResult<()>;
}
