//! The level-triggered decisions: after every input, look at what is known and act if needed.
//!
//! Deciding from state rather than from the input that just arrived means a lost message or a
//! missed timer can only delay a decision, never skip it.

use crate::action::Op;
use crate::arbiter::{is_arp_probe, ArbiterKind};
use crate::event::Event;
use crate::input::Done;
use crate::input::OpError;
use crate::node::Node;
use crate::peer::{master_wins, Claim};
use crate::plan::{Goal, Plan, Via};
use crate::status::Alarm;
use crate::types::{Mode, Role};

impl Node {
    pub(crate) fn decide(&mut self) {
        self.check_handover();
        if self.exiting {
            return;
        }
        self.watch_db();
        self.watch_lease();
        self.watch_peer();
        self.preempt_plan();
        if self.alarms.contains(&Alarm::LinkDown) && self.role != Role::Master {
            return; // nothing to take over through a dead link
        }
        if self.plan.is_some() {
            // A Master still completing its promotion (a slow unit, a retried step) watches for
            // isolation and conflicts all the same.
            if self.role == Role::Master && self.promoting() {
                self.last_master_seen = Some(self.now);
                self.watch_master();
            }
            return;
        }
        match self.role {
            Role::Booting => self.decide_booting(),
            Role::Slave => self.decide_slave(),
            Role::Master => {
                self.last_master_seen = Some(self.now);
                self.decide_master();
            }
            Role::Off => self.ensure_mongo_secondary(),
        }
    }

    /// A promotion in progress gives way to a Master that outranks it.
    fn preempt_plan(&mut self) {
        let Some(plan) = self.plan.as_ref() else { return };
        if plan.goal != Goal::Master {
            return;
        }
        if self.role != Role::Master && plan.claim_by.is_some_and(|t| self.now >= t) {
            // Too late: the old Master is about to take its role back (see `Handover`).
            self.abort_plan();
            self.raise(Alarm::SwitchoverFailed);
            self.emit(Event::TakeoverRefused { why: "hand-over: the role was not claimed in time".into() });
            return;
        }
        // Two Slaves that both began a takeover before hearing each other: the weaker claim
        // gives way before it has claimed anything (both arbiter checks may have passed).
        let contested = matches!(self.peer_role(), Some(Role::Slave | Role::Booting));
        if plan.automatic && self.role != Role::Master && contested && !self.wins_tie_break() {
            self.abort_plan();
            self.emit(Event::TakeoverRefused { why: "the peer has the stronger claim".into() });
            return;
        }
        if !self.peer_is_master() {
            return;
        }
        let peer_epoch = self.peer.epoch();
        if self.role != Role::Master {
            // Also a hand-over promotion: a peer heard as Master again took its role back.
            self.abort_plan();
            self.become_slave("a Master appeared while promoting");
        } else if !master_wins(self.epoch, self.cfg.node, peer_epoch, self.cfg.peer) {
            self.abort_plan();
            self.lose_split_brain(peer_epoch);
        }
    }

    fn check_handover(&mut self) {
        let Some(h) = self.handover.as_ref() else { return };
        if h.sent && self.peer_is_master() {
            let req = h.req;
            self.handover = None;
            let msg = format!("switch-over done: {} is Master at epoch {}", self.cfg.peer, self.peer.epoch());
            if let Some(req) = req {
                self.reply(req, Ok(msg));
            }
            if let Some(req) = self.shutdown.take() {
                self.reply(req, Ok("handed over; exiting".into()));
                self.out.push(crate::action::Action::Exit);
            }
        } else if self.now >= h.deadline {
            let req = h.req;
            self.handover = None;
            self.abort_plan();
            self.raise(Alarm::SwitchoverFailed);
            if let Some(req) = req {
                self.reply(req, Err(format!("the peer did not become Master within {} ms; taking the role back", self.cfg.timing.handover_timeout)));
            }
            if let Some(req) = self.shutdown.take() {
                // Everything was released by the hand-over plan: exit rather than take it back.
                self.reply(req, Ok("the peer did not take over; released everything; exiting".into()));
                self.out.push(crate::action::Action::Exit);
            }
            // Back to a Slave with no Master: the usual takeover rules (and the arbiter) decide.
        }
    }

    fn decide_booting(&mut self) {
        self.peer_returned = false;
        let t = self.cfg.timing;
        if self.peer_is_master() {
            self.become_slave("the peer is Master");
            return;
        }
        if self.peer.hb.as_ref().is_some_and(|h| h.handing_over || h.busy) && self.peer_alive() {
            return;
        }
        let window_over = self.now.since(self.boot_started) >= t.discovery_window;
        if self.cfg.components.db && !self.db_reported && !window_over {
            return; // the tie-break needs our real position
        }
        let peer_unreported = self.peer.hb.as_ref().is_some_and(|h| !h.db_ok) && self.peer_alive();
        if self.cfg.components.db && peer_unreported && !window_over {
            return; // and the peer's: its claim is not known before its database reported
        }
        // The same for MongoDB: the tie-break compares the members' optimes.
        let c = self.cfg.components;
        if c.mongo && !window_over && (self.mongo_report.is_none() || (self.peer_alive() && self.peer.hb.as_ref().is_some_and(|h| h.mongo.is_none()))) {
            return;
        }
        if self.recheck_at.is_some_and(|r| self.now < r) {
            return;
        }
        match self.peer_role() {
            Some(Role::Booting | Role::Slave) if self.wins_tie_break() => {
                self.promote(Via::Arbiter, "start-up: stronger claim than the peer");
            }
            Some(Role::Booting | Role::Slave) => {}
            Some(Role::Off) if self.cfg.mode == Mode::Lan || self.cfg.cloud_auto_failover => {
                self.promote(Via::Arbiter, "start-up: the peer's services are off");
            }
            Some(Role::Off) => {}
            Some(Role::Master) => {}
            None if window_over && self.paused_master_may_hold().is_some() => {
                self.note_refusal("maintenance: a paused Master cut off from us may still hold the VIP");
            }
            None if window_over => {
                // The documented lone-node rule (S10): a fresh install or a former Master takes
                // the role; a former Slave waits longer, since the absent Master may hold newer data.
                let former_master = self.durable.last_role == Some(Role::Master);
                // No state file but a database with data: a lost state file, not a fresh
                // install. The absent peer may have newer data, as for a former Slave.
                let has_data = self.cfg.components.db && self.db_position.0 > 0;
                if self.fresh && has_data && self.now.since(self.boot_started) < t.lone_slave_wait {
                    self.raise(Alarm::WaitingForPeer);
                    self.note_refusal(&format!(
                        "start-up: no state file, but the database holds {} transactions: waiting lone_slave_wait as a former Slave would",
                        self.db_position.0
                    ));
                    return;
                }
                if (self.fresh && !has_data) || former_master {
                    let why = if self.fresh { "start-up: first node, nobody else heard" } else { "start-up: former Master, nobody else heard" };
                    self.promote(Via::Arbiter, why);
                } else if self.now.since(self.boot_started) >= t.lone_slave_wait {
                    self.promote(Via::Arbiter, "start-up: former Slave alone past lone_slave_wait");
                } else if !self.alarms.contains(&Alarm::WaitingForPeer) {
                    self.raise(Alarm::WaitingForPeer);
                    let left = t.lone_slave_wait.saturating_sub(self.now.since(self.boot_started));
                    self.note_refusal(&format!(
                        "start-up: a former Slave alone waits {} s more (lone_slave_wait) for the absent Master, which may hold newer data; `ridondato set-state master` ends the wait",
                        left.div_ceil(1000)
                    ));
                }
            }
            None => {}
        }
    }

    /// Redundancy as both sides see it: a peer unheard for a failover timeout is an alarm on
    /// the Master as on the Slave (a Master alone serves on without a copy).
    fn watch_peer(&mut self) {
        let counts = matches!(self.role, Role::Master | Role::Slave);
        if self.peer_alive() || !counts {
            self.clear(&Alarm::PeerSilent);
        } else if self.peer.last_heard.is_none_or(|h| self.now.since(h) >= self.cfg.timing.failover_timeout) {
            self.raise(Alarm::PeerSilent);
        }
        if self.role != Role::Booting || self.peer_alive() {
            self.clear(&Alarm::WaitingForPeer);
        }
    }

    fn decide_slave(&mut self) {
        self.ensure_mongo_secondary();
        self.watch_vip();
        if self.peer_is_master() {
            self.refused = None;
            self.recheck_at = None;
            self.clear_where(|a| {
                matches!(
                    a,
                    Alarm::MasterUnreachable
                        | Alarm::PeerInstanceRunning
                        | Alarm::VipAnsweredElsewhere
                        | Alarm::WitnessesUnreachable
                        | Alarm::SteppedDownIsolated
                        | Alarm::SwitchoverFailed
                )
            });
            self.ensure_replicating();
            return;
        }
        if self.handover.is_some() {
            return;
        }
        self.consider_takeover();
    }

    fn ensure_replicating(&mut self) {
        let job_running = self.job.as_ref().is_some_and(|j| j.state == crate::status::JobState::Running);
        let want = self.cfg.components.db && !self.needs_resync && !job_running;
        if !want || self.replicating_from == Some(self.peer.epoch()) {
            return;
        }
        if self.background_has(|o| matches!(o, Op::ReplicateDb { .. })) || self.replicate_retry_at.is_some_and(|t| self.now < t) {
            return;
        }
        self.run_background(Op::ReplicateDb { from: self.cfg.peer });
    }

    /// A Slave's (or an Off node's) member that says it is primary (mongod restarted as the
    /// configuration's sole voter while cut off, or a demotion that failed) is stepped down
    /// again, whether or not a Master is heard: two primaries take writes.
    fn ensure_mongo_secondary(&mut self) {
        if !self.cfg.components.mongo || !self.mongo_settled_in("PRIMARY") || self.now < self.mongo_fix_at || self.background_has(|o| *o == Op::DemoteMongo) {
            return;
        }
        self.mongo_fix_at = self.now.after(self.cfg.timing.retry_max);
        self.emit(Event::DbHealth { what: "the MongoDB member of this Slave is primary: stepping it down".into() });
        self.run_background(Op::DemoteMongo);
    }

    /// A Slave with no Master: take over if the rules and the arbiter allow.
    fn consider_takeover(&mut self) {
        let t = self.cfg.timing;
        let peer_role = self.peer_role();
        if self.peer_alive() && self.peer.hb.as_ref().is_some_and(|h| h.handing_over || h.busy) {
            return;
        }
        let masterless = self.last_master_seen.is_none_or(|m| self.now.since(m) >= t.failover_timeout);
        let why = match peer_role {
            Some(Role::Off) => "the Master's services are off",
            Some(Role::Booting | Role::Slave) => {
                if !masterless || !self.wins_tie_break() {
                    return;
                }
                "no Master, and this node has the stronger claim"
            }
            Some(Role::Master) => return,
            None => {
                if !masterless {
                    return;
                }
                "the Master is silent"
            }
        };
        if self.maintenance.on {
            self.note_refusal("maintenance mode pauses automatic failover");
            return;
        }
        if self.paused_master_may_hold().is_some() {
            // Maintenance ended here but the silent Master never heard it: if it is isolated
            // rather than dead, it keeps its role for `maintenance_isolation_timeout` first.
            self.note_refusal("the Master was last seen in maintenance mode: waiting out its isolation timeout");
            return;
        }
        if self.cfg.mode == Mode::Cloud && !self.cfg.cloud_auto_failover {
            self.raise(Alarm::MasterUnreachable);
            self.note_refusal("cloud mode: switch-over is manual (set-state)");
            return;
        }
        if self.recheck_at.is_some_and(|r| self.now < r) || self.watch_wait_until().is_some() {
            return;
        }
        self.promote(Via::Arbiter, why);
    }

    pub(crate) fn note_refusal(&mut self, why: &str) {
        if self.refused.as_deref() != Some(why) {
            self.emit(Event::TakeoverRefused { why: why.to_string() });
            self.refused = Some(why.to_string());
        }
    }

    fn wins_tie_break(&self) -> bool {
        let Some(hb) = self.peer.hb.as_ref() else { return true };
        let mine = Claim {
            promotable: self.promotion_blocker().is_none(),
            needs_resync: self.needs_resync,
            position: self.db_holds(),
            optime: self.mongo_optime(),
            epoch: self.epoch,
            id: self.cfg.node,
        };
        let theirs = Claim {
            promotable: hb.promotable,
            needs_resync: hb.needs_resync,
            position: hb.received.max(hb.position),
            optime: hb.mongo.map_or((0, 0, 0), |m| m.optime),
            epoch: hb.epoch,
            id: hb.from,
        };
        mine.key() > theirs.key()
    }

    /// Resources a Master should hold but does not (a step that failed past its retries, or
    /// something undone behind our back) are asked for again, with back-off.
    fn repair_master(&mut self) {
        if self.now < self.repair_at || self.handover.is_some() {
            return;
        }
        let c = self.cfg.components;
        if c.vip && !self.vip_held && self.cfg.arp_probe {
            // Without the VIP nothing else is worth taking: it may be someone else's now. Probe,
            // raise it if free (see the probe's result), and the rest follows afterwards.
            self.repair_attempts += 1;
            self.repair_at = self.now.after(self.backoff(self.repair_attempts));
            if !self.background_has(|o| is_arp_probe(o) || matches!(o, Op::RaiseVip)) {
                self.run_background(Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch: self.epoch });
            }
            return;
        }
        let missing: Vec<Op> = [
            (c.vip && !self.vip_held, Op::RaiseVip),
            (c.db && !self.db_writable, Op::PromoteDb { wait_for: None }),
            // A member that answers as a plain secondary (stepped down behind our back).
            (c.mongo && self.mongo_settled_in("SECONDARY"), Op::PromoteMongo),
            (c.fs && !self.fs_pushing, Op::FsPushStart { to: self.cfg.peer }),
            (c.services && !self.services_running, Op::StartServices),
        ]
        .into_iter()
        .filter(|(m, _)| *m)
        .map(|(_, op)| op)
        .collect();
        if missing.is_empty() {
            self.repair_attempts = 0;
            return;
        }
        self.repair_attempts += 1;
        self.repair_at = self.now.after(self.backoff(self.repair_attempts));
        for op in missing {
            if !self.background_has(|o| o.name() == op.name()) {
                self.run_background(op);
            }
        }
    }

    fn decide_master(&mut self) {
        if self.peer_is_master() {
            let peer_epoch = self.peer.epoch();
            if !master_wins(self.epoch, self.cfg.node, peer_epoch, self.cfg.peer) {
                self.lose_split_brain(peer_epoch);
                return;
            }
            // We win, so the peer should fence itself on our next heartbeat. If it still claims
            // the role a failover timeout later, it cannot hear us (a one-way cut): only we know
            // both claims, so we are the one who can end it.
            let since = *self.outranked_peer_since.get_or_insert(self.now);
            if self.now.since(since) >= self.cfg.timing.failover_timeout {
                self.outranked_peer_since = None;
                self.needs_resync = true;
                self.raise(Alarm::FencedBySplitBrain);
                self.raise(Alarm::NeedsResync);
                self.become_slave("the peer still claims Master and evidently cannot hear us");
                return;
            }
        } else {
            self.outranked_peer_since = None;
        }
        if std::mem::take(&mut self.peer_returned) && self.cfg.components.vip && self.vip_held {
            // A partition healed: switches and phones may have learned another MAC meanwhile (B3).
            self.run_background(Op::Garp);
        }
        self.repair_master();
        self.watch_master();
    }

    /// No plan, or only this node's own promotion, is under way.
    fn promoting(&self) -> bool {
        self.plan.as_ref().is_none_or(|p| p.goal == Goal::Master)
    }

    /// The checks a Master runs whatever else it does: isolation, VIP conflicts, cloud IP.
    fn watch_master(&mut self) {
        let t = self.cfg.timing;
        let silent = self.peer.last_heard.is_none_or(|h| self.now.since(h) >= t.isolation_timeout);
        if let Some((id, started)) = self.isolation_check {
            // A witness check that cannot answer before the peer's failover timeout is as good
            // as no witness: this Master must let go in time either way.
            if self.now.since(started) >= self.isolation_check_budget() {
                self.background.remove(&id);
                self.isolation_check = None;
                self.isolation_result(0);
                return;
            }
        }
        if silent && self.cfg.witnesses > 0 && !self.paused_isolation() && self.now >= self.next_isolation_check && self.isolation_check.is_none() {
            self.next_isolation_check = self.now.after(t.heartbeat_interval);
            let id = self.run_background(Op::MayKeep { arbiter: ArbiterKind::Witnesses, epoch: self.epoch });
            self.isolation_check = Some((id, self.now));
        }
        let lan_probe = self.cfg.mode == Mode::Lan && self.cfg.components.vip && self.cfg.arp_probe;
        if lan_probe && self.vip_held && !self.peer_alive() && self.now >= self.next_conflict_check && !self.background_has(is_arp_probe) {
            // With the peer silent, nothing else would tell us that it holds the VIP too (its
            // link came back while the heartbeat path is still cut).
            self.next_conflict_check = self.now.after(t.conflict_check_interval);
            self.run_background(Op::MayKeep { arbiter: ArbiterKind::ArpProbe, epoch: self.epoch });
        }
        // Not while promoting: the promotion itself may still be moving the public IP here.
        if self.cfg.mode == Mode::Cloud
            && self.plan.is_none()
            && self.now >= self.next_cloud_check
            && !self.background_has(|o| matches!(o, Op::MayKeep { arbiter: ArbiterKind::CloudApi, .. }))
        {
            self.next_cloud_check = self.now.after(t.cloud_check_interval);
            self.run_background(Op::MayKeep { arbiter: ArbiterKind::CloudApi, epoch: self.epoch });
        }
    }

    fn lose_split_brain(&mut self, peer_epoch: u64) {
        // Our writes since the split are not on the winner: resync rather than silently rejoin (B4).
        self.needs_resync = true;
        self.raise(Alarm::FencedBySplitBrain);
        self.raise(Alarm::NeedsResync);
        let why = format!("two Masters: {} holds epoch {peer_epoch}", self.cfg.peer);
        self.become_slave(&why);
    }

    /// The highest epoch this node knows of (its own, its durable one, the peer's).
    pub(crate) fn top_epoch(&self) -> u64 {
        self.epoch.max(self.durable.epoch).max(self.peer.epoch())
    }

    pub(crate) fn promote(&mut self, via: Via, why: &str) {
        if self.top_epoch() == u64::MAX {
            // No newer claim exists: two Masters could not be told apart any more. Only a
            // damaged or forged state file gets here (one failover a second lasts for ages).
            self.note_refusal("the epoch is at its maximum (a damaged state file?): stop both nodes, set \"epoch\" to 1 in both state files, start them again");
            return;
        }
        if self.persist_inflight() {
            // The claim must follow the arbiter's answer at once; a state write still running
            // would hold it back, so ask the arbiter once that write is done.
            return;
        }
        if via == Via::Arbiter {
            if let Some(why) = self.promotion_blocker() {
                self.refuse_promotion(why);
                return;
            }
        }
        let plan = Plan::promote(self, via, why, None);
        self.start_plan(plan);
    }

    pub(crate) fn become_slave(&mut self, why: &str) {
        self.cancel_job("the node changed role");
        self.recheck_at = None;
        self.replicating_from = None;
        self.set_role(Role::Slave, why);
        let plan = Plan::release(self, "demoting");
        self.start_plan(plan);
    }

    pub(crate) fn go_off(&mut self, why: &str) {
        self.cancel_job("the node changed role");
        self.replicating_from = None;
        self.set_role(Role::Off, why);
        let plan = Plan::release(self, "going-off");
        self.start_plan(plan);
    }

    /// Results of operations started outside plans.
    pub(crate) fn background_done(&mut self, op: &Op, done: Done) {
        self.clear(&Alarm::OpFailing { op: op.name().to_string() });
        if matches!(op, Op::Persist(_)) {
            self.persist_failures = 0;
        }
        match (op, done) {
            (Op::MayTake { arbiter, .. } | Op::MayKeep { arbiter, .. }, Done::Verdict(v)) if v.from(*arbiter) => self.keep_verdict(v),
            (Op::ReplicateDb { .. }, _) => {
                self.replicating_from = Some(self.peer.epoch());
                self.replicate_failures = 0;
                self.replicate_retry_at = None;
            }
            (Op::Resync { .. }, _) => self.job_phase_finished(Ok(())),
            _ => {}
        }
    }

    pub(crate) fn background_failed(&mut self, op: &Op, e: OpError) {
        let name = op.name().to_string();
        match op {
            Op::MayKeep { arbiter: ArbiterKind::Witnesses, .. } => self.isolation_result(0),
            Op::ReplicateDb { .. } => {
                self.replicate_failures += 1;
                self.replicate_retry_at = Some(self.now.after(self.backoff(self.replicate_failures)));
                if self.replicate_failures > self.cfg.max_retries {
                    self.raise(Alarm::OpFailing { op: name.clone() });
                }
            }
            Op::Resync { .. } => {
                self.job_phase_finished(Err(e.clone()));
                return;
            }
            Op::Persist(_) => {
                self.persist_failures += 1;
                self.persist_retry_at = self.now.after(self.backoff(self.persist_failures));
                self.raise(Alarm::OpFailing { op: name.clone() });
            }
            _ => {}
        }
        self.emit(Event::OpFailed { op: name, error: e.to_string(), attempt: 1 });
    }

    /// Maintenance that the peer is known to observe too: only then may an isolated Master keep
    /// its role, since only then will the peer not take over.
    fn maintenance_shared(&self) -> bool {
        self.maintenance.on && self.peer.hb.as_ref().is_some_and(|h| h.maintenance.on && h.maintenance.version >= self.maintenance.version)
    }

    /// How much longer a silent peer, last seen in maintenance, may still hold its resources
    /// (it keeps them for `maintenance_isolation_timeout` when cut off); `None` if not.
    pub(crate) fn paused_master_may_hold(&self) -> Option<u64> {
        let t = self.cfg.timing;
        let silent = match self.peer.hb.as_ref() {
            Some(h) if h.maintenance.on && h.role == Role::Master => self.peer.silent_for(self.now)?,
            // Not heard since this node started, in maintenance: the peer may be a paused
            // Master cut off from us; count its silence from our start.
            None if self.maintenance.on => self.now.since(self.boot_started),
            _ => return None,
        };
        let needed = t.maintenance_isolation_timeout + t.failover_timeout;
        (silent < needed).then(|| needed - silent)
    }

    /// Maintenance holds off an isolated Master's step-down, for `maintenance_isolation_timeout`.
    pub(crate) fn paused_isolation(&self) -> bool {
        let silent = self.peer.last_heard.map_or(u64::MAX, |h| self.now.since(h));
        self.maintenance_shared() && silent < self.cfg.timing.maintenance_isolation_timeout
    }

    /// How long a Master's isolation check may take: half the gap between its isolation timeout
    /// and the peer's failover timeout, so a step-down still lands before the peer takes over.
    pub(crate) fn isolation_check_budget(&self) -> u64 {
        let t = self.cfg.timing;
        ((t.failover_timeout - t.isolation_timeout) / 2).max(1)
    }

    pub(crate) fn isolation_result(&mut self, reachable: u32) {
        self.isolation_check = None;
        let t = self.cfg.timing;
        let silent = self.peer.last_heard.is_none_or(|h| self.now.since(h) >= t.isolation_timeout);
        // A fresh etcd lease answers for this Master as a witness would.
        if reachable > 0 || self.lease_fresh() {
            self.clear(&Alarm::WitnessesUnreachable);
            return;
        }
        if self.role == Role::Master && silent && self.promoting() && !self.paused_isolation() {
            self.raise(Alarm::SteppedDownIsolated);
            self.become_slave("isolated: neither the peer nor any witness answers");
        }
    }
}
