//! The promotion policy and the database watch: which node may become Master given its data,
//! and what a node does when its database or its replication goes wrong.
//!
//! As Patroni's `maximum_lag_on_failover` and orchestrator's candidate checks do, an automatic
//! takeover is refused to a node known to miss data: flagged for resync, a database that does
//! not answer, a resync under way, broken replication, or more transactions known missing than
//! allowed. "Known" is what the Master last reported in its heartbeat beyond what this node
//! received; when that heartbeat said semi-sync was active, whatever is missing was never
//! acknowledged to a client, so the promotion is lossless and allowed.
//!
//! MongoDB goes through the same rules: a member that has not reported, does not answer, or is
//! not a primary or secondary (STARTUP2, ROLLBACK, RECOVERING) is a hard blocker; a member known
//! to lack the optime the peer last reported (heartbeats carry it) is a gap, allowed only within
//! `mongo.max_lag_on_failover_s` seconds of writes. A Mongo resync running is a hard blocker.

use crate::event::Event;
use crate::node::Node;
use crate::status::Alarm;
use crate::time::Millis;
use crate::types::{Optime, Position, Replication, ResyncPhase, Role};

/// How many Master positions the lag measurement remembers (older ones are merged away).
const MARKS: usize = 256;

/// Since when each database condition that waits out `db_grace` has held.
#[derive(Clone, Debug, Default)]
pub(crate) struct HealthClock {
    /// Slave: replication not running although this node started it.
    pub replica_bad: Option<Millis>,
    /// Master: no replicating Slave.
    pub redundancy_bad: Option<Millis>,
    /// Master: semi-sync configured but inactive.
    pub semi_off: Option<Millis>,
    /// Master: its own database does not answer.
    pub db_down: Option<Millis>,
    /// Master: the Slave's MongoDB member is not a healthy secondary.
    pub mongo_redundancy_bad: Option<Millis>,
}

/// Why this node may not become Master automatically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocker {
    pub why: String,
    /// Only a gap in transactions (lag), which comes and goes under load: not alarmed while a
    /// Master is alive, only when it blocks a takeover.
    pub gap: bool,
}

pub(crate) const OVERRIDE: &str = "to promote anyway: `ridondato set-state master --accept-data-loss`";

impl Node {
    /// The database says it replicates (its last report, which succeeded).
    pub(crate) fn db_says_replicating(&self) -> bool {
        self.cfg.components.db && self.db_error.is_none() && self.db_replication == Replication::Running
    }

    /// What this node holds once its relay log is applied.
    pub(crate) fn db_holds(&self) -> Position {
        self.db_received.max(self.db_position)
    }

    /// Transactions the peer last reported that this node has not even received. A flagged
    /// peer's extra transactions are its own errant ones, not data we lack.
    pub(crate) fn known_gap(&self) -> u64 {
        match self.peer.hb.as_ref() {
            Some(h) if !h.needs_resync => h.position.0.saturating_sub(self.db_holds().0),
            _ => 0,
        }
    }

    /// The Master's last heartbeat said semi-sync was active: every write it acknowledged was
    /// received here.
    pub(crate) fn master_was_semi_sync(&self) -> bool {
        self.peer.hb.as_ref().is_some_and(|h| h.semi_sync)
    }

    fn job_runs(&self, phase: impl Fn(ResyncPhase) -> bool) -> bool {
        self.job.as_ref().is_some_and(|j| j.state == crate::status::JobState::Running && j.phases[j.index..].iter().any(|p| phase(*p)))
    }

    pub(crate) fn blocker(&self) -> Option<Blocker> {
        let c = self.cfg.components;
        if !c.db && !c.mongo {
            return None;
        }
        let hard = |why: String| Some(Blocker { why, gap: false });
        if c.db && self.job_runs(|p| matches!(p, ResyncPhase::DbCopy | ResyncPhase::DbReplicate)) {
            return hard("a database resync is running on this node".into());
        }
        if c.mongo && self.job_runs(|p| p == ResyncPhase::MongoCopy) {
            return hard("a MongoDB resync is running on this node".into());
        }
        if self.needs_resync {
            return hard("this node is flagged for resync (errant transactions, a lost split brain, or a resync that did not finish)".into());
        }
        if c.db {
            if let Some(e) = &self.db_error {
                return hard(format!("its database does not answer ({e})"));
            }
            if !self.db_reported {
                return hard("its database has not reported yet".into());
            }
            if let Replication::Broken(e) = &self.db_replication {
                return hard(format!("its replication is broken: {e}"));
            }
        }
        if c.mongo {
            match &self.mongo_report {
                None => return hard("its MongoDB member has not reported yet".into()),
                Some(r) if r.error.is_some() => return hard(format!("its MongoDB member does not answer ({})", r.error.as_deref().unwrap_or_default())),
                Some(r) if !r.healthy() => return hard(format!("its MongoDB member is {}, not a healthy secondary", r.state)),
                Some(_) => {}
            }
        }
        let gap = if c.db { self.known_gap() } else { 0 };
        if gap > self.cfg.max_lag_on_failover && !self.master_was_semi_sync() {
            return Some(Blocker {
                why: format!(
                    "{gap} transactions known missing: the peer last reported position {}, this node received {} (semi-sync was not active; max_lag_on_failover = {})",
                    self.peer.position().0,
                    self.db_holds().0,
                    self.cfg.max_lag_on_failover
                ),
                gap: true,
            });
        }
        if let Some((theirs, mine, secs)) = self.mongo_gap() {
            return Some(Blocker {
                why: format!(
                    "MongoDB writes known missing: the peer's member last reported optime {theirs:?}, this member holds {mine:?} ({secs} s of writes; mongo.max_lag_on_failover_s = {})",
                    self.cfg.mongo_max_lag_on_failover_s
                ),
                gap: true,
            });
        }
        None
    }

    /// This member's optime, once it reported.
    pub(crate) fn mongo_optime(&self) -> Optime {
        self.mongo_report.as_ref().map_or((0, 0, 0), |r| r.optime)
    }

    /// The peer's member last reported an optime this one does not hold, spanning at least
    /// `mongo_max_lag_on_failover_s` seconds (any, at 0): the peer's, ours, and the seconds.
    /// As for the database, a flagged peer's extra writes are its own, not data we lack.
    pub(crate) fn mongo_gap(&self) -> Option<(Optime, Optime, u32)> {
        if !self.cfg.components.mongo {
            return None;
        }
        let theirs = self.peer.hb.as_ref().filter(|h| !h.needs_resync)?.mongo?.optime;
        let mine = self.mongo_optime();
        let secs = theirs.1.saturating_sub(mine.1);
        (theirs > mine && secs >= self.cfg.mongo_max_lag_on_failover_s).then_some((theirs, mine, secs))
    }

    pub(crate) fn promotion_blocker(&self) -> Option<String> {
        self.blocker().map(|b| b.why)
    }

    /// The policy refused an automatic promotion: alarm with what is missing and the override.
    pub(crate) fn refuse_promotion(&mut self, why: String) {
        self.clear_where(|a| matches!(a, Alarm::NotPromotable { why: w } if *w != why));
        self.raise(Alarm::NotPromotable { why: why.clone() });
        self.note_refusal(&format!("promotion policy: {why}; {OVERRIDE}"));
    }

    /// At the claim: what this node holds against what the old Master last said.
    pub(crate) fn report_promotion(&mut self) {
        if !self.cfg.components.db {
            return;
        }
        let (at, master_last) = (self.db_holds(), self.peer.position());
        let missing = self.known_gap();
        let lossless = self.master_was_semi_sync();
        self.emit(Event::Promoted { at, master_last, missing, lossless });
        self.clear_where(|a| matches!(a, Alarm::PossibleLoss { .. } | Alarm::NotPromotable { .. }));
        if missing > 0 && !lossless {
            self.raise(Alarm::PossibleLoss { count: missing });
        }
    }

    // ----- measured lag -----

    pub(crate) fn mark_master_position(&mut self, p: Position) {
        if self.master_marks.back().is_some_and(|(q, _)| *q >= p) {
            return;
        }
        if self.master_marks.len() == MARKS {
            // Keep the oldest (it sets the lag); the newest stands for those dropped.
            self.master_marks.pop_back();
        }
        self.master_marks.push_back((p, self.now));
    }

    pub(crate) fn prune_master_marks(&mut self) {
        while self.master_marks.front().is_some_and(|(p, _)| *p <= self.db_position) {
            self.master_marks.pop_front();
        }
    }

    /// As a Slave of a live Master: how long ago the Master first reported a position this
    /// node has not applied yet (0 when caught up).
    pub(crate) fn measured_lag_ms(&self) -> Option<u64> {
        if !self.cfg.components.db || self.role != Role::Slave || !self.peer_is_master() || !self.db_reported {
            return None;
        }
        Some(self.master_marks.front().map_or(0, |(_, t)| self.now.since(*t)))
    }

    pub(crate) fn lag_tx(&self) -> Option<u64> {
        (self.cfg.components.db && self.role == Role::Slave && self.peer_is_master()).then(|| self.peer.position().0.saturating_sub(self.db_position.0))
    }

    // ----- the database watch -----

    /// Runs after every input: alarms for database conditions and the repairs they call for.
    pub(crate) fn watch_db(&mut self) {
        let c = self.cfg.components;
        if !(c.db || c.mongo) || !self.started {
            return;
        }
        let unreported = (c.db && !self.db_reported) || (c.mongo && self.mongo_report.is_none());
        let starting = unreported && self.now.since(self.boot_started) < self.cfg.timing.discovery_window;
        match self.blocker() {
            None => self.clear_where(|a| matches!(a, Alarm::NotPromotable { .. })),
            Some(_) if starting => {}
            Some(b) if !b.gap && self.role != Role::Master => {
                let why = b.why;
                self.clear_where(|a| matches!(a, Alarm::NotPromotable { why: w } if *w != why));
                self.raise(Alarm::NotPromotable { why });
            }
            Some(_) => {}
        }
        self.watch_mongo_redundancy();
        if !c.db {
            return;
        }
        match self.role {
            Role::Slave => self.watch_replica(),
            Role::Master => self.watch_master_db(),
            Role::Booting | Role::Off => {}
        }
        if self.role != Role::Master {
            self.db_health.redundancy_bad = None;
            self.db_health.semi_off = None;
            self.db_health.db_down = None;
            self.clear_where(|a| matches!(a, Alarm::RedundancyLost | Alarm::SemiSyncInactive));
        }
        if self.role != Role::Slave {
            self.db_health.replica_bad = None;
            self.clear_where(|a| matches!(a, Alarm::ReplicationStopped | Alarm::ReplicationBroken { .. }));
        }
    }

    /// A Master whose Slave's MongoDB member is not a healthy secondary for `db_grace`: alarm.
    fn watch_mongo_redundancy(&mut self) {
        let master = self.cfg.components.mongo && self.role == Role::Master;
        let peer_ok = self.peer.hb.as_ref().filter(|_| self.peer_alive()).is_some_and(|h| h.role == Role::Slave && h.mongo.is_some_and(|m| m.healthy));
        if !master || peer_ok {
            self.db_health.mongo_redundancy_bad = None;
            self.clear(&Alarm::MongoRedundancyLost);
            return;
        }
        let since = *self.db_health.mongo_redundancy_bad.get_or_insert(self.now);
        if self.grace_over(Some(since)) {
            self.raise(Alarm::MongoRedundancyLost);
        }
    }

    fn grace_over(&self, since: Option<Millis>) -> bool {
        since.is_some_and(|s| self.now.since(s) >= self.cfg.timing.db_grace)
    }

    /// A Slave whose replication should run but does not: alarm, and start it again.
    fn watch_replica(&mut self) {
        let asked = self.replicating_from.is_some() && self.peer_is_master() && self.plan.is_none();
        let ok = matches!(self.db_replication, Replication::Running | Replication::Connecting);
        if !asked || self.db_error.is_some() || ok {
            if ok {
                self.db_health.replica_bad = None;
                self.clear_where(|a| matches!(a, Alarm::ReplicationStopped | Alarm::ReplicationBroken { .. }));
            }
            return;
        }
        let since = *self.db_health.replica_bad.get_or_insert(self.now);
        if !self.grace_over(Some(since)) {
            return;
        }
        let alarm = match &self.db_replication {
            Replication::Broken(e) => Alarm::ReplicationBroken { error: e.clone() },
            _ => Alarm::ReplicationStopped,
        };
        if !self.alarms.contains(&alarm) {
            self.emit(Event::DbHealth { what: format!("replication should run but is {}: starting it again", self.db_replication.as_str()) });
        }
        self.clear_where(|a| matches!(a, Alarm::ReplicationStopped | Alarm::ReplicationBroken { .. }) && *a != alarm);
        self.raise(alarm);
        // Asked again (with the usual back-off on failure); the clock restarts for the next try.
        self.replicating_from = None;
        self.db_health.replica_bad = None;
    }

    /// A Master: a Slave that does not replicate, semi-sync gone, its own database down.
    fn watch_master_db(&mut self) {
        let hb = self.peer.hb.clone().filter(|_| self.peer_alive());
        let hb = hb.as_ref();
        let redundant = hb.is_some_and(|h| h.role == Role::Slave && h.db_ok && h.replicating);
        if redundant {
            self.db_health.redundancy_bad = None;
            self.clear(&Alarm::RedundancyLost);
        } else {
            let since = *self.db_health.redundancy_bad.get_or_insert(self.now);
            if self.grace_over(Some(since)) && !self.alarms.contains(&Alarm::RedundancyLost) {
                let why = match hb {
                    None => "the peer is silent".to_string(),
                    Some(h) if !h.db_ok => "the peer's database does not answer".to_string(),
                    Some(h) if h.role != Role::Slave => format!("the peer is {}", h.role),
                    Some(_) => "the peer's database does not replicate from this one".to_string(),
                };
                self.emit(Event::DbHealth { what: format!("redundancy lost: {why}") });
                self.raise(Alarm::RedundancyLost);
            }
        }
        let semi_expected = self.cfg.semi_sync && redundant && self.db_error.is_none() && self.db_writable;
        if !semi_expected || self.semi_sync {
            self.db_health.semi_off = None;
            self.clear(&Alarm::SemiSyncInactive);
        } else {
            let since = *self.db_health.semi_off.get_or_insert(self.now);
            if self.grace_over(Some(since)) {
                self.raise(Alarm::SemiSyncInactive);
            }
        }
        if self.db_error.is_none() {
            self.db_health.db_down = None;
            return;
        }
        let since = *self.db_health.db_down.get_or_insert(self.now);
        if self.now.since(since) < self.cfg.timing.db_down_handover || self.plan.is_some() || self.handover.is_some() {
            return;
        }
        // The Slave must be able to serve everything this node last reported; and that report
        // must cover every acknowledged write: only semi-sync says so (an asynchronous write
        // acknowledged after the last report is on this dead database alone, and handing over
        // would turn it into errant transactions that a resync then erases).
        let ready = hb.is_some_and(|h| h.role == Role::Slave && h.db_ok && h.promotable && !h.needs_resync && h.received >= self.db_position);
        if ready && !self.semi_sync {
            self.note_refusal(
                "this Master's database is down and semi-sync was not active at its last report: writes acknowledged since may exist only here; nothing moves",
            );
        } else if ready {
            self.emit(Event::DbHealth { what: format!("the database has not answered for {} ms: handing the role to the Slave", self.now.since(since)) });
            if let Err(e) = self.begin_handover_db_down() {
                self.note_refusal(&format!("database down, hand-over refused: {e}"));
            }
        } else {
            self.note_refusal("this Master's database is down and the Slave cannot take over without loss: nothing moves");
        }
    }
}
