//! The node: one value holding everything a ridondato node knows, and `handle`, its only door.

use crate::action::{Action, Op, OpId, Output};
use crate::arbiter::{ArbiterKind, Verdict};
use crate::config::Config;
use crate::event::Event;
use crate::input::{Done, Input, OpError};
use crate::message::{Heartbeat, Message};
use crate::peer::PeerView;
use crate::persist::{Maintenance, PersistedState};
use crate::plan::Plan;
use crate::resync::Job;
use crate::status::{Alarm, PeerStatus, Status};
use crate::time::Millis;
use crate::types::{CloudReport, DbFacts, FsReport, MongoBeat, MongoReport, NodeId, Position, Replication, Role};
use std::collections::{BTreeMap, BTreeSet};

/// A pair member's state machine. Feed it inputs with `handle`; carry out the actions it returns.
#[derive(Debug)]
pub struct Node {
    pub(crate) cfg: Config,
    pub(crate) now: Millis,
    pub(crate) started: bool,
    pub(crate) role: Role,
    /// The epoch this node claims as Master or has adopted from a Master it heard.
    pub(crate) epoch: u64,
    /// What the state store last confirmed.
    pub(crate) durable: PersistedState,
    /// `None` until the first `Start`: a fresh install has no persisted state at all.
    pub(crate) fresh: bool,
    pub(crate) needs_resync: bool,
    pub(crate) maintenance: Maintenance,
    pub(crate) boot_started: Millis,
    /// This boot's number (durable once the first persist completes).
    pub(crate) boots: u64,
    /// This run of the process (`Input::Start`), carried in heartbeats.
    pub(crate) run: u64,
    /// Why the last takeover was refused, so the refusal is reported once, not every tick.
    pub(crate) refused: Option<String>,
    pub(crate) peer: PeerView,
    /// Last instant a Master (the peer, or this node) was known to exist.
    pub(crate) last_master_seen: Option<Millis>,
    pub(crate) plan: Option<Plan>,
    /// An operation of an abandoned plan still running: the next plan waits for it, so that a
    /// late `RaiseVip` cannot land after the `DropVip` that was meant to follow it.
    pub(crate) orphans: BTreeMap<OpId, Op>,
    pub(crate) persist_retry_at: Millis,
    pub(crate) persist_failures: u32,
    /// Operations running outside a plan (probes, corrections, replication, resync phases).
    pub(crate) background: BTreeMap<OpId, Op>,
    next_op: u64,
    seq: u64,
    pub(crate) next_heartbeat: Millis,
    /// After the arbiter refused, no new takeover attempt before this instant.
    pub(crate) recheck_at: Option<Millis>,
    pub(crate) next_isolation_check: Millis,
    /// The running isolation check (a Master's witness check) and when it started.
    pub(crate) isolation_check: Option<(OpId, Millis)>,
    pub(crate) next_cloud_check: Millis,
    pub(crate) next_conflict_check: Millis,
    pub(crate) replicate_retry_at: Option<Millis>,
    /// A Slave's MongoDB member found primary (a restarted sole voter): when to demote it again.
    pub(crate) mongo_fix_at: Millis,
    /// Member reports since the last promotion or demotion finished. Reports are asked one at a
    /// time, so the second one was asked after it: only from then on does a report's state
    /// say anything about what the operation left behind.
    pub(crate) mongo_reports_since_op: u32,
    /// The lease arbiter: when the last successful refresh (or acquisition) started, when the
    /// next refresh is due, and when the one in flight started.
    pub(crate) lease_ok_at: Option<Millis>,
    pub(crate) next_lease_refresh: Millis,
    pub(crate) lease_refresh_started: Millis,
    pub(crate) replicate_failures: u32,
    /// A Master re-attempts resources its promotion had to skip, with back-off.
    pub(crate) repair_at: Millis,
    pub(crate) repair_attempts: u32,
    /// The peer was heard again after silence: a Master that keeps its role sends GARP (B3).
    pub(crate) peer_returned: bool,
    /// Consecutive VIP observations that disagree with what we think we hold.
    pub(crate) vip_mismatches: u32,
    /// Since when this Master, winning by epoch, has heard the peer still claim Master.
    pub(crate) outranked_peer_since: Option<Millis>,
    pub(crate) alarms: BTreeSet<Alarm>,
    pub(crate) handover: Option<Handover>,
    pub(crate) job: Option<Job>,
    pub(crate) next_job: u64,
    pub(crate) shutdown: Option<u64>,
    /// Shutting down: no decision may take anything back.
    pub(crate) exiting: bool,
    // The node's view of its worlds, from operation results and reports.
    pub(crate) vip_held: bool,
    pub(crate) db_writable: bool,
    pub(crate) db_position: Position,
    pub(crate) db_reported: bool,
    pub(crate) db_lag_ms: Option<u64>,
    pub(crate) semi_sync: bool,
    pub(crate) db_received: Position,
    pub(crate) db_replication: Replication,
    pub(crate) db_replicas: u32,
    /// The last DB report failed: why (the other `db_` values are then only the last known).
    pub(crate) db_error: Option<String>,
    /// Since when the database health has been wrong in a way that waits out `db_grace`.
    pub(crate) db_health: crate::policy::HealthClock,
    /// The Master's reported positions and when each was first heard: measured lag.
    pub(crate) master_marks: std::collections::VecDeque<(Position, Millis)>,
    pub(crate) fs_pushing: bool,
    pub(crate) fs_report: Option<FsReport>,
    pub(crate) cloud_report: Option<CloudReport>,
    pub(crate) mongo_report: Option<MongoReport>,
    pub(crate) services_running: bool,
    pub(crate) cloud_holder: Option<NodeId>,
    /// The Master epoch our DB currently replicates from, if any.
    pub(crate) replicating_from: Option<u64>,
    /// A Slave's ARP probe run ahead of the failover deadline.
    pub(crate) vip_watch: crate::vip_watch::VipWatch,
    pub(crate) out: Vec<Action>,
}

/// A planned hand-over this node (the old Master) is running.
#[derive(Clone, Debug)]
pub(crate) struct Handover {
    pub deadline: Millis,
    pub req: Option<u64>,
    pub position: Option<Position>,
    pub sent: bool,
    /// The database is down: the hand-over does not fence it and promises `position`.
    pub db_down: bool,
}

impl Node {
    /// A node that has not started yet: it does nothing until `Input::Start`.
    pub fn new(cfg: Config) -> Node {
        Node {
            cfg,
            now: Millis::ZERO,
            started: false,
            role: Role::Booting,
            epoch: 0,
            durable: PersistedState::default(),
            fresh: true,
            needs_resync: false,
            maintenance: Maintenance::default(),
            boot_started: Millis::ZERO,
            boots: 0,
            run: 0,
            refused: None,
            peer: PeerView::default(),
            last_master_seen: None,
            plan: None,
            orphans: BTreeMap::new(),
            persist_retry_at: Millis::ZERO,
            persist_failures: 0,
            background: BTreeMap::new(),
            next_op: 1,
            seq: 0,
            next_heartbeat: Millis::ZERO,
            recheck_at: None,
            next_isolation_check: Millis::ZERO,
            isolation_check: None,
            next_cloud_check: Millis::ZERO,
            next_conflict_check: Millis::ZERO,
            replicate_retry_at: None,
            mongo_fix_at: Millis(0),
            mongo_reports_since_op: 2,
            lease_ok_at: None,
            next_lease_refresh: Millis(0),
            lease_refresh_started: Millis(0),
            replicate_failures: 0,
            repair_at: Millis::ZERO,
            repair_attempts: 0,
            peer_returned: false,
            vip_mismatches: 0,
            outranked_peer_since: None,
            alarms: BTreeSet::new(),
            handover: None,
            job: None,
            next_job: 1,
            shutdown: None,
            exiting: false,
            vip_held: false,
            db_writable: false,
            db_position: Position(0),
            db_reported: false,
            db_lag_ms: None,
            semi_sync: false,
            db_received: Position(0),
            db_replication: Replication::NotReplica,
            db_replicas: 0,
            db_error: None,
            db_health: Default::default(),
            master_marks: Default::default(),
            fs_pushing: false,
            fs_report: None,
            cloud_report: None,
            mongo_report: None,
            services_running: false,
            cloud_holder: None,
            replicating_from: None,
            vip_watch: Default::default(),
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A role transition or a hand-over is under way.
    pub fn in_transition(&self) -> bool {
        self.plan.is_some() || self.handover.is_some()
    }

    /// The only entry point. `now` must not go backwards between calls.
    pub fn handle(&mut self, now: Millis, input: Input) -> Output {
        let gap = now.since(self.now);
        self.now = self.now.max(now);
        if self.started && gap >= self.cfg.timing.failover_timeout {
            self.after_stall(gap);
        }
        match input {
            Input::Start { persisted, run } => {
                self.run = run;
                self.on_start(persisted);
            }
            _ if !self.started => {
                if let Input::Command { req, .. } = input {
                    self.reply(req, Err("the node has not started yet".into()));
                }
            }
            Input::Tick => {}
            Input::Peer(msg) => self.on_message(msg),
            Input::Done { id, result } => self.on_done(id, result),
            Input::DbReport(facts) => self.on_db_report(facts),
            Input::DbUnreachable { error } => self.on_db_unreachable(error),
            Input::DbErrant { count, gtids } => self.on_errant(count, &gtids),
            Input::JobProgress { job, progress } => self.on_job_progress(job, progress),
            Input::FsReport(r) => self.on_fs_report(r),
            Input::CloudReport(r) => {
                let dns = r.dns_warning.clone().map(|what| Alarm::DomainMismatch { what });
                self.alarm_slot(dns, |a| matches!(a, Alarm::DomainMismatch { .. }));
                self.cloud_report = Some(r);
            }
            Input::MongoReport(mut r) => {
                if r.error.is_some() {
                    // A member that does not answer keeps its last known optime and rollbacks.
                    if let Some(last) = &self.mongo_report {
                        (r.optime, r.rollbacks) = (last.optime, last.rollbacks);
                    }
                }
                self.mongo_reports_since_op = self.mongo_reports_since_op.saturating_add(1);
                // Like errant transactions: reported (status, log, metrics), never hidden.
                let rolled = (r.rollbacks > 0).then_some(Alarm::MongoRolledBack { count: r.rollbacks });
                self.alarm_slot(rolled, |a| matches!(a, Alarm::MongoRolledBack { .. }));
                self.mongo_report = Some(r);
            }
            Input::VipObserved { held } => self.on_vip_observed(held),
            Input::LinkObserved { up } => self.on_link(up),
            Input::Command { req, cmd } => self.on_command(req, cmd),
        }
        if self.started {
            // Decide first: a plan that must give way should not start one more step.
            self.decide();
            self.advance_plan();
            self.maybe_persist();
            self.pump_job();
            self.maybe_heartbeat();
        }
        Output { actions: std::mem::take(&mut self.out), next_wakeup: self.next_wakeup() }
    }

    fn on_start(&mut self, persisted: Option<PersistedState>) {
        if self.started {
            return;
        }
        self.started = true;
        self.fresh = persisted.is_none();
        let p = persisted.unwrap_or_default();
        self.epoch = p.epoch;
        self.needs_resync = p.needs_resync;
        self.maintenance = p.maintenance;
        if self.needs_resync {
            self.raise(Alarm::NeedsResync);
        }
        self.boot_started = self.now;
        // The boot counter is made durable before the first heartbeat: heartbeats carry it so a
        // peer can tell a restarted node (sequence numbers start over) from a replayed packet.
        self.boots = p.boots + 1;
        self.durable = p;
        if self.durable.last_role == Some(Role::Off) {
            self.set_role(Role::Off, "services off before the restart");
            self.start_plan(Plan::release(self, "going-off"));
        } else {
            // Whatever a crashed process left behind is let go before deciding anything.
            self.start_plan(Plan::release(self, "quiescing"));
        }
    }

    fn on_message(&mut self, msg: Message) {
        if msg.from() != self.cfg.peer {
            return;
        }
        match msg {
            Message::Heartbeat(hb) => self.on_heartbeat(hb),
            Message::SwitchoverRequest { epoch, .. } => {
                if self.role == Role::Master && epoch <= self.epoch {
                    if let Err(e) = self.begin_handover(None) {
                        self.emit(Event::TakeoverRefused { why: format!("switch-over requested by peer: {e}") });
                    }
                }
            }
            Message::SetStateRequest { target, .. } => {
                let outcome = self.set_state(target, false);
                let what = match &outcome {
                    Ok(m) => format!("the peer's operator asked for {target:?}: {}", m.as_deref().unwrap_or("started")),
                    Err(e) => format!("the peer's operator asked for {target:?}, refused: {e}"),
                };
                self.emit(Event::OperatorRequest { what });
            }
            Message::Handover { epoch, position, sent_at, .. } => {
                // A hand-over held up in the network (a partition that queued it) is stale: the
                // old Master has long since taken its role back.
                match self.peer.delay_of(self.now, sent_at) {
                    Some(d) if d <= self.cfg.timing.failover_timeout => self.on_handover(epoch, position),
                    d => self.emit(crate::event::Event::TakeoverRefused { why: format!("stale hand-over message (delayed {d:?} ms)") }),
                }
            }
        }
    }

    fn on_heartbeat(&mut self, hb: Heartbeat) {
        let was_lost = self.peer.lost || self.peer.last_heard.is_none();
        if !self.peer.accept(self.now, &hb) {
            return;
        }
        self.peer.lost = false;
        if hb.maintenance.version > self.maintenance.version {
            self.maintenance = hb.maintenance;
        }
        if hb.role == Role::Master {
            self.mark_master_position(hb.position);
        }
        if hb.role == Role::Master && !hb.handing_over {
            self.last_master_seen = Some(self.now);
            // Adopting the epoch keeps our next claim above every claim we have seen (B1).
            if self.role != Role::Master {
                self.epoch = self.epoch.max(hb.epoch);
            }
        }
        if was_lost {
            self.peer_returned = true;
        }
    }

    fn on_link(&mut self, up: bool) {
        if up {
            self.clear(&Alarm::LinkDown);
            return;
        }
        self.raise(Alarm::LinkDown);
        if self.role == Role::Master && self.cfg.components.vip && !self.exiting {
            // Nobody reaches us, and the peer will take over after its timeout. Letting go now,
            // not after the isolation timeout, means a link that comes back in between does not
            // bring a second holder of the VIP back with it.
            self.become_slave("the link carrying the VIP lost its carrier");
        }
    }

    fn on_db_report(&mut self, f: DbFacts) {
        // The database is the authority on its own read-only flag: the peer may have fenced it
        // over the network while promoting.
        if self.db_writable && !f.writable && self.role == Role::Master && self.plan.is_none() {
            self.emit(Event::OpFailed { op: "db-report".into(), error: "the database was made read-only behind our back".into(), attempt: 1 });
        }
        self.db_writable = f.writable;
        // What the database holds now, not the highest ever seen: a dropped schema or a resync
        // must show, and the start-up tie-break must compare real data.
        self.db_position = f.position;
        self.db_received = f.received.max(f.position);
        self.db_reported = true;
        self.db_lag_ms = f.lag_ms;
        self.semi_sync = f.semi_sync;
        self.db_replication = f.replication;
        self.db_replicas = f.replicas;
        let misconfigured = (!f.misconfigured.is_empty()).then(|| Alarm::DbMisconfigured { what: f.misconfigured.join("; ") });
        self.alarm_slot(misconfigured, |a| matches!(a, Alarm::DbMisconfigured { .. }));
        if self.db_error.take().is_some() {
            self.emit(Event::DbHealth { what: "the database answers again".into() });
        }
        self.clear(&Alarm::DbUnreachable);
        self.prune_master_marks();
    }

    fn on_fs_report(&mut self, r: FsReport) {
        let failing = r.last_error.clone().filter(|_| self.fs_pushing && self.role == Role::Master);
        self.alarm_slot(failing.map(|error| Alarm::FsSyncFailing { error }), |a| matches!(a, Alarm::FsSyncFailing { .. }));
        // A node that pushes itself is the Master: whatever it refused is not a Slave's problem.
        let refused = r.refused.clone().filter(|_| !self.fs_pushing);
        self.alarm_slot(refused.map(|error| Alarm::FsReceiveFailing { error }), |a| matches!(a, Alarm::FsReceiveFailing { .. }));
        self.fs_report = Some(r);
    }

    /// Keeps at most one alarm of a kind (`of_kind`): `now` raised (replacing one with other
    /// words), or all of that kind cleared.
    fn alarm_slot(&mut self, now: Option<Alarm>, of_kind: impl Fn(&Alarm) -> bool) {
        match now {
            Some(alarm) => {
                self.clear_where(|a| of_kind(a) && *a != alarm);
                self.raise(alarm);
            }
            None => self.clear_where(of_kind),
        }
    }

    fn on_db_unreachable(&mut self, error: String) {
        if self.db_error.is_none() {
            self.emit(Event::DbHealth { what: format!("the database does not answer: {error}") });
        }
        self.db_error = Some(error);
        if self.cfg.components.db {
            self.raise(Alarm::DbUnreachable);
        }
    }

    fn on_errant(&mut self, count: u64, gtids: &str) {
        if !self.alarms.contains(&Alarm::ErrantTransactions { count }) {
            self.emit(Event::ErrantFound { count, gtids: gtids.to_string() });
        }
        self.clear_where(|a| matches!(a, Alarm::ErrantTransactions { count: c } if *c != count));
        self.raise(Alarm::ErrantTransactions { count });
        if !self.needs_resync {
            self.needs_resync = true;
            self.raise(Alarm::NeedsResync);
        }
        self.replicating_from = None;
    }

    fn on_vip_observed(&mut self, held: bool) {
        let vip_op_running = self.background_has(|o| matches!(o, Op::RaiseVip | Op::DropVip)) || self.plan.is_some() || !self.orphans.is_empty();
        if held == self.vip_held || !self.cfg.components.vip || vip_op_running {
            self.vip_mismatches = 0;
            return;
        }
        // A report taken just before our own change lands may disagree once: act on two.
        self.vip_mismatches += 1;
        if self.vip_mismatches < 2 {
            return;
        }
        self.vip_mismatches = 0;
        self.raise(Alarm::VipTamperedWith);
        self.vip_held = held;
        let want = self.role == Role::Master && self.handover.is_none();
        if self.plan.is_none() && held && !want {
            self.run_background(Op::DropVip);
        }
        if want && !held {
            // Removed behind our back, or its lease ran out while this daemon stalled: the peer
            // may have taken over meanwhile. Never re-raise blindly: the repair probes first and
            // raises only if nobody answers, else this node steps down (`repair_master`).
            self.repair_at = self.now;
        }
    }

    fn on_done(&mut self, id: OpId, result: Result<Done, OpError>) {
        if self.watch_done(id, &result) {
            return;
        }
        if let Some(op) = self.orphans.remove(&id) {
            if let Ok(done) = &result {
                // Its effect happened; record it so the world view stays true.
                self.apply_effect(&op, done);
            }
            return;
        }
        if self.plan.as_ref().is_some_and(|p| p.inflight == Some(id)) {
            self.plan_step_done(result);
            return;
        }
        let Some(op) = self.background.remove(&id) else {
            return; // a stale result of an aborted plan: its effect is covered by what followed
        };
        match result {
            Ok(done) => {
                self.apply_effect(&op, &done);
                self.background_done(&op, done);
            }
            Err(e) => self.background_failed(&op, e),
        }
    }

    // ----- helpers shared by the other files of the node -----

    pub(crate) fn new_op(&mut self) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        id
    }

    pub(crate) fn run_background(&mut self, op: Op) -> OpId {
        let id = self.new_op();
        self.background.insert(id, op.clone());
        self.out.push(Action::Run { id, op });
        id
    }

    pub(crate) fn background_has(&self, f: impl Fn(&Op) -> bool) -> bool {
        self.background.values().any(f)
    }

    pub(crate) fn emit(&mut self, e: Event) {
        self.out.push(Action::Event(e));
    }

    pub(crate) fn reply(&mut self, req: u64, result: Result<String, String>) {
        self.out.push(Action::Reply { req, result });
    }

    pub(crate) fn raise(&mut self, a: Alarm) {
        if self.alarms.insert(a.clone()) {
            self.emit(Event::AlarmRaised(a));
        }
    }

    pub(crate) fn clear(&mut self, a: &Alarm) {
        if self.alarms.remove(a) {
            self.emit(Event::AlarmCleared(a.clone()));
        }
    }

    pub(crate) fn clear_where(&mut self, f: impl Fn(&Alarm) -> bool) {
        let gone: Vec<Alarm> = self.alarms.iter().filter(|a| f(a)).cloned().collect();
        for a in gone {
            self.clear(&a);
        }
    }

    pub(crate) fn set_role(&mut self, to: Role, why: &str) {
        if self.role == to {
            return;
        }
        let from = self.role;
        self.role = to;
        self.emit(Event::RoleChanged { from, to, epoch: self.epoch, why: why.to_string() });
        if to == Role::Master {
            self.last_master_seen = Some(self.now);
        }
        // Tell the peer at once rather than at the next interval.
        self.send_heartbeat();
    }

    pub(crate) fn peer_alive(&self) -> bool {
        self.peer.alive(self.now, self.cfg.timing.failover_timeout)
    }

    /// No input for `gap` ms: this daemon was stopped or starved (it hears a heartbeat every
    /// interval otherwise). A promotion it was in the middle of rests on checks (the peer's
    /// silence, the ARP probe) that are that much older: the peer may have taken over since.
    /// The promotion is dropped and decided afresh, with a new probe, rather than completed.
    ///
    /// A Master still taking its resources (a VIP whose raise is being retried after a probe)
    /// drops the rest of its plan too: the repair takes them, each after a fresh probe. Not a
    /// hand-over's promotion: its database must reach the promised position first, and the old
    /// Master's deadline bounds it; unless it rests on an etcd lease, which may have expired
    /// for etcd meanwhile.
    fn after_stall(&mut self, gap: u64) {
        let Some(plan) = self.plan.as_ref() else { return };
        if plan.goal != crate::plan::Goal::Master || (plan.strict_db && self.cfg.lease.is_none()) || self.handover.is_some() {
            return;
        }
        self.abort_plan();
        if self.role == Role::Master {
            self.repair_at = self.now;
            self.emit(Event::OpFailed {
                op: "promotion".into(),
                error: format!("this daemon stalled {gap} ms while taking its resources: taking them again after fresh checks"),
                attempt: 1,
            });
        } else {
            self.emit(Event::TakeoverRefused {
                why: format!("this daemon stalled {gap} ms in the middle of a promotion: its checks are stale, deciding again"),
            });
        }
    }

    /// The member's last report, once it postdates the last promotion or demotion, in `state`.
    pub(crate) fn mongo_settled_in(&self, state: &str) -> bool {
        self.mongo_reports_since_op >= 2 && self.mongo_report.as_ref().is_some_and(|r| r.error.is_none() && r.state == state)
    }

    pub(crate) fn peer_role(&self) -> Option<Role> {
        self.peer.role(self.now, self.cfg.timing.failover_timeout)
    }

    pub(crate) fn peer_is_master(&self) -> bool {
        self.peer.is_master(self.now, self.cfg.timing.failover_timeout)
    }

    pub(crate) fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            from: self.cfg.node,
            boot: self.boots,
            run: self.run,
            seq: self.seq,
            sent_at: self.now,
            epoch: self.epoch,
            // A Slave on its way out (not a Master handing over) is no candidate: it says Off.
            role: if self.exiting && self.handover.is_none() && self.role != Role::Master { Role::Off } else { self.role },
            position: self.db_position,
            needs_resync: self.needs_resync,
            maintenance: self.maintenance,
            was_master: self.durable.last_role == Some(Role::Master),
            handing_over: self.handover.is_some(),
            busy: self.plan.is_some() || (self.role != Role::Master && (self.vip_held || self.db_writable || self.services_running)),
            replicating: self.db_says_replicating(),
            received: self.db_holds(),
            db_ok: self.db_reported && self.db_error.is_none(),
            semi_sync: self.role == Role::Master && self.semi_sync && self.db_error.is_none(),
            promotable: self.promotion_blocker().is_none(),
            mongo: self.mongo_report.as_ref().filter(|_| self.cfg.components.mongo).map(|r| MongoBeat { optime: r.optime, healthy: r.healthy() }),
        }
    }

    pub(crate) fn send_heartbeat(&mut self) {
        if self.durable.boots != self.boots {
            return; // not before this boot's number is durable (see `on_start`)
        }
        self.seq += 1;
        let hb = self.heartbeat();
        self.out.push(Action::Send(Message::Heartbeat(hb)));
        self.next_heartbeat = self.now.after(self.cfg.timing.heartbeat_interval);
    }

    fn maybe_heartbeat(&mut self) {
        if self.now >= self.next_heartbeat && self.durable.boots == self.boots {
            self.send_heartbeat();
        }
        // Mark the peer lost once it has been silent for the failover timeout.
        if !self.peer.lost && self.peer.last_heard.is_some() && !self.peer_alive() {
            self.peer.lost = true;
        }
    }

    /// The durable state this node should have now; written in the background when it differs.
    fn desired_durable(&self) -> PersistedState {
        let last_role = match self.role {
            Role::Slave | Role::Off => Some(self.role),
            // A Master's role (with its epoch) is only ever written by its promotion plan.
            Role::Master | Role::Booting => self.durable.last_role,
        };
        PersistedState {
            epoch: self.epoch.max(self.durable.epoch),
            last_role,
            needs_resync: self.needs_resync,
            maintenance: self.maintenance,
            boots: self.boots,
        }
    }

    fn maybe_persist(&mut self) {
        if self.persist_inflight() || self.now < self.persist_retry_at {
            return;
        }
        let want = self.desired_durable();
        if want != self.durable {
            self.run_background(Op::Persist(want));
        }
    }

    pub(crate) fn persist_inflight(&self) -> bool {
        self.orphans.values().any(|op| matches!(op, Op::Persist(_)))
            || self.background_has(|op| matches!(op, Op::Persist(_)))
            || self.plan.as_ref().is_some_and(|p| p.inflight.is_some() && matches!(p.steps.front(), Some(crate::plan::Step::Run(Op::Persist(_)))))
    }

    /// Records what a successful operation changed in the world, wherever it was started.
    pub(crate) fn apply_effect(&mut self, op: &Op, done: &Done) {
        match op {
            Op::Persist(s) => self.durable = s.clone(),
            Op::RaiseVip => self.vip_held = true,
            Op::DropVip => self.vip_held = false,
            Op::PromoteDb { .. } => {
                self.db_writable = true;
                self.replicating_from = None;
            }
            Op::FenceDb => {
                self.db_writable = false;
                if let Done::Fenced { position } = done {
                    self.db_position = *position;
                }
            }
            Op::PromoteMongo | Op::DemoteMongo => self.mongo_reports_since_op = 0,
            Op::FsPushStart { .. } => self.fs_pushing = true,
            Op::FsPushStop => self.fs_pushing = false,
            Op::StartServices => self.services_running = true,
            Op::StopServices => self.services_running = false,
            Op::MoveCloudIp { to } => self.cloud_holder = Some(*to),
            Op::MayTake { arbiter: ArbiterKind::CloudApi, .. } | Op::MayKeep { arbiter: ArbiterKind::CloudApi, .. } => {
                if let Done::Verdict(Verdict::Cloud { holder, .. }) = done {
                    self.cloud_holder = *holder;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> u64 {
        let t = &self.cfg.timing;
        t.retry_base.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)).min(t.retry_max)
    }

    fn next_wakeup(&self) -> Option<Millis> {
        if !self.started {
            return None;
        }
        let t = &self.cfg.timing;
        let mut c = vec![self.next_heartbeat];
        if let Some(h) = self.peer.last_heard {
            c.push(h.after(t.isolation_timeout));
            c.push(h.after(t.failover_timeout));
            c.push(h.after(t.maintenance_isolation_timeout));
            c.push(h.after(t.maintenance_isolation_timeout + t.failover_timeout));
        }
        if let Some(m) = self.last_master_seen {
            c.push(m.after(t.failover_timeout));
        }
        c.extend(self.watch_start());
        c.extend(self.watch_wait_until());
        c.push(self.boot_started.after(t.discovery_window));
        c.push(self.boot_started.after(t.lone_slave_wait));
        c.push(self.persist_retry_at);
        c.extend(self.recheck_at);
        c.extend(self.replicate_retry_at);
        c.extend(self.plan.as_ref().and_then(|p| p.retry_at));
        c.extend(self.plan.as_ref().and_then(|p| p.claim_by));
        c.extend(self.handover.as_ref().map(|h| h.deadline));
        if let Some((_, started)) = self.isolation_check {
            c.push(started.after(self.isolation_check_budget()));
        }
        if self.role == Role::Master {
            c.push(self.repair_at);
            c.push(self.next_isolation_check);
            c.push(self.next_cloud_check);
            c.push(self.next_conflict_check);
        }
        c.into_iter().filter(|&w| w > self.now).min()
    }

    /// The snapshot an operator reads.
    pub fn status(&self) -> Status {
        let hb = self.peer.hb.as_ref();
        Status {
            node: self.cfg.node,
            role: self.role,
            epoch: self.epoch,
            transition: self.plan.as_ref().map(|p| p.name.to_string()).or_else(|| self.handover.as_ref().map(|_| "handing-over".to_string())),
            maintenance: self.maintenance,
            needs_resync: self.needs_resync,
            peer: PeerStatus {
                id: self.cfg.peer,
                role: hb.map(|h| h.role),
                epoch: self.peer.epoch(),
                position: self.peer.position(),
                semi_sync: hb.is_some_and(|h| h.semi_sync),
                silent_for_ms: self.peer.silent_for(self.now),
                alive: self.peer_alive(),
            },
            vip_held: self.vip_held,
            db_writable: self.db_writable,
            db_position: self.db_position,
            db_replicating: self.db_says_replicating(),
            db_lag_ms: self.measured_lag_ms().or(self.db_lag_ms),
            semi_sync_active: self.semi_sync,
            db_received: self.db_received,
            db_replication: self.db_replication.clone(),
            db_replicas: self.db_replicas,
            db_error: self.db_error.clone(),
            db_lag_tx: self.lag_tx(),
            promotion_blocker: self.promotion_blocker(),
            fs_pushing: self.fs_pushing,
            fs: self.fs_report.clone(),
            cloud: self.cloud_report.clone(),
            mongo: self.mongo_report.clone(),
            services_running: self.services_running,
            cloud_holder: self.cloud_holder,
            job: self.job.as_ref().map(|j| j.status()),
            alarms: self.alarms.iter().cloned().collect(),
            now: self.now,
        }
    }

    /// What this node would write to its state store now (for tests and the simulator).
    pub fn durable(&self) -> &PersistedState {
        &self.durable
    }
}
