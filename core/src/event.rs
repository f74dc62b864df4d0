//! Notable things a node decided, for logs and simulator timelines.

use crate::status::Alarm;
use crate::types::{ResyncKind, ResyncPhase, Role};
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
        }
    }
}
