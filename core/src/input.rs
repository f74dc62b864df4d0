//! Everything that can happen to a node: facts, each carrying no clock (the caller passes `now`).

use crate::action::OpId;
use crate::arbiter::Verdict;
use crate::message::Message;
use crate::persist::PersistedState;
use crate::types::{CloudReport, DbFacts, FsReport, MongoReport, Position, Progress, ResyncKind};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The node process started; `persisted` is what the state store held (`None`: fresh install).
    /// `run`: this run of the process, different at every start (random in the daemon, the
    /// incarnation in the simulator): the peer tells a restart from a replay by it, even when
    /// the boot counter started over with a lost state file.
    Start { persisted: Option<PersistedState>, run: u64 },
    /// A wake-up. Harmless when nothing is due.
    Tick,
    /// A message from the peer, already authenticated by the transport.
    Peer(Message),
    /// An operation the node asked for has finished (or its deadline passed).
    Done { id: OpId, result: Result<Done, OpError> },
    /// Periodic report of the local database: position, replication health, lag.
    DbReport(DbFacts),
    /// The periodic report failed: the local database is down or unreachable.
    DbUnreachable { error: String },
    /// The DB adapter found transactions here that the Master does not have: how many, and
    /// which (GTID ranges), when it could compare with the Master.
    DbErrant { count: u64, gtids: String },
    /// A running resync phase made progress.
    JobProgress { job: u64, progress: Progress },
    /// Periodic report of the file-sync adapter.
    FsReport(FsReport),
    /// The MongoDB member's state, optime, lag and rollbacks.
    MongoReport(MongoReport),
    /// The cloud adapter's report (public IP, domain check).
    CloudReport(CloudReport),
    /// The VIP appeared or disappeared behind the node's back (someone ran `ip addr`).
    VipObserved { held: bool },
    /// The carrier of the VIP's interface went down or came back (netlink link events).
    LinkObserved { up: bool },
    /// An operator command; `req` ties the reply to the caller.
    Command { req: u64, cmd: Command },
}

/// What a successful operation reports back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    Ok,
    /// An arbiter's answer to `MayTake` or `MayKeep`.
    Verdict(Verdict),
    /// The database is read-only and its sessions are gone; this is its final position.
    Fenced {
        position: Position,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpError {
    Failed(String),
    /// The driver's deadline passed before the adapter answered.
    TimedOut,
    /// Cancelled on the node's own request (a cancelled resync phase).
    Cancelled,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Failed(m) => write!(f, "failed: {m}"),
            OpError::TimedOut => f.write_str("timed out"),
            OpError::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// The state an operator can ask for (S15).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Master,
    Slave,
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    SetState(Target),
    /// `set-state master --accept-data-loss`: promote although the promotion policy refuses
    /// (flagged, behind, unreachable database); what may be lost is logged.
    ForceMaster,
    /// Planned switch-over (B4/B5): the Slave becomes Master with nothing lost.
    Switchover,
    /// `set-state --peer`: ask the peer to take a state (it decides by its own rules; the
    /// operator sees the outcome in the peer's role).
    AskPeer(Target),
    Maintenance(bool),
    Resync(ResyncKind),
    CancelResync,
    /// The daemon is stopping (SIGTERM): hand over if Master, then let go of everything.
    Shutdown,
}
