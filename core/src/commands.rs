//! Operator commands (S14, S15, B4–B6). Each gets a reply: what was started, or why not.

use crate::input::{Command, Target};
use crate::node::{Handover, Node};
use crate::persist::Maintenance;
use crate::plan::{Plan, Via};
use crate::status::Alarm;
use crate::types::Role;

impl Node {
    pub(crate) fn on_command(&mut self, req: u64, cmd: Command) {
        let result = match cmd {
            Command::SetState(target) => self.set_state(target, false),
            Command::ForceMaster => self.set_state(Target::Master, true),
            Command::Switchover => self.switchover(req),
            Command::AskPeer(target) => match self.peer.silent_for(self.now) {
                Some(s) if s <= self.cfg.timing.failover_timeout => {
                    self.out.push(crate::action::Action::Send(crate::message::Message::SetStateRequest { from: self.cfg.node, target }));
                    Ok(Some(format!("asked the peer {} to be {target:?}", self.cfg.peer).to_lowercase()))
                }
                _ => Err(format!("the peer {} is not heard: it cannot be asked anything", self.cfg.peer)),
            },
            Command::Maintenance(on) => {
                self.maintenance = Maintenance { on, version: self.maintenance.version + 1 };
                self.refused = None;
                Ok(Some(format!("maintenance {}", if on { "on: automatic failover paused" } else { "off" })))
            }
            Command::Resync(kind) => self.start_resync(kind),
            Command::CancelResync => self.request_cancel(),
            Command::Shutdown => self.shutdown(req),
        };
        // `None`: the reply comes when the work finishes (switch-over, shutdown).
        if let Some(result) = result.transpose() {
            self.reply(req, result);
        }
    }

    fn busy(&self) -> Option<String> {
        self.plan
            .as_ref()
            .map(|p| format!("busy: {} is under way", p.name))
            .or_else(|| self.handover.as_ref().map(|_| "busy: a switch-over is under way".into()))
    }

    pub(crate) fn set_state(&mut self, target: Target, force: bool) -> Result<Option<String>, String> {
        let want = match target {
            Target::Master => Role::Master,
            Target::Slave => Role::Slave,
            Target::Off => Role::Off,
        };
        if self.role == want {
            return Ok(Some(format!("already {want}")));
        }
        // Becoming Slave or Off releases the same things: a release under way just changes target.
        let releasing = self.plan.as_ref().is_some_and(|p| p.goal == crate::plan::Goal::Release) && self.shutdown.is_none();
        if releasing && matches!(want, Role::Slave | Role::Off) && self.role != Role::Booting {
            self.set_role(want, &format!("operator: set-state {want}"));
            return Ok(Some(format!("now {want}")));
        }
        if let Some(b) = self.busy() {
            return Err(b);
        }
        match target {
            Target::Master => {
                if self.peer_is_master() {
                    return Err(format!("the peer {} is Master: use `switchover`", self.cfg.peer));
                }
                if let Some(wait) = self.paused_master_may_hold() {
                    return Err(format!(
                        "the peer was last seen as Master in maintenance mode and, if only cut off, keeps the VIP for another {wait} ms: power it off or wait"
                    ));
                }
                let blocker = self.promotion_blocker();
                let why = match (&blocker, force) {
                    (Some(b), false) => return Err(format!("refused by the promotion policy: {b}; {}", crate::policy::OVERRIDE)),
                    (Some(b), true) => {
                        let loss = self.known_gap();
                        self.emit(crate::event::Event::PromotionForced { why: format!("{b}; up to {loss} transactions of the peer may be lost") });
                        "operator: set-state master --accept-data-loss"
                    }
                    (None, _) => "operator: set-state master",
                };
                self.recheck_at = None;
                let mut plan = Plan::promote(self, Via::Operator, why, None);
                plan.forced = force && blocker.is_some();
                let reply = if plan.forced { "promoting (forced: possible data loss logged)" } else { "promoting" };
                self.start_plan(plan);
                Ok(Some(reply.into()))
            }
            Target::Slave => {
                if self.role == Role::Master {
                    // Handing the role to a healthy peer is the only way a Master becomes Slave
                    // without leaving the pair masterless.
                    return self.begin_handover(None).map(|_| Some("switch-over started".into()));
                }
                self.become_slave("operator: set-state slave");
                Ok(Some("now slave".into()))
            }
            Target::Off => {
                self.go_off("operator: set-state off");
                Ok(Some("services off".into()))
            }
        }
    }

    fn switchover(&mut self, req: u64) -> Result<Option<String>, String> {
        match self.role {
            Role::Master => self.begin_handover(Some(req)).map(|_| None),
            Role::Slave if self.peer_is_master() => {
                self.out.push(crate::action::Action::Send(crate::message::Message::SwitchoverRequest { from: self.cfg.node, epoch: self.peer.epoch() }));
                Ok(Some(format!("asked the Master {} to hand over", self.cfg.peer)))
            }
            r => Err(format!("switch-over needs a Master and a Slave; this node is {r} and the peer is {}", self.peer_role().map_or("silent", |r| r.as_str()))),
        }
    }

    /// Starts the old Master's half of a planned switch-over.
    pub(crate) fn begin_handover(&mut self, req: Option<u64>) -> Result<(), String> {
        if self.role != Role::Master {
            return Err(format!("only the Master hands over; this node is {}", self.role));
        }
        if let Some(b) = self.busy() {
            return Err(b);
        }
        // Handing over needs a peer heard just now, not merely within the failover timeout: one
        // that went quiet a moment ago may be gone, and the hand-over drops the VIP last.
        let fresh = self.peer.silent_for(self.now).is_some_and(|s| s <= 2 * self.cfg.timing.heartbeat_interval);
        let Some(hb) = self.peer.hb.as_ref().filter(|_| fresh) else {
            return Err(format!("the peer {} has not been heard in the last two heartbeats", self.cfg.peer));
        };
        if hb.role != Role::Slave {
            return Err(format!("the peer is {}, not a Slave", hb.role));
        }
        if hb.needs_resync {
            return Err("the peer waits for a resync: run `resync all` on it first".into());
        }
        if self.cfg.components.db && self.db_error.is_some() {
            // The hand-over fences the database before it drops the VIP; a dead one cannot be
            // fenced, and the plan would hold the VIP while retrying. The database watch hands
            // the role over by itself after db.down_handover_ms when that is lossless.
            return Err("this Master's database does not answer: a planned switch-over cannot fence it".into());
        }
        if self.cfg.components.db && !hb.replicating {
            return Err("the peer's database does not replicate from this Master: nothing would guarantee it has every write".into());
        }
        if self.cfg.components.mongo && !hb.mongo.is_some_and(|m| m.healthy) {
            return Err("the peer's MongoDB member is not a healthy secondary: nothing would guarantee it has every write".into());
        }
        self.handover = Some(Handover { deadline: self.now.after(self.cfg.timing.handover_timeout), req, position: None, sent: false, db_down: false });
        self.clear(&Alarm::SwitchoverFailed);
        self.set_role(Role::Slave, "planned switch-over");
        let plan = Plan::handover(self);
        self.start_plan(plan);
        Ok(())
    }

    /// A Master whose database stays down hands the role over without fencing it (it cannot
    /// answer; it restarts read-only, per the prerequisites) at the last position it reported.
    /// The caller checked that the Slave is healthy and holds that position.
    pub(crate) fn begin_handover_db_down(&mut self) -> Result<(), String> {
        if let Some(b) = self.busy() {
            return Err(b);
        }
        if !self.peer_alive() {
            return Err(format!("the peer {} is silent", self.cfg.peer));
        }
        self.handover = Some(Handover {
            deadline: self.now.after(self.cfg.timing.handover_timeout),
            req: None,
            position: Some(self.db_position),
            sent: false,
            db_down: true,
        });
        self.set_role(Role::Slave, "the database is down: handing over");
        let plan = Plan::handover(self);
        self.start_plan(plan);
        Ok(())
    }

    /// The Slave's half: the old Master is fenced at `position`; promote once we hold it.
    pub(crate) fn on_handover(&mut self, epoch: u64, position: crate::types::Position) {
        // Only the hand-over the peer is running right now: a delayed message from an earlier
        // one must not promote us over the Master the peer has since become again.
        let current = self.peer.hb.as_ref().is_some_and(|h| h.handing_over && h.epoch == epoch);
        if self.role != Role::Slave || self.plan.is_some() || !current || !self.peer_alive() {
            return;
        }
        // The old Master offered the role on a heartbeat that may predate a resync begun here
        // (half-copied data) or a member gone bad: the hard rules of the promotion policy hold
        // for a hand-over too. The old Master takes its role back when the hand-over times out.
        if let Some(b) = self.blocker().filter(|b| !b.gap) {
            self.emit(crate::event::Event::TakeoverRefused { why: format!("hand-over refused: {}", b.why) });
            return;
        }
        self.cancel_job("a switch-over makes this node Master");
        let mut plan = Plan::promote(self, Via::Handover, "planned switch-over", Some(position));
        plan.claim_by = Some(self.now.after(self.cfg.timing.handover_timeout / 2));
        self.start_plan(plan);
    }

    fn shutdown(&mut self, req: u64) -> Result<Option<String>, String> {
        if self.exiting {
            return Err("already shutting down".into());
        }
        // Tell the peer at once (a heartbeat now says so): a Master must not try to hand over
        // to a Slave that is leaving.
        self.next_heartbeat = self.now;
        if self.role == Role::Master && self.begin_handover(None).is_ok() {
            self.shutdown = Some(req);
            self.exiting = true;
            return Ok(None);
        }
        self.handover = None;
        self.cancel_job("the node is shutting down");
        self.shutdown = Some(req);
        self.exiting = true;
        let plan = Plan::release(self, "shutting-down");
        self.start_plan(plan);
        Ok(None)
    }
}
