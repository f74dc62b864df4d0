//! Notable things a node decided, for logs and simulator timelines.

use crate::status::Alarm;
use crate::types::{Position, ResyncKind, ResyncPhase, Role};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    RoleChanged {
        from: Role,
        to: Role,
        epoch: u64,
        why: String,
    },
    AlarmRaised(Alarm),
    AlarmCleared(Alarm),
    /// A takeover was considered and refused (arbiter, maintenance, cloud manual mode...).
    TakeoverRefused {
        why: String,
    },
    OpFailed {
        op: String,
        error: String,
        attempt: u32,
    },
    JobStarted {
        job: u64,
        kind: ResyncKind,
    },
    JobPhase {
        job: u64,
        phase: ResyncPhase,
    },
    JobFinished {
        job: u64,
        result: String,
    },
    HandoverSent {
        epoch: u64,
    },
    /// The peer's operator asked this node for a state: what, and what came of it.
    OperatorRequest {
        what: String,
    },
    /// The local database stopped or started answering, or its replication changed.
    DbHealth {
        what: String,
    },
    /// Transactions here that the Master lacks, exactly: how many and which.
    ErrantFound {
        count: u64,
        gtids: String,
    },
    /// A node became Master: what it held, what the old Master last reported, how many
    /// transactions may be missing, and whether every acknowledged one is known to be here.
    Promoted {
        at: Position,
        master_last: Position,
        missing: u64,
        lossless: bool,
    },
    /// An operator forced a promotion the policy refused.
    PromotionForced {
        why: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::RoleChanged { from, to, epoch, why } => write!(f, "role {from} -> {to} epoch={epoch} ({why})"),
            Event::AlarmRaised(a) => write!(f, "alarm + {a}"),
            Event::AlarmCleared(a) => write!(f, "alarm - {a}"),
            Event::TakeoverRefused { why } => write!(f, "takeover refused: {why}"),
            Event::OpFailed { op, error, attempt } => write!(f, "{op} {error} (attempt {attempt})"),
            Event::JobStarted { job, kind } => write!(f, "job {job} resync {} started", kind.as_str()),
            Event::JobPhase { job, phase } => write!(f, "job {job} phase {}", phase.as_str()),
            Event::JobFinished { job, result } => write!(f, "job {job} {result}"),
            Event::HandoverSent { epoch } => write!(f, "handover sent at epoch {epoch}"),
            Event::DbHealth { what } => write!(f, "database: {what}"),
            Event::OperatorRequest { what } => f.write_str(what),
            Event::ErrantFound { count, gtids } => write!(f, "errant transactions: {count} here that the Master lacks ({gtids})"),
            Event::Promoted { at, master_last, missing, lossless } => {
                write!(f, "promoted at position {}; the old Master last reported {}; ", at.0, master_last.0)?;
                match (missing, lossless) {
                    (0, _) => f.write_str("nothing known missing"),
                    (n, true) => write!(f, "{n} transactions may be missing, none acknowledged (semi-sync was active)"),
                    (n, false) => write!(f, "{n} transactions may be missing (semi-sync was off: acknowledged writes may be lost)"),
                }
            }
            Event::PromotionForced { why } => write!(f, "operator forced a promotion past the policy: {why}"),
        }
    }
}
