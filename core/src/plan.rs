//! Role transitions as ordered plans: one operation at a time, each waiting for its result.
//!
//! Ordering is the safety argument, so it lives here and nowhere else: a promotion asks the
//! arbiter, then makes the new epoch durable, and only then raises the VIP and opens the DB;
//! a release fences before anything else can be taken over.

use crate::action::{Action, Op, OpId};
use crate::arbiter::{ArbiterKind, Question};
use crate::event::Event;
use crate::input::{Done, OpError};
use crate::message::Message;
use crate::node::Node;
use crate::persist::PersistedState;
use crate::status::Alarm;
use crate::time::Millis;
use crate::types::{Mode, Position, Role};
use std::collections::VecDeque;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Goal {
    Master,
    /// Let go of everything (to become Slave or Off, at boot, at shutdown).
    Release,
    /// Fence and let go, then tell the Slave to promote (planned switch-over).
    Handover,
}

/// Why a promotion runs, which decides whether the arbiter is asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Automatic (failover, start-up): the arbiter must agree.
    Arbiter,
    /// An operator asked: the same arbiters guard it, but no timeout or tie-break is waited for.
    Operator,
    /// The old Master fenced itself and told us so: no arbiter needed.
    Handover,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Run(Op),
    SendHandover,
    /// Let this many milliseconds pass before the next step.
    Pause(u64),
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub name: &'static str,
    pub goal: Goal,
    /// An automatic promotion (failover, start-up): it gives way to a peer with a stronger claim.
    pub automatic: bool,
    /// A hand-over promotion must claim the role before this instant, well inside the old
    /// Master's own deadline, after which that node takes its role back.
    pub claim_by: Option<Millis>,
    /// When the last arbiter check said yes: the claim must follow it closely.
    pub arbiter_ok_at: Option<Millis>,
    pub why: String,
    pub steps: VecDeque<Step>,
    pub inflight: Option<OpId>,
    pub attempts: u32,
    pub retry_at: Option<Millis>,
    /// A hand-over: if the database cannot catch up (`CatchUpDb`), the promotion is abandoned.
    pub strict_db: bool,
    /// An operator forced this promotion past the promotion policy (`--accept-data-loss`).
    pub forced: bool,
}

impl Plan {
    fn new(name: &'static str, goal: Goal, why: &str, ops: Vec<Op>) -> Plan {
        Plan {
            name,
            goal,
            automatic: false,
            claim_by: None,
            arbiter_ok_at: None,
            why: why.to_string(),
            steps: ops.into_iter().map(Step::Run).collect(),
            inflight: None,
            attempts: 0,
            retry_at: None,
            strict_db: false,
            forced: false,
        }
    }

    /// Let go of everything this node may hold.
    pub fn release(n: &Node, name: &'static str) -> Plan {
        let c = n.cfg.components;
        let mut ops = Vec::new();
        // The VIP goes first: an isolated or outranked Master must stop answering ARP before
        // the peer's failover timeout, and stopping services can take a while.
        if c.vip {
            ops.push(Op::DropVip);
        }
        if c.db {
            ops.push(Op::FenceDb);
        }
        if c.services {
            ops.push(Op::StopServices);
        }
        if c.mongo {
            ops.push(Op::DemoteMongo);
        }
        if c.fs {
            ops.push(Op::FsPushStop);
        }
        if n.cfg.lease.is_some() {
            // Last, once everything is let go: the peer need not wait for the TTL.
            ops.push(Op::Release { arbiter: ArbiterKind::EtcdLease });
        }
        Plan::new(name, Goal::Release, name, ops)
    }

    /// Become Master: arbiter (per `via`), durable epoch, then the resources.
    pub fn promote(n: &Node, via: Via, why: &str, wait_for: Option<Position>) -> Plan {
        let c = n.cfg.components;
        let lan = n.cfg.mode == Mode::Lan;
        let mut ops = Vec::new();
        let handover = wait_for.is_some() && c.db;
        if let (true, Some(position)) = (handover, wait_for) {
            // A hand-over promises no lost write: catch up (bounded) before claiming anything;
            // writes open only after the claim is durable, as in every promotion.
            ops.push(Op::CatchUpDb { position });
        }
        // Saturating: `Node::promote` refuses a claim once the epochs are exhausted.
        let epoch = n.top_epoch().saturating_add(1);
        let arbiters = n.arbiters_for_take(via);
        // The VIP was answered elsewhere not long ago: the Master lives but we cannot hear it.
        // If it just lost its link, it needs its isolation timeout to let go; should the link
        // come back sooner, it would still hold the VIP. Probe again after that time.
        let confirm = arbiters.contains(&ArbiterKind::ArpProbe) && n.alarms.contains(&Alarm::VipAnsweredElsewhere);
        ops.extend(arbiters.into_iter().map(|arbiter| Op::MayTake { arbiter, epoch }));
        ops.push(Op::Persist(PersistedState {
            epoch,
            last_role: Some(Role::Master),
            needs_resync: n.needs_resync,
            maintenance: n.maintenance,
            boots: n.boots,
        }));
        if !lan && via == Via::Arbiter && n.cfg.cloud_auto_failover {
            // Moving the association is the cloud arbiter: the API serialises the two claims.
            ops.push(Op::MoveCloudIp { to: n.cfg.node });
        }
        // A failover raises the VIP first (clients are waiting); a hand-over opens the database
        // first, right after the claim, so that a slow VIP cannot leave a promised write
        // position waiting while the world moves on.
        if c.db && handover {
            ops.push(Op::PromoteDb { wait_for });
        }
        if c.vip {
            // GARP follows in the background once the VIP is up (see `plan_step_done`): a slow
            // burst must not hold back the database and the services.
            ops.push(Op::RaiseVip);
        }
        if c.db && !handover {
            ops.push(Op::PromoteDb { wait_for });
        }
        if c.mongo {
            ops.push(Op::PromoteMongo);
        }
        if c.fs {
            ops.push(Op::FsPushStart { to: n.cfg.peer });
        }
        if c.services {
            ops.push(Op::StartServices);
        }
        let mut p = Plan::new("promoting", Goal::Master, why, ops);
        p.automatic = via == Via::Arbiter;
        if !p.steps.iter().any(|s| matches!(s, Step::Run(Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. }))) {
            // The look-ahead probe's answer, when it stands in for the plan's: as old as it is.
            p.arbiter_ok_at = n.watch_clear();
        }
        if confirm {
            let t = n.cfg.timing;
            let wait = t.isolation_timeout + n.isolation_check_budget();
            let probe = Step::Run(Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch });
            let at = p.steps.iter().position(|s| *s == probe).map_or(0, |i| i + 1);
            p.steps.insert(at, probe);
            p.steps.insert(at, Step::Pause(wait));
        }
        p.strict_db = wait_for.is_some();
        p
    }

    /// The old Master's half of a planned switch-over (B4, and S14's four cloud steps in one).
    pub fn handover(n: &Node) -> Plan {
        let c = n.cfg.components;
        let mut ops = Vec::new();
        if c.services {
            ops.push(Op::StopServices);
        }
        // A database that does not answer cannot be fenced; it restarts read-only.
        if c.db && !n.handover.as_ref().is_some_and(|h| h.db_down) {
            ops.push(Op::FenceDb);
        }
        if c.vip {
            ops.push(Op::DropVip);
        }
        if c.mongo {
            ops.push(Op::DemoteMongo);
        }
        if c.fs {
            ops.push(Op::FsPushStop);
        }
        if n.cfg.mode == Mode::Cloud {
            ops.push(Op::MoveCloudIp { to: n.cfg.peer });
        }
        if n.cfg.lease.is_some() {
            ops.push(Op::Release { arbiter: ArbiterKind::EtcdLease });
        }
        let mut p = Plan::new("handing-over", Goal::Handover, "planned switch-over", ops);
        p.steps.push_back(Step::SendHandover);
        p
    }

    /// An operation whose failure must not be skipped: it is retried until it succeeds.
    fn critical(&self, op: &Op) -> bool {
        match op {
            // Fencing MongoDB is fencing: a member left primary takes writes that are lost.
            Op::Persist(_) | Op::DropVip | Op::FenceDb | Op::DemoteMongo | Op::StopServices | Op::RaiseVip => true,
            // Nothing may be lost: a hand-over's promotion does not go on without its DB.
            Op::PromoteDb { .. } => self.strict_db,
            Op::MoveCloudIp { .. } => self.goal == Goal::Handover,
            _ => false,
        }
    }
}

impl Node {
    pub(crate) fn start_plan(&mut self, plan: Plan) {
        self.abort_plan();
        if plan.goal == Goal::Master {
            // A resync copies from the peer onto this node: never onto a Master.
            self.cancel_job("the node is becoming Master");
        }
        self.plan = Some(plan);
        self.advance_plan();
    }

    /// Drops the current plan. An operation of it still running that takes something (the VIP,
    /// writes, services...) becomes the orphan the next plan waits for; probes and GARP do not
    /// matter to what follows and are simply forgotten.
    pub(crate) fn abort_plan(&mut self) {
        let Some(old) = self.plan.take() else { return };
        let Some(id) = old.inflight else { return };
        if let Some(Step::Run(op)) = old.steps.front() {
            if takes(op) || matches!(op, Op::Persist(_)) {
                self.orphans.insert(id, op.clone());
            }
        }
    }

    /// Starts the next step when nothing is in flight and no retry is pending.
    pub(crate) fn advance_plan(&mut self) {
        loop {
            let Some(plan) = self.plan.as_ref() else { return };
            if plan.inflight.is_some() || plan.retry_at.is_some_and(|t| self.now < t) {
                return;
            }
            if !self.step_clear_of_orphan() {
                return;
            }
            let Some(plan) = self.plan.as_ref() else { return };
            let Some(step) = plan.steps.front().cloned() else {
                self.finish_plan();
                return;
            };
            match step {
                Step::Run(mut op) => {
                    // Two writes of the state store must not race: wait for the background one.
                    if matches!(op, Op::Persist(_)) && self.persist_inflight() {
                        return;
                    }
                    let stale = plan.arbiter_ok_at.is_some_and(|t| self.now.since(t) > self.cfg.timing.heartbeat_interval);
                    if matches!(op, Op::Persist(_)) && plan.goal == Goal::Master && stale {
                        // The arbiter said yes too long ago (a state write held us back): ask again.
                        self.abort_plan();
                        return;
                    }
                    if let (Op::Persist(s), Goal::Master) = (&mut op, plan.goal) {
                        // The claim is computed when it is written, above every epoch seen by now.
                        s.epoch = self.top_epoch().saturating_add(1);
                        s.needs_resync = self.needs_resync;
                        s.maintenance = self.maintenance;
                        s.boots = self.boots;
                        let fresh = Step::Run(op.clone());
                        if let Some(front) = self.plan.as_mut().and_then(|p| p.steps.front_mut()) {
                            *front = fresh;
                        }
                    }
                    let id = self.new_op();
                    if let Some(p) = self.plan.as_mut() {
                        p.inflight = Some(id);
                        p.retry_at = None;
                    }
                    self.out.push(Action::Run { id, op });
                    return;
                }
                Step::Pause(ms) => {
                    if let Some(p) = self.plan.as_mut() {
                        p.steps.pop_front();
                        p.retry_at = Some(self.now.after(ms));
                    }
                }
                Step::SendHandover => {
                    let position = self.handover.as_ref().and_then(|h| h.position).unwrap_or(self.db_position);
                    let msg = Message::Handover { from: self.cfg.node, epoch: self.epoch, position, sent_at: self.now };
                    self.out.push(Action::Send(msg));
                    if let Some(h) = self.handover.as_mut() {
                        h.sent = true;
                    }
                    self.emit(Event::HandoverSent { epoch: self.epoch });
                    if let Some(p) = self.plan.as_mut() {
                        p.steps.pop_front();
                    }
                }
            }
        }
    }

    /// The next step must not race the orphan on the same resource (a `DropVip` after a late
    /// `RaiseVip`). A releasing plan runs another of its steps first when it can; otherwise,
    /// and for promotions, it waits.
    fn step_clear_of_orphan(&mut self) -> bool {
        // Orphans of aborted plans, and takes still running in the background (a repair).
        let running: Vec<Op> = self.orphans.values().chain(self.background.values()).filter(|op| takes(op)).cloned().collect();
        if running.is_empty() {
            return true;
        }
        let Some(plan) = self.plan.as_mut() else { return true };
        let clashes = |s: &Step| matches!(s, Step::Run(op) if running.iter().any(|r| same_resource(op, r)));
        if !plan.steps.front().is_some_and(clashes) {
            return true;
        }
        if plan.goal == Goal::Master {
            return false;
        }
        match plan.steps.iter().position(|s| !clashes(s) && *s != Step::SendHandover) {
            Some(i) => {
                let s = plan.steps.remove(i).expect("index in range");
                plan.steps.push_front(s);
                true
            }
            None => false,
        }
    }

    pub(crate) fn plan_step_done(&mut self, result: Result<Done, OpError>) {
        let Some(mut plan) = self.plan.take() else { return };
        plan.inflight = None;
        let Some(Step::Run(op)) = plan.steps.front().cloned() else {
            self.plan = Some(plan);
            return;
        };
        let arbiter = match op {
            Op::MayTake { arbiter, .. } => Some(arbiter),
            _ => None,
        };
        let arbiter_alarm = arbiter.map(ArbiterKind::refusal_alarm);
        match result {
            Ok(done) => {
                if let Some(a) = arbiter {
                    let refused = match &done {
                        Done::Verdict(v) if v.from(a) => v.refusal(self.cfg.node),
                        other => Some(format!("the {} arbiter answered {other:?}", a.op_name(Question::MayTake))),
                    };
                    if let Some(why) = refused {
                        self.refuse_takeover(a.refusal_alarm(), why);
                        return;
                    }
                    plan.arbiter_ok_at = Some(self.now);
                    if a == ArbiterKind::EtcdLease {
                        self.lease_acquired(self.now);
                    }
                    self.clear(&a.refusal_alarm());
                }
                self.apply_effect(&op, &done);
                self.clear(&Alarm::OpFailing { op: op.name().to_string() });
                match (&op, &done) {
                    (Op::Persist(s), _) if plan.goal == Goal::Master && s.last_role == Some(Role::Master) => {
                        self.epoch = s.epoch;
                        self.refused = None;
                        self.report_promotion();
                        if plan.forced && self.needs_resync {
                            // The operator made this node's data the truth: it no longer waits
                            // for a copy from the peer (whose extra writes are now the errant ones).
                            self.needs_resync = false;
                            self.clear_where(|a| matches!(a, Alarm::NeedsResync | Alarm::ErrantTransactions { .. } | Alarm::FencedBySplitBrain));
                        }
                        self.clear_where(|a| {
                            matches!(
                                a,
                                Alarm::VipAnsweredElsewhere
                                    | Alarm::WitnessesUnreachable
                                    | Alarm::MasterUnreachable
                                    | Alarm::PeerInstanceRunning
                                    | Alarm::SteppedDownIsolated
                            )
                        });
                        self.set_role(Role::Master, &plan.why.clone());
                    }
                    (Op::RaiseVip, _) if plan.goal == Goal::Master => {
                        self.run_background(Op::Garp);
                    }
                    (Op::FenceDb, Done::Fenced { position }) => {
                        if let Some(h) = self.handover.as_mut() {
                            h.position = Some(*position);
                        }
                    }
                    _ => {}
                }
                plan.steps.pop_front();
                plan.attempts = 0;
                self.plan = Some(plan);
            }
            Err(e) => {
                if let Some(alarm) = arbiter_alarm {
                    self.refuse_takeover(alarm, format!("{} {e}", op.name()));
                    return;
                }
                plan.attempts += 1;
                self.emit(Event::OpFailed { op: op.name().to_string(), error: e.to_string(), attempt: plan.attempts });
                if matches!(op, Op::Persist(_)) && plan.goal == Goal::Master && self.role != Role::Master && plan.claim_by.is_none() {
                    // The arbiter's answer is only good right now: start over with fresh checks
                    // rather than claim the role later on an old one.
                    self.recheck_at = Some(self.now.after(self.backoff(plan.attempts)));
                    return;
                }
                let over = plan.attempts > self.cfg.max_retries;
                if over {
                    self.raise(Alarm::OpFailing { op: op.name().to_string() });
                }
                if over && plan.strict_db && matches!(op, Op::CatchUpDb { .. }) {
                    // The database could not catch up with the old Master's final position:
                    // nothing was claimed yet; the old Master takes its role back at its deadline.
                    self.raise(Alarm::SwitchoverFailed);
                    self.emit(Event::TakeoverRefused { why: "hand-over: the database did not reach the old Master's position".into() });
                    return;
                }
                if plan.critical(&op) || !over {
                    plan.retry_at = Some(self.now.after(self.backoff(plan.attempts)));
                    let probe = self.cfg.arp_probe && self.cfg.components.vip && self.cfg.mode == Mode::Lan;
                    if matches!(op, Op::RaiseVip) && plan.goal == Goal::Master && probe {
                        // By the retry the LAN may have moved on: look before raising again.
                        plan.steps.push_front(Step::Run(Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch: self.epoch }));
                    }
                } else {
                    // Not essential to the role: the alarm stays up, the rest of the plan goes on.
                    plan.steps.pop_front();
                    plan.attempts = 0;
                }
                self.plan = Some(plan);
            }
        }
    }

    /// The arbiter said no: stay where we are, say why once, ask again later.
    pub(crate) fn refuse_takeover(&mut self, alarm: Alarm, why: String) {
        self.abort_plan();
        // A leader key held elsewhere expires on etcd's clock, not ours: ask again at the
        // refresh pace, so that the takeover follows its expiry closely (a race between two
        // acquisitions is settled by etcd's transaction, not by waiting).
        let lease_wait = (alarm == Alarm::LeaseHeldElsewhere).then(|| self.cfg.lease.map(|l| l.refresh_every)).flatten();
        self.raise(alarm);
        if self.refused.as_deref() != Some(why.as_str()) {
            self.emit(Event::TakeoverRefused { why: why.clone() });
            self.refused = Some(why);
        }
        // Both nodes may have probed at once and seen each other's probe: wait a different
        // time each (by node id), so the next attempts do not coincide again.
        let wait = lease_wait.unwrap_or(self.cfg.timing.arbiter_recheck * u64::from(self.cfg.node.0.max(1)));
        self.recheck_at = Some(self.now.after(wait));
    }

    fn finish_plan(&mut self) {
        let Some(plan) = self.plan.take() else { return };
        // The peer may be waiting for this transition to end (`Heartbeat::busy`).
        self.send_heartbeat();
        if plan.goal == Goal::Release && self.handover.is_none() {
            if let Some(req) = self.shutdown.take() {
                self.reply(req, Ok("released everything; exiting".into()));
                self.out.push(Action::Exit);
            }
        }
    }
}

/// Two operations on the same resource (one takes, the other lets go, or two state writes).
fn same_resource(a: &Op, b: &Op) -> bool {
    let r = |o: &Op| match o {
        Op::RaiseVip | Op::DropVip => 1,
        Op::PromoteDb { .. } | Op::FenceDb => 2,
        Op::StartServices | Op::StopServices => 3,
        Op::FsPushStart { .. } | Op::FsPushStop => 4,
        Op::PromoteMongo | Op::DemoteMongo => 5,
        Op::MoveCloudIp { .. } => 6,
        Op::Persist(_) => 7,
        _ => 0,
    };
    r(a) != 0 && r(a) == r(b)
}

/// Operations that take a resource (the ones a later release must not overtake).
fn takes(op: &Op) -> bool {
    matches!(op, Op::RaiseVip | Op::PromoteDb { .. } | Op::StartServices | Op::FsPushStart { .. } | Op::PromoteMongo | Op::MoveCloudIp { .. })
}
