//! The pure core of ridondato: a deterministic state machine for one node of an HA pair.
//!
//! `Node::handle(now, input) -> Output` is the only door. The core reads no clock, does no I/O,
//! draws no random numbers and iterates no hash maps, so the same inputs give the same outputs
//! in production, in the simulator and when a journaled incident is replayed (B8, B9).

mod action;
mod arbiter;
mod commands;
mod config;
mod decide;
mod event;
mod input;
mod lease;
mod message;
mod node;
mod peer;
mod persist;
mod plan;
mod policy;
mod resync;
mod status;
mod time;
mod types;
mod vip_watch;

pub use action::{Action, Op, OpId, Output};
pub use arbiter::{is_arp_probe, ArbiterKind, Question, Verdict};
pub use config::{Components, Config, ConfigError, Timing};
pub use event::Event;
pub use input::{Command, Done, Input, OpError, Target};
pub use lease::LeaseTiming;
pub use message::{Heartbeat, Message};
pub use node::Node;
pub use persist::{Maintenance, PersistedState};
pub use status::{Alarm, JobState, JobStatus, PeerStatus, Status};
pub use time::Millis;
pub use types::{CloudReport, DbFacts, FsReport, Mode, MongoBeat, MongoReport, NodeId, Optime, Position, Progress, Replication, ResyncKind, ResyncPhase, Role};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lease;
#[cfg(test)]
mod tests_mongo;
#[cfg(test)]
mod tests_policy;
#[cfg(test)]
mod tests_watch;
