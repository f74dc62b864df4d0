//! A MongoDB replica-set member look-alike for tests: a TCP server speaking OP_MSG that models
//! enough of a `mongod` replica-set member for the official Rust driver (3.x) to discover it,
//! select servers, run commands and retry writes across a failover.
//!
//! What was modelled, from the MongoDB manual:
//! - `hello`: <https://www.mongodb.com/docs/manual/reference/command/hello/>
//! - `replSetGetStatus`: <https://www.mongodb.com/docs/manual/reference/command/replSetGetStatus/>
//! - `replSetInitiate`: <https://www.mongodb.com/docs/manual/reference/command/replSetInitiate/>
//! - `replSetReconfig`: <https://www.mongodb.com/docs/manual/reference/command/replSetReconfig/>
//! - `replSetStepDown`: <https://www.mongodb.com/docs/manual/reference/command/replSetStepDown/>
//! - `replSetFreeze`: <https://www.mongodb.com/docs/manual/reference/command/replSetFreeze/>
//! - `replSetStepUp`: <https://www.mongodb.com/docs/manual/reference/command/replSetStepUp/>
//! - member states: <https://www.mongodb.com/docs/manual/reference/replica-states/>
//! - configuration: <https://www.mongodb.com/docs/manual/reference/replica-configuration/>
//! - rollbacks: <https://www.mongodb.com/docs/manual/core/replica-set-rollbacks/>
//! - initial sync: <https://www.mongodb.com/docs/manual/core/replica-set-sync/>
//! - retryable writes: <https://www.mongodb.com/docs/manual/core/retryable-writes/>
//! - OP_MSG: <https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/>
//! - error codes: <https://www.mongodb.com/docs/manual/reference/error-codes/>
//! - SCRAM: <https://www.mongodb.com/docs/manual/core/security-scram/>
//!
//! Simplifications, each chosen because no test of ours can tell the difference:
//! - elections: a sole electable voter becomes primary once it has heard from its peers (so a
//!   restarted former primary first learns of a newer config or term); with several voters, a
//!   secondary that saw no primary for `electionTimeoutMillis` (default 10 s) requests votes for
//!   term + 1 (one vote per term, none for a staler candidate). No priority takeover, no
//!   catch-up phase, no dry run; votes are not persisted.
//! - replication pulls from the primary only (no chaining); updates are logged as post-images.
//! - rollback uses refetch (see [`rollback`](crate::rollback)); initial sync copies at
//!   [`PeerOptions::initial_sync_bytes_per_sec`] to make progress observable.
//! - authentication is optional, SCRAM-SHA-256 only, for users given in [`PeerOptions::users`]
//!   (see [`auth`](crate::auth)); members log in to each other as the first user.
//! - no TLS, compression, transactions, secondary indexes, change streams.
//!
//! Peer extensions: `replSetGetStatus` has `rollbackCount` and `lastRollback {at, entries, dir,
//! commonPoint, files, syncSource}`; members talk through the internal commands
//! `ridondatoHeartbeat`, `ridondatoOplogFetch` and `ridondatoRequestVote`.

mod admin;
mod auth;
mod commands;
mod config;
mod crud;
mod data;
mod election;
mod error;
mod initial_sync;
mod link;
mod member;
mod oplog;
mod query;
mod reads;
mod replication;
mod rollback;
mod server;
mod status;
mod store;
mod wire;
mod writes;

pub use commands::VERSION;
pub use server::{serve, PeerHandle, PeerOptions};
