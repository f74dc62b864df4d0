//! The modelled MongoDB pair (S6): each host's member, its oplog, primary or secondary, as the
//! adapter drives them (the Master's member the only voter, the Slave's a non-voting
//! secondary that pulls the primary's oplog).
//!
//! Replication is asynchronous, as in MongoDB: the primary acknowledges a write at once. A
//! secondary that receives gets it within the same step (as the database model does), so a
//! write is lost only if it was acknowledged while the secondary could not receive it (cut
//! off, its member down, its host off): the loss the README describes for async replication.
//! Invariant I9 checks exactly that at every promotion; I2 also forbids two primaries on one LAN. A former primary that rejoins with
//! writes the new primary never had rolls them back (its count of rollbacks grows), as
//! `mongod` does, saving them to its rollback directory.

use crate::fault::{node_name, Ix};
use crate::world::World;
use ridondato_core::{MongoReport, Optime};

#[derive(Clone, Debug, Default)]
pub struct MongoModel {
    /// Write ids in oplog order, each with the term of the primary that took it.
    pub oplog: Vec<(u64, i64)>,
    pub primary: bool,
    /// The member's current term: a promotion starts a higher one.
    pub term: i64,
    /// The `mongod` process is down: reports and operations fail, nothing replicates.
    pub down: bool,
    pub rollbacks: u64,
}

impl MongoModel {
    /// (term of the last entry, its position as the timestamp's seconds, 0).
    pub fn optime(&self) -> Optime {
        self.oplog.last().map_or((0, 0, 0), |(_, t)| (*t, self.oplog.len() as u32, 0))
    }
}

/// A Mongo write the client saw acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct MongoAck {
    pub id: u64,
    pub by: Ix,
    /// The peer's member received it before the acknowledgement could matter (same step).
    pub replicated: bool,
}

impl World {
    fn member_up(&self, ix: Ix) -> bool {
        self.hosts[ix].powered && !self.hosts[ix].mongo.down
    }

    /// `r`'s member pulls `src`'s oplog right now.
    pub fn mongo_receives(&self, r: Ix, src: Ix) -> bool {
        r != src && self.member_up(r) && self.member_up(src) && self.hosts[src].mongo.primary && !self.hosts[r].mongo.primary && self.same_domain()
    }

    /// Secondaries catch up with the primary; one whose oplog diverged rolls back first.
    pub fn mongo_replicate(&mut self) {
        // Two primaries that hear each other: the one of the older term steps down, as a
        // primary that learns of a newer term does.
        if self.two_mongo_primaries() {
            let (a, b) = (self.hosts[0].mongo.term, self.hosts[1].mongo.term);
            if a != b {
                self.hosts[usize::from(a > b)].mongo.primary = false;
            }
        }
        for ix in 0..2 {
            let src = 1 - ix;
            if !self.mongo_receives(ix, src) {
                continue;
            }
            let (theirs, term) = (self.hosts[src].mongo.oplog.clone(), self.hosts[src].mongo.term);
            let m = &mut self.hosts[ix].mongo;
            let common = m.oplog.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
            if common < m.oplog.len() {
                m.oplog.truncate(common);
                m.rollbacks += 1;
            }
            m.oplog.extend_from_slice(&theirs[common..]);
            m.term = m.term.max(term);
        }
    }

    /// A client write to the primary behind the front door, acknowledged at once.
    pub fn mongo_write(&mut self) {
        let Some(ix) = (0..2).find(|&i| self.front_door(i) && self.member_up(i) && self.hosts[i].mongo.primary) else { return };
        let id = self.next_mongo;
        self.next_mongo += 1;
        let entry = (id, self.hosts[ix].mongo.term);
        self.hosts[ix].mongo.oplog.push(entry);
        let other = 1 - ix;
        let replicated = self.mongo_receives(other, ix) && self.hosts[other].mongo.oplog.len() + 1 == self.hosts[ix].mongo.oplog.len();
        if replicated {
            self.hosts[other].mongo.oplog.push(entry);
        }
        self.mongo_acked.push(MongoAck { id, by: ix, replicated });
    }

    /// `mongod` starts again. A former primary is its configuration's sole voter and elects
    /// itself again, unless it hears a primary first (then it learns the newer configuration
    /// and stays a secondary).
    pub fn mongo_restart(&mut self, ix: Ix) {
        if !self.hosts[ix].mongo.down {
            return;
        }
        self.hosts[ix].mongo.down = false;
        let peer = 1 - ix;
        if self.member_up(peer) && self.hosts[peer].mongo.primary && self.same_domain() {
            self.hosts[ix].mongo.primary = false;
        }
    }

    /// The adapter's promotion: the sole vote, a new term; I9 checked.
    pub fn mongo_promote(&mut self, ix: Ix) -> Result<(), String> {
        if !self.member_up(ix) {
            return Err("modelled: the MongoDB member is down".into());
        }
        let peer = 1 - ix;
        let have: std::collections::HashSet<u64> = self.hosts[ix].mongo.oplog.iter().map(|(id, _)| *id).collect();
        if let Some(a) = self.mongo_acked.iter().find(|a| a.replicated && a.by == peer && !have.contains(&a.id)) {
            let v = format!("I9: Mongo write #{} acknowledged while {} received it is missing on the new primary", a.id, node_name(ix));
            self.violations.push(v);
        }
        let peer_term = self.hosts[peer].mongo.term;
        let m = &mut self.hosts[ix].mongo;
        if !m.primary {
            m.term = m.term.max(peer_term) + 1;
            m.primary = true;
        }
        // The stepUp's new term reaches a primary that hears it within a heartbeat: it steps
        // down (a primary the core has not fenced yet, say one whose daemon is down).
        if self.same_domain() && self.member_up(peer) {
            self.hosts[peer].mongo.primary = false;
        }
        Ok(())
    }

    pub fn mongo_demote(&mut self, ix: Ix) -> Result<(), String> {
        if !self.member_up(ix) {
            return Err("modelled: the MongoDB member is down".into());
        }
        self.hosts[ix].mongo.primary = false;
        Ok(())
    }

    /// The resync: the member rebuilt from the primary's data (an initial sync).
    pub fn mongo_copy(&mut self, ix: Ix) {
        let oplog = self.hosts[1 - ix].mongo.oplog.clone();
        let m = &mut self.hosts[ix].mongo;
        m.oplog = oplog;
        m.primary = false;
        m.rollbacks = 0;
    }

    /// What the adapter reports of host `ix`'s member.
    pub fn mongo_report(&self, ix: Ix) -> MongoReport {
        let m = &self.hosts[ix].mongo;
        if !self.member_up(ix) {
            return MongoReport { state: "UNREACHABLE".into(), error: Some("modelled: the MongoDB member is down".into()), ..MongoReport::default() };
        }
        let state = if m.primary { "PRIMARY" } else { "SECONDARY" };
        MongoReport { state: state.into(), optime: m.optime(), lag_ms: None, rollbacks: m.rollbacks, error: None }
    }

    /// Two primaries on one LAN, both up: I2's MongoDB half.
    pub fn two_mongo_primaries(&self) -> bool {
        self.same_domain() && (0..2).all(|i| self.member_up(i) && self.hosts[i].mongo.primary)
    }
}
