//! Forced resync (S11): a job of phases run on the Slave, each an adapter operation reporting
//! progress, cancellable, ending in a replicating Slave or a clear failure.

use crate::action::{Action, Op, OpId};
use crate::event::Event;
use crate::input::OpError;
use crate::node::Node;
use crate::status::{Alarm, JobState, JobStatus};
use crate::types::{Progress, ResyncKind, ResyncPhase, Role};

#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub kind: ResyncKind,
    pub phases: Vec<ResyncPhase>,
    pub index: usize,
    pub done: u64,
    pub total: u64,
    pub files: Option<(u64, u64)>,
    pub state: JobState,
    pub error: Option<String>,
    pub op: Option<OpId>,
    pub cancelling: bool,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        JobStatus {
            id: self.id,
            kind: self.kind,
            state: self.state,
            phase: self.phases[self.index.min(self.phases.len() - 1)],
            phase_index: self.index.min(self.phases.len() - 1),
            phases: self.phases.len(),
            done: self.done,
            total: self.total,
            files: self.files,
            error: self.error.clone(),
        }
    }

    fn running(&self) -> bool {
        self.state == JobState::Running
    }
}

impl Node {
    pub(crate) fn phases_for(&self, kind: ResyncKind) -> Vec<ResyncPhase> {
        let c = self.cfg.components;
        let mut v = Vec::new();
        if matches!(kind, ResyncKind::Db | ResyncKind::All) && c.db {
            v.push(ResyncPhase::DbCopy);
            v.push(ResyncPhase::DbReplicate);
        }
        if matches!(kind, ResyncKind::Mongo | ResyncKind::All) && c.mongo {
            v.push(ResyncPhase::MongoCopy);
        }
        if matches!(kind, ResyncKind::Fs | ResyncKind::All) && c.fs {
            v.push(ResyncPhase::FsCopy);
        }
        v
    }

    pub(crate) fn start_resync(&mut self, kind: ResyncKind) -> Result<Option<String>, String> {
        if self.role != Role::Slave || self.plan.is_some() {
            return Err(format!("a resync runs on a settled Slave; this node is {}", self.role));
        }
        if !self.peer_is_master() {
            return Err(format!("a resync copies from the Master, and the peer {} is not a live Master", self.cfg.peer));
        }
        if self.job.as_ref().is_some_and(Job::running) {
            return Err("a resync job is already running".into());
        }
        let phases = self.phases_for(kind);
        if phases.is_empty() {
            return Err(format!("nothing to resync: no component configured for `{}`", kind.as_str()));
        }
        let id = self.next_job;
        self.next_job += 1;
        self.job = Some(Job { id, kind, phases, index: 0, done: 0, total: 0, files: None, state: JobState::Running, error: None, op: None, cancelling: false });
        self.clear(&Alarm::ResyncFailed);
        self.emit(Event::JobStarted { job: id, kind });
        if self.job.as_ref().is_some_and(|j| j.phases.contains(&ResyncPhase::DbCopy)) {
            // From the first overwritten byte until replication runs again this node holds a
            // partial copy: it is flagged, durably, before the copy starts (see `pump_job`), so
            // that a failure, a cancel or a crash leaves it unpromotable.
            self.needs_resync = true;
        }
        self.pump_job();
        Ok(Some(format!("resync job {id} started")))
    }

    /// Starts the job's current phase when it may start: a database copy only once the resync
    /// flag is durable.
    pub(crate) fn pump_job(&mut self) {
        let Some(job) = self.job.as_ref() else { return };
        if !job.running() || job.op.is_some() || job.cancelling {
            return;
        }
        if job.phases[job.index] == ResyncPhase::DbCopy && !self.durable.needs_resync {
            return;
        }
        self.run_job_phase();
    }

    fn run_job_phase(&mut self) {
        let Some(job) = self.job.as_ref() else { return };
        let (id, phase) = (job.id, job.phases[job.index]);
        self.emit(Event::JobPhase { job: id, phase });
        if phase == ResyncPhase::DbCopy {
            self.replicating_from = None;
        }
        let op = self.run_background(Op::Resync { job: id, phase });
        if let Some(job) = self.job.as_mut() {
            job.op = Some(op);
            job.done = 0;
            job.total = 0;
            job.files = None;
        }
    }

    pub(crate) fn on_job_progress(&mut self, job: u64, p: Progress) {
        if let Some(j) = self.job.as_mut().filter(|j| j.id == job && j.running()) {
            j.done = p.done;
            j.total = p.total;
            j.files = p.files;
        }
    }

    pub(crate) fn job_phase_finished(&mut self, result: Result<(), OpError>) {
        let Some(job) = self.job.as_mut().filter(|j| j.running()) else { return };
        job.op = None;
        match result {
            Ok(()) => {
                let phase = job.phases[job.index];
                job.done = job.total.max(job.done);
                if phase == ResyncPhase::DbReplicate {
                    self.replicating_from = Some(self.peer.epoch());
                }
                let job = self.job.as_mut().expect("checked above");
                if job.index + 1 < job.phases.len() {
                    job.index += 1;
                    self.pump_job();
                    return;
                }
                job.state = JobState::Done;
                let id = job.id;
                let covers_db = job.phases.contains(&ResyncPhase::DbCopy);
                if covers_db || !self.cfg.components.db {
                    self.needs_resync = false;
                    self.clear_where(|a| matches!(a, Alarm::NeedsResync | Alarm::ErrantTransactions { .. } | Alarm::FencedBySplitBrain));
                }
                self.emit(Event::JobFinished { job: id, result: "done".into() });
            }
            Err(OpError::Cancelled) => {
                job.state = JobState::Cancelled;
                let id = job.id;
                self.emit(Event::JobFinished { job: id, result: "cancelled".into() });
                self.flag_unfinished_copy();
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(format!("{}: {e}", job.phases[job.index].as_str()));
                let id = job.id;
                self.raise(Alarm::ResyncFailed);
                self.emit(Event::JobFinished { job: id, result: format!("failed: {e}") });
                self.flag_unfinished_copy();
            }
        }
    }

    /// A database copy that did not finish leaves a node that must not serve: say so.
    fn flag_unfinished_copy(&mut self) {
        if self.needs_resync && self.cfg.components.db {
            self.raise(Alarm::NeedsResync);
            self.emit(Event::DbHealth {
                what: "the database resync did not finish: this node stays flagged for resync and will not become Master automatically".into(),
            });
        }
    }

    pub(crate) fn request_cancel(&mut self) -> Result<Option<String>, String> {
        let Some(job) = self.job.as_mut().filter(|j| j.running()) else {
            return Err("no resync job is running".into());
        };
        if let Some(id) = job.op {
            job.cancelling = true;
            self.out.push(Action::Cancel { id });
        }
        Ok(Some("cancelling".into()))
    }

    /// Stops a running job because the node's role changed under it.
    pub(crate) fn cancel_job(&mut self, why: &str) {
        let Some(job) = self.job.as_mut().filter(|j| j.running()) else { return };
        job.state = JobState::Cancelled;
        job.error = Some(why.to_string());
        let (id, op) = (job.id, job.op.take());
        if let Some(op) = op {
            self.background.remove(&op);
            self.out.push(Action::Cancel { id: op });
        }
        self.emit(Event::JobFinished { job: id, result: format!("cancelled: {why}") });
        self.flag_unfinished_copy();
    }
}
