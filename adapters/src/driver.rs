//! The driver: runs one core node against real (or simulated) backends.
//!
//! One loop, as in quinn: take the next input (timer, datagram, operation result, command),
//! hand it to the core, carry out the actions, re-arm the timer. The clock is read in one
//! place (`now`). Every operation runs as its own task under a deadline and reports back as an
//! input, so a slow, failing or hung backend is just another input to the core.

use crate::arbiters::Arbiters;
use crate::codec::MessageCodec;
use crate::traits::*;
use crate::unconfigured::NotConfigured;
use ridondato_core::{Action, Command, Done, Input, Message, Millis, Node, NodeId, Op, OpError, OpId, ResyncPhase, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The outside worlds of one node.
#[derive(Clone)]
pub struct Backends {
    pub vip: Arc<dyn Vip>,
    pub db: Arc<dyn Db>,
    pub mongo: Arc<dyn Mongo>,
    pub fs: Arc<dyn FsSync>,
    pub cloud: Arc<dyn CloudIp>,
    pub services: Arc<dyn Services>,
    pub store: Arc<dyn StateStore>,
    /// The arbiters this node has (ARP probe, witnesses, cloud API, etcd lease), asked only as
    /// the core's configuration says.
    pub arbiters: Arbiters,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends")
    }
}

impl Backends {
    /// Every backend refusing with "not configured": replace the ones the node has.
    pub fn unconfigured() -> Backends {
        let n = Arc::new(NotConfigured);
        Backends {
            vip: n.clone(),
            db: n.clone(),
            mongo: n.clone(),
            fs: n.clone(),
            cloud: n.clone(),
            services: n.clone(),
            store: n,
            arbiters: Arbiters::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Deadline of an ordinary operation; past it the core sees `TimedOut`.
    pub op_deadline: Duration,
    /// Deadline of a copy phase of a resync (DB, Mongo, files): long, they move data.
    pub copy_deadline: Duration,
    /// Deadline of a database catch-up or promotion: they wait for the relay log to be applied
    /// (the adapter's own bound), so they get that bound plus a margin, not `op_deadline`.
    pub db_apply_deadline: Duration,
    /// Deadline of starting or stopping the application's services and of promoting or demoting
    /// MongoDB: the adapters' own bounds (`services.timeout_ms`, `mongo.timeout_ms`) plus a
    /// margin, never less than `op_deadline` (a PBX unit often takes more than 3 s to start).
    pub app_deadline: Duration,
    /// How often the database is asked for its position, replication health and lag.
    pub report_every: Duration,
    /// Whether to ask the database for reports at all (a node without a DB).
    pub db_reports: bool,
    /// Whether to watch the VIP and its link (LAN mode) at the report interval.
    pub vip_watch: bool,
    /// Whether to pass on the file-sync adapter's report at the report interval.
    pub fs_reports: bool,
    /// Report the cloud adapter's view (public IP, domain check) with each report.
    pub cloud_reports: bool,
    /// Ask the MongoDB member for its report at the report interval.
    pub mongo_reports: bool,
    /// This run of the process (see `Input::Start`): random in the daemon.
    pub run: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            op_deadline: Duration::from_secs(3),
            copy_deadline: Duration::from_secs(6 * 3600),
            db_apply_deadline: Duration::from_secs(3),
            app_deadline: Duration::from_secs(3),
            report_every: Duration::from_millis(250),
            db_reports: true,
            vip_watch: true,
            fs_reports: false,
            cloud_reports: false,
            mongo_reports: false,
            run: 0,
        }
    }
}

/// An operator command with the channel its answer goes to.
#[derive(Debug)]
pub struct CommandRequest {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Counters a running driver exposes (for metrics and tests).
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Datagrams the codec rejected (forged, replayed, malformed).
    pub rejected_datagrams: AtomicU64,
    /// The same, by reason, and their rate-limited log lines.
    pub drops: crate::drop_log::DropLog,
    pub inputs: AtomicU64,
    /// Messages to the peer handed to the transport (heartbeats and the rest of the protocol).
    pub sent: AtomicU64,
    /// Messages from the peer that passed authentication and replay checks.
    pub received: AtomicU64,
}

/// What the daemon, the control channel and the simulator hold of a running driver.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    pub commands: mpsc::Sender<CommandRequest>,
    pub status: watch::Receiver<Option<Status>>,
    pub stats: Arc<DriverStats>,
}

impl DriverHandle {
    /// Sends a command and waits for the node's answer.
    pub async fn command(&self, cmd: Command) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(CommandRequest { cmd, reply }).await.map_err(|_| "the node is not running".to_string())?;
        rx.await.map_err(|_| "the node stopped before answering".to_string())?
    }
}

pub struct Driver {
    node: Node,
    backends: Backends,
    transport: Arc<dyn Transport>,
    codec: Arc<dyn MessageCodec>,
    cfg: DriverConfig,
    commands: mpsc::Receiver<CommandRequest>,
    status: watch::Sender<Option<Status>>,
    stats: Arc<DriverStats>,
    results_tx: mpsc::UnboundedSender<Input>,
    results_rx: mpsc::UnboundedReceiver<Input>,
    tasks: BTreeMap<OpId, AbortHandle>,
    replies: BTreeMap<u64, oneshot::Sender<Result<String, String>>>,
    next_req: u64,
    wake: Option<Millis>,
    start: Instant,
    /// A MongoDB report is being asked for.
    mongo_report_running: Arc<std::sync::atomic::AtomicBool>,
    /// Every input and the digest of the core's answer (B9), when the daemon keeps a journal.
    journal: Option<crate::journal::JournalHandle>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("node", &self.node.id()).finish()
    }
}

impl Driver {
    pub fn new(node: Node, backends: Backends, transport: Arc<dyn Transport>, codec: Arc<dyn MessageCodec>, cfg: DriverConfig) -> (Driver, DriverHandle) {
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(None);
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(DriverStats::default());
        let handle = DriverHandle { commands: cmd_tx, status: status_rx, stats: stats.clone() };
        let d = Driver {
            node,
            backends,
            transport,
            codec,
            cfg,
            commands: cmd_rx,
            status: status_tx,
            stats,
            results_tx,
            results_rx,
            tasks: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_req: 1,
            wake: None,
            start: Instant::now(),
            mongo_report_running: Arc::default(),
            journal: None,
        };
        (d, handle)
    }

    /// Journals every input from the start on (B9).
    pub fn with_journal(mut self, journal: crate::journal::JournalWriter) -> Driver {
        self.journal = Some(crate::journal::JournalHandle::spawn(journal));
        self
    }

    /// The one place the clock is read.
    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    /// Runs until the core asks to exit (after a shutdown command). A state store that cannot
    /// be read stops the start: a node must not act without knowing its epoch.
    pub async fn run(mut self) -> AdapterResult<()> {
        let persisted = self.backends.store.load().await.map_err(|e| AdapterError::new(format!("reading the state store: {e}")))?;
        let run = self.cfg.run;
        if self.feed(Input::Start { persisted, run }).await {
            return Ok(());
        }
        let mut report = tokio::time::interval(self.cfg.report_every);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let transport = self.transport.clone();
        // Carrier changes as the kernel announces them; the report's poll stays as a fallback.
        let mut links = if self.cfg.vip_watch { self.backends.vip.link_events() } else { None };
        loop {
            let sleep_for = self.wake.map_or(Duration::from_secs(3600), |w| Duration::from_millis(w.0.saturating_sub(self.now().0)));
            let input = tokio::select! {
                _ = tokio::time::sleep(sleep_for) => Input::Tick,
                r = transport.recv() => match r {
                    Ok(datagram) => match self.codec.open(&datagram) {
                        Ok(Some(msg)) => {
                            self.stats.received.fetch_add(1, Ordering::Relaxed);
                            Input::Peer(msg)
                        }
                        Ok(None) => continue,
                        Err(why) => {
                            self.stats.rejected_datagrams.fetch_add(1, Ordering::Relaxed);
                            let from = transport.peer().unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                            if let Some(line) = self.stats.drops.note(from, &why, std::time::Instant::now()) {
                                tracing::warn!(node = %self.node.id(), "{line}");
                            }
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(node = %self.node.id(), "transport: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                Some(input) = self.results_rx.recv() => input,
                Some(up) = async { match links.as_mut() { Some(l) => l.recv().await, None => std::future::pending().await } } => {
                    Input::LinkObserved { up }
                }
                Some(req) = self.commands.recv() => {
                    let id = self.next_req;
                    self.next_req += 1;
                    self.replies.insert(id, req.reply);
                    Input::Command { req: id, cmd: req.cmd }
                }
                _ = report.tick(), if self.cfg.db_reports || self.cfg.vip_watch || self.cfg.fs_reports || self.cfg.cloud_reports => {
                    if let Some(line) = transport.peer().and_then(|from| self.stats.drops.flush(from, std::time::Instant::now())) {
                        tracing::warn!(node = %self.node.id(), "{line}");
                    }
                    self.spawn_report();
                    continue;
                }
            };
            if let Input::Done { id, .. } = &input {
                self.tasks.remove(id);
            }
            if self.feed(input).await {
                return Ok(());
            }
        }
    }

    /// Hands one input to the core and carries out its actions; true when it asked to exit.
    async fn feed(&mut self, input: Input) -> bool {
        self.stats.inputs.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let journaled = self.journal.is_some().then(|| input.clone());
        let out = self.node.handle(now, input);
        if let (Some(j), Some(input)) = (self.journal.as_mut(), journaled) {
            j.record(now, &input, &out.actions);
        }
        self.wake = out.next_wakeup;
        let mut exit = false;
        for action in out.actions {
            match action {
                Action::Send(msg) => self.send(&msg).await,
                Action::Run { id, op } => self.spawn_op(id, op),
                Action::Cancel { id } => {
                    if let Some(h) = self.tasks.remove(&id) {
                        h.abort();
                        let _ = self.results_tx.send(Input::Done { id, result: Err(OpError::Cancelled) });
                    }
                }
                Action::Event(e) => tracing::info!(node = %self.node.id(), "{e}"),
                Action::Reply { req, result } => {
                    if let Some(tx) = self.replies.remove(&req) {
                        let _ = tx.send(result);
                    }
                }
                Action::Exit => exit = true,
            }
        }
        self.status.send_replace(Some(self.node.status()));
        exit
    }

    async fn send(&self, msg: &Message) {
        let datagram = self.codec.seal(msg);
        // A heartbeat that cannot leave within a heartbeat's time is as good as lost.
        match tokio::time::timeout(Duration::from_millis(50), self.transport.send(&datagram)).await {
            Ok(Ok(())) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::debug!(node = %self.node.id(), "send: {e}"),
            Err(_) => tracing::debug!(node = %self.node.id(), "send timed out"),
        }
    }

    fn spawn_report(&self) {
        let db = self.backends.db.clone();
        let vip = self.backends.vip.clone();
        let (want_db, want_vip) = (self.cfg.db_reports, self.cfg.vip_watch);
        let db_deadline = self.cfg.report_every.max(Duration::from_millis(500)) * 4;
        let tx = self.results_tx.clone();
        if self.cfg.fs_reports {
            if let Some(r) = self.backends.fs.report() {
                let _ = tx.send(Input::FsReport(r));
            }
        }
        if self.cfg.cloud_reports {
            if let Some(r) = self.backends.cloud.report() {
                let _ = tx.send(Input::CloudReport(r));
            }
        }
        if self.cfg.mongo_reports && !self.mongo_report_running.swap(true, Ordering::SeqCst) {
            // One at a time: a slow member must not pile up requests.
            let (mongo, tx, running) = (self.backends.mongo.clone(), tx.clone(), self.mongo_report_running.clone());
            tokio::spawn(async move {
                // A member that does not answer is reported as such: the promotion policy
                // must not go on trusting its last good report.
                let r = match tokio::time::timeout(Duration::from_secs(2), mongo.report()).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Some(unreachable_member(e.0)),
                    Err(_) => Some(unreachable_member("no answer within 2 s".into())),
                };
                if let Some(r) = r {
                    let _ = tx.send(Input::MongoReport(r));
                }
                running.store(false, Ordering::SeqCst);
            });
        }
        tokio::spawn(async move {
            if want_vip {
                if let Err(e) = vip.renew().await {
                    tracing::warn!("renewing the VIP's lease: {e}");
                }
                if let Ok(up) = vip.link_up().await {
                    let _ = tx.send(Input::LinkObserved { up });
                }
                if let Ok(held) = vip.held().await {
                    let _ = tx.send(Input::VipObserved { held });
                }
            }
            if !want_db {
                return;
            }
            // A report that fails is a fact too (the database is down or unreachable): the core
            // must never go on showing, or deciding on, the last good values.
            match tokio::time::timeout(db_deadline, db.report()).await {
                Ok(Ok(r)) => {
                    let _ = tx.send(Input::DbReport(r.facts));
                    if let Some((count, gtids)) = r.errant {
                        let _ = tx.send(Input::DbErrant { count, gtids });
                    }
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Input::DbUnreachable { error: e.0 });
                }
                Err(_) => {
                    let _ = tx.send(Input::DbUnreachable { error: format!("no answer within {} ms", db_deadline.as_millis()) });
                }
            }
        });
    }

    fn spawn_op(&mut self, id: OpId, op: Op) {
        let long = matches!(op, Op::Resync { phase, .. } if phase != ResyncPhase::DbReplicate);
        let deadline = match op {
            _ if long => self.cfg.copy_deadline,
            Op::CatchUpDb { .. } | Op::PromoteDb { .. } => self.cfg.db_apply_deadline.max(self.cfg.op_deadline),
            Op::StartServices | Op::StopServices | Op::PromoteMongo | Op::DemoteMongo => self.cfg.app_deadline.max(self.cfg.op_deadline),
            _ => self.cfg.op_deadline,
        };
        let b = self.backends.clone();
        let tx = self.results_tx.clone();
        let (me, peer) = (self.node.config().node, self.node.config().peer);
        let name = op.name();
        let h = tokio::spawn(async move {
            let result = match tokio::time::timeout(deadline, execute(&b, op, (me, peer), &tx)).await {
                Ok(Ok(done)) => Ok(done),
                Ok(Err(e)) => Err(OpError::Failed(e.0)),
                Err(_) => Err(OpError::TimedOut),
            };
            if let Err(e) = &result {
                tracing::warn!("{name}: {e}");
            }
            let _ = tx.send(Input::Done { id, result });
        });
        self.tasks.insert(id, h.abort_handle());
    }
}

/// One operation on the backend it belongs to.
async fn execute(b: &Backends, op: Op, (me, peer): (NodeId, NodeId), tx: &mpsc::UnboundedSender<Input>) -> AdapterResult<Done> {
    let ok = |r: AdapterResult<()>| r.map(|()| Done::Ok);
    match op {
        Op::Persist(s) => ok(b.store.save(&s).await),
        Op::RaiseVip => ok(b.vip.raise().await),
        Op::DropVip => ok(b.vip.drop_vip().await),
        Op::Garp => ok(b.vip.garp().await),
        Op::MayTake { arbiter, epoch } => b.arbiters.get(arbiter)?.may_take(me, epoch).await.map(Done::Verdict),
        Op::MayKeep { arbiter, epoch } => b.arbiters.get(arbiter)?.may_keep(me, epoch).await.map(Done::Verdict),
        Op::Release { arbiter } => ok(b.arbiters.get(arbiter)?.release().await),
        Op::CatchUpDb { position } => ok(b.db.catch_up(position).await),
        Op::PromoteDb { wait_for } => ok(b.db.promote(wait_for).await),
        Op::FenceDb => b.db.fence().await.map(|position| Done::Fenced { position }),
        Op::ReplicateDb { from } => ok(b.db.replicate_from(from).await),
        Op::PromoteMongo => ok(b.mongo.promote().await),
        Op::DemoteMongo => ok(b.mongo.demote().await),
        Op::FsPushStart { to } => ok(b.fs.push_start(to).await),
        Op::FsPushStop => ok(b.fs.push_stop().await),
        Op::MoveCloudIp { to } => ok(b.cloud.associate(to).await),
        Op::StartServices => ok(b.services.start().await),
        Op::StopServices => ok(b.services.stop().await),
        Op::Resync { job, phase } => {
            let tx = tx.clone();
            let progress: ProgressFn = Arc::new(move |progress| {
                let _ = tx.send(Input::JobProgress { job, progress });
            });
            ok(match phase {
                ResyncPhase::DbCopy => b.db.copy_from_peer(peer, progress).await,
                ResyncPhase::DbReplicate => b.db.replicate_from(peer).await,
                ResyncPhase::MongoCopy => b.mongo.resync(progress).await,
                ResyncPhase::FsCopy => b.fs.resync_from(peer, progress).await,
            })
        }
    }
}

fn unreachable_member(error: String) -> ridondato_core::MongoReport {
    ridondato_core::MongoReport { state: "UNREACHABLE".into(), error: Some(error), ..Default::default() }
}
