//! Real-time file sync (feature `fs-sync`, S7, S11 "FS"). On the Master, inotify watches the
//! configured directories; the changed paths, gathered for `batch`, go to the Slave's rsync
//! daemon with `--files-from` (deletions with `--delete-missing-args`), or as a full pass when
//! individual paths cannot be trusted (start, queue overflow, watch limit, a batch over
//! `max_batch`). rsync's temporary names keep partial files out of their final names. All rsync
//! traffic, pushes and resync pulls alike, goes through one local relay that holds the cap in
//! every second (`shaper`). Only a node told to push pushes, and a node pushing refuses pushes.

pub mod changes;
pub mod daemon;
pub mod exclude;
mod peer_uid;
pub mod refusals;
pub mod rsync;
pub mod shaper;
pub mod testkit;
pub mod watcher;

use crate::traits::{AdapterError, AdapterResult, FsSync, ProgressFn};
use async_trait::async_trait;
use changes::Pending;
use daemon::{pull_module, push_module, write_private, RsyncDaemon, RSYNC_USER};
use ridondato_core::{FsReport, NodeId, Progress};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use watcher::{Change, TreeWatcher};

#[derive(Clone, Debug)]
pub struct FsSyncConfig {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// The rsync daemon of each other node.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Where this node's own rsync daemon listens (its management IP); `None`: no daemon.
    pub listen: Option<SocketAddr>,
    /// KiB/s (rsync's unit) for all file traffic, both directions, real-time and resync (S7).
    pub bandwidth_kib_s: u64,
    pub secret: String,
    /// The longest changes are gathered before a transfer (≤ 100 ms): under a steady stream of
    /// changes, one transfer at least this often.
    pub batch: Duration,
    /// A transfer starts once no change has come for this long (the burst of events one write
    /// makes is over), or at `batch`: an idle tree sends at once, a busy one gathers.
    pub settle: Duration,
    /// More changed paths than this in one batch: a full pass instead of a list.
    pub max_batch: usize,
    /// While inotify is short of watches, how often a full pass finds what it cannot see.
    pub rescan_every: Duration,
    /// After this long without a transfer, a full pass anyway: it repairs what no event names,
    /// such as a returning node's stale files once it has become the Slave.
    pub verify_every: Duration,
    /// Password file, rsync daemon configuration, the "pushing" flag.
    pub work_dir: PathBuf,
}

impl FsSyncConfig {
    /// The defaults around the fields every deployment sets.
    pub fn new(paths: Vec<PathBuf>, peers: BTreeMap<NodeId, SocketAddr>, bandwidth_kib_s: u64, secret: String, work_dir: PathBuf) -> FsSyncConfig {
        FsSyncConfig {
            paths,
            excludes: Vec::new(),
            peers,
            listen: None,
            bandwidth_kib_s,
            secret,
            batch: Duration::from_millis(50),
            settle: Duration::from_millis(5),
            max_batch: 20_000,
            rescan_every: Duration::from_secs(10),
            verify_every: Duration::from_secs(300),
            work_dir,
        }
    }
}

/// What the watchers, the transfer loop and the status share.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<Pending>>,
    wake: tokio::sync::Notify,
    /// Full passes that completed.
    passes: AtomicU64,
    overflows: AtomicU64,
    watch_limited: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Changes taken for the transfer under way (or being retried): not on the Slave yet, so
    /// they count in the backlog until the transfer succeeds.
    in_flight: AtomicU64,
    /// What this node's daemon last refused of the peer's pushes (the Slave's side).
    refused: refusals::Refused,
    /// Transfers that failed (each one retried): for tests and benchmarks.
    failures: AtomicU64,
    /// Changes noted so far: the transfer loop waits until it stops moving (`settle`).
    noted: AtomicU64,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, e: Option<String>) {
        if let Some(e) = &e {
            tracing::warn!("file sync: {e}");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn apply(&self, i: usize, changes: Vec<Change>, cap: usize) {
        if changes.is_empty() {
            return;
        }
        self.noted.fetch_add(changes.len() as u64, Ordering::Relaxed);
        let mut pending = self.pending();
        for c in changes {
            match c {
                Change::Path { rel, subtree } => pending[i].add(&rel, subtree, cap),
                Change::Overflow => {
                    self.overflows.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("file sync: inotify queue overflow, passing over the whole directory");
                    pending[i].overflow();
                }
                Change::WatchLimit(msg) => {
                    // Shown by `watch_limited` in the status for as long as it lasts; not an
                    // error that the next good transfer would clear.
                    self.watch_limited.store(true, Ordering::Relaxed);
                    tracing::warn!("file sync: {msg}; changes are found by periodic full passes");
                    pending[i].overflow();
                }
            }
        }
        drop(pending);
        self.wake.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    cfg: FsSyncConfig,
    shaper: Arc<shaper::Shaper>,
    relays: tokio::sync::Mutex<BTreeMap<NodeId, shaper::Relay>>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub struct RsyncFsSync {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _daemon: Option<RsyncDaemon>,
}

impl RsyncFsSync {
    /// Checks the configuration and starts this node's rsync daemon (if `listen` is set).
    pub fn new(cfg: FsSyncConfig) -> AdapterResult<RsyncFsSync> {
        for (i, p) in cfg.paths.iter().enumerate() {
            if !p.is_dir() {
                return Err(AdapterError::new(format!("fs.paths[{i}]: {} is not a directory", p.display())));
            }
        }
        if cfg.bandwidth_kib_s == 0 {
            return Err(AdapterError::new("the replication bandwidth must be above 0 KiB/s"));
        }
        if cfg.secret.is_empty() || cfg.secret.contains(['\n', ':']) {
            return Err(AdapterError::new("the cluster secret for rsync must be one line without ':'"));
        }
        let e = |what: &str, err: std::io::Error| AdapterError::new(format!("{what}: {err}"));
        std::fs::create_dir_all(&cfg.work_dir).map_err(|x| e(&cfg.work_dir.display().to_string(), x))?;
        write_private(&cfg.work_dir.join("rsync.password"), &format!("{}\n", cfg.secret)).map_err(|x| e("password file", x))?;
        let flag = cfg.work_dir.join("pushing");
        // A node starts as neither: it refuses pushes only once it pushes itself.
        let _ = std::fs::remove_file(&flag);
        let shared = Arc::new(Shared { pending: Mutex::new(vec![Pending::default(); cfg.paths.len()]), ..Shared::default() });
        let daemon = match cfg.listen {
            Some(bind) => {
                let allow: Vec<std::net::IpAddr> = cfg.peers.values().map(|a| a.ip()).collect();
                let dir = cfg.work_dir.join("rsyncd");
                Some(RsyncDaemon::start(bind, &allow, &cfg.paths, &cfg.excludes, &cfg.secret, &dir, &flag, shared.refused.clone())?)
            }
            None => None,
        };
        let shaper = shaper::Shaper::new(cfg.bandwidth_kib_s.saturating_mul(1024));
        Ok(RsyncFsSync { inner: Arc::new(Inner { cfg, shaper, relays: Default::default(), shared }), tasks: Mutex::new(Vec::new()), _daemon: daemon })
    }

    /// Bytes through the relay so far (both directions).
    pub fn bytes(&self) -> u64 {
        self.inner.shaper.bytes.load(Ordering::Relaxed)
    }

    /// Transfers that failed so far (each one is retried).
    pub fn failures(&self) -> u64 {
        self.inner.shared.failures.load(Ordering::Relaxed)
    }

    fn stop_tasks(&self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

impl Drop for RsyncFsSync {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Inner {
    fn flag(&self) -> PathBuf {
        self.cfg.work_dir.join("pushing")
    }

    fn command(&self) -> tokio::process::Command {
        rsync::base(&self.cfg.work_dir.join("rsync.password"), &self.cfg.excludes)
    }

    /// `rsync://` address of `module` on `peer`, through the shaping relay.
    async fn url(&self, peer: NodeId, module: &str) -> AdapterResult<String> {
        let mut relays = self.relays.lock().await;
        let local = match relays.get(&peer) {
            Some(r) => r.addr,
            None => {
                let target = *self.cfg.peers.get(&peer).ok_or_else(|| AdapterError::new(format!("fs: no rsync address for {peer}")))?;
                let r = shaper::Relay::start(target, self.shaper.clone()).await.map_err(|e| AdapterError::new(format!("fs relay: {e}")))?;
                let a = r.addr;
                relays.insert(peer, r);
                a
            }
        };
        Ok(format!("rsync://{RSYNC_USER}@{local}/{module}/"))
    }

    /// Gathers changes until none came for `settle`, at most `batch`; after a failure, waits
    /// out the back-off instead.
    async fn gather(&self, backoff: Duration) {
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
            return;
        }
        let started = tokio::time::Instant::now();
        let mut seen = self.shared.noted.load(Ordering::Relaxed);
        loop {
            let left = self.cfg.batch.saturating_sub(started.elapsed());
            tokio::time::sleep(self.cfg.settle.min(left)).await;
            let now = self.shared.noted.load(Ordering::Relaxed);
            if now == seen || started.elapsed() >= self.cfg.batch {
                return;
            }
            seen = now;
        }
    }

    /// The transfer loop of a Master: waits for changes, gathers them (`gather`), sends them.
    async fn push_loop(self: Arc<Self>, peer: NodeId) {
        let s = &self.shared;
        let mut backoff = Duration::ZERO;
        loop {
            let idle = s.pending().iter().all(Pending::is_empty);
            if idle {
                let quiet = if s.watch_limited.load(Ordering::Relaxed) { self.cfg.rescan_every } else { self.cfg.verify_every };
                if tokio::time::timeout(quiet, s.wake.notified()).await.is_err() {
                    s.pending().iter_mut().for_each(Pending::overflow);
                }
            }
            self.gather(backoff).await;
            let taken = {
                // Taken and counted under one lock: the report never sees them in neither place.
                let mut pending = s.pending();
                let taken: Vec<Pending> = pending.iter_mut().map(std::mem::take).collect();
                let flying: u64 = taken.iter().map(Pending::size).sum();
                s.in_flight.store(flying, Ordering::Relaxed);
                taken
            };
            let (mut failed, mut refused) = (false, false);
            for (i, p) in taken.into_iter().enumerate() {
                if p.is_empty() {
                    continue;
                }
                let size = p.size();
                let result = match self.url(peer, &push_module(i)).await {
                    Ok(url) => rsync::push(|| self.command(), &self.cfg.paths[i], &url, &p, &self.cfg.excludes).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        if p.full {
                            s.passes.fetch_add(1, Ordering::Relaxed);
                        }
                        s.in_flight.fetch_sub(size, Ordering::Relaxed);
                        s.error(None);
                    }
                    Err(e) => {
                        let unreachable = self.relays.lock().await.get(&peer).and_then(shaper::Relay::unreachable);
                        s.error(Some(unreachable.unwrap_or_else(|| e.0.clone())));
                        let mut pending = s.pending();
                        pending[i].restore(p, self.cfg.max_batch);
                        s.in_flight.fetch_sub(size, Ordering::Relaxed);
                        drop(pending);
                        s.failures.fetch_add(1, Ordering::Relaxed);
                        failed = true;
                        refused |= rsync::refused_by_receiver(&e.0);
                    }
                }
            }
            backoff = next_backoff(backoff, failed, refused);
        }
    }
}

/// The wait before the next try: none after a success; doubling from 0.5 s to 5 s after a
/// failure; from 2 s to 30 s when the Slave itself refused (a full disk, a read-only target, it
/// pushes too): rsync streams the rest of the file before it hears of the refusal, so each try
/// costs that much of the cap until someone makes room (what landed is kept, `PARTIAL_DIR`).
fn next_backoff(now: Duration, failed: bool, refused: bool) -> Duration {
    match (failed, refused) {
        (false, _) => Duration::ZERO,
        (true, false) => (now * 2).clamp(Duration::from_millis(500), Duration::from_secs(5)),
        (true, true) => (now * 2).clamp(Duration::from_secs(2), Duration::from_secs(30)),
    }
}

/// Cancelling a resync drops its future: the relays' connections go with it, so what the peer
/// had already sent stops there (the pulling rsync itself is stopped by `rsync::pull`).
struct CutOnDrop<'a>(&'a tokio::sync::Mutex<BTreeMap<NodeId, shaper::Relay>>);

impl Drop for CutOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(relays) = self.0.try_lock() {
            relays.values().for_each(shaper::Relay::cut);
        }
    }
}

async fn watch(inner: Arc<Inner>, i: usize, mut w: TreeWatcher) {
    loop {
        match w.next().await {
            Ok(changes) => inner.shared.apply(i, changes, inner.cfg.max_batch),
            Err(e) => {
                // The watch is gone: fall back to periodic full passes rather than go blind.
                inner.shared.apply(i, vec![Change::WatchLimit(format!("inotify on {}: {e}", inner.cfg.paths[i].display()))], inner.cfg.max_batch);
                return;
            }
        }
    }
}

#[async_trait]
impl FsSync for RsyncFsSync {
    async fn push_start(&self, peer: NodeId) -> AdapterResult<()> {
        self.stop_tasks();
        let inner = &self.inner;
        // From now on this node's daemon refuses pushes: a returning node's files never land here,
        // and what it refused as a Slave is over.
        write_private(&inner.flag(), "pushing\n").map_err(|e| AdapterError::new(format!("fs: {e}")))?;
        *inner.shared.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
        inner.shared.watch_limited.store(false, Ordering::Relaxed);
        // Whatever happened while we were not pushing is found by a first full pass.
        inner.shared.pending().iter_mut().for_each(Pending::overflow);
        let mut tasks = Vec::new();
        for (i, p) in inner.cfg.paths.iter().enumerate() {
            let (w, first) = match TreeWatcher::new(p) {
                Ok(x) => x,
                Err(e) => {
                    tasks.iter().for_each(tokio::task::JoinHandle::abort);
                    return Err(AdapterError::new(format!("fs: {e}")));
                }
            };
            inner.shared.apply(i, first, inner.cfg.max_batch);
            tasks.push(tokio::spawn(watch(inner.clone(), i, w)));
        }
        tasks.push(tokio::spawn(inner.clone().push_loop(peer)));
        inner.shared.wake.notify_one();
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(())
    }

    async fn push_stop(&self) -> AdapterResult<()> {
        // Aborting drops a running rsync, which kills it, and cutting the relays drops what it
        // had already handed to them: nothing more leaves this node.
        self.stop_tasks();
        self.inner.relays.lock().await.values().for_each(shaper::Relay::cut);
        self.inner.shared.pending().iter_mut().for_each(|p| *p = Pending::default());
        self.inner.shared.in_flight.store(0, Ordering::Relaxed);
        match std::fs::remove_file(self.inner.flag()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AdapterError::new(format!("fs: {e}"))),
        }
    }

    async fn resync_from(&self, peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
        let inner = &self.inner;
        let _cut = CutOnDrop(&inner.relays);
        // Sizes first, so bytes and files have a true total from the start.
        let mut sizes = Vec::new();
        for i in 0..inner.cfg.paths.len() {
            sizes.push(rsync::measure(inner.command(), &inner.url(peer, &pull_module(i)).await?).await?);
        }
        let total_bytes: u64 = sizes.iter().map(|s| s.0).sum();
        let total_files: u64 = sizes.iter().map(|s| s.1).sum();
        let (mut base_bytes, mut base_files) = (0u64, 0u64);
        let mut last = Progress { done: 0, total: total_bytes, files: Some((0, total_files)) };
        progress(last);
        for (i, dst) in inner.cfg.paths.iter().enumerate() {
            let (bytes, files) = sizes[i];
            let url = inner.url(peer, &pull_module(i)).await?;
            rsync::pull(inner.command(), &url, dst, |l| {
                let done = (base_bytes + bytes * l.percent / 100).min(total_bytes);
                let checked = l.checked.map_or(0, |c| c.0.min(files));
                let next = Progress {
                    done: done.max(last.done),
                    total: total_bytes,
                    files: Some(((base_files + checked).max(last.files.map_or(0, |f| f.0)), total_files)),
                };
                if next != last {
                    last = next;
                    progress(next);
                }
            })
            .await?;
            base_bytes += bytes;
            base_files += files;
        }
        progress(Progress { done: total_bytes, total: total_bytes, files: Some((total_files, total_files)) });
        Ok(())
    }

    fn report(&self) -> Option<FsReport> {
        let s = &self.inner.shared;
        let backlog = {
            let pending = s.pending();
            pending.iter().map(Pending::size).sum::<u64>() + s.in_flight.load(Ordering::Relaxed)
        };
        Some(FsReport {
            backlog,
            rescans: s.passes.load(Ordering::Relaxed),
            overflows: s.overflows.load(Ordering::Relaxed),
            watch_limited: s.watch_limited.load(Ordering::Relaxed),
            bytes: self.bytes(),
            last_error: s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            refused: s.refused.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}
