//! Real-time file sync (feature `fs-sync`): inotify (through `notify`) watches the configured
//! directories on the Master; changes, batched for `batch`, trigger rsync to the Slave's rsync
//! daemon with `--delay-updates`, so partial files never appear under their final name. The
//! direction follows the roles: only a node told to push (`push_start`) pushes.
//!
//! Not yet: a cap that holds in every 1-second window (rsync's `--bwlimit` is an average, shared
//! here by giving each transfer the whole budget one at a time), per-file transfers
//! (`--files-from`) instead of a pass over the directory, and the lsyncd benchmark.

pub mod daemon;

use crate::traits::{AdapterError, AdapterResult, FsSync, ProgressFn};
use async_trait::async_trait;
use daemon::{module, write_private, RSYNC_USER};
use notify::Watcher;
use ridondato_core::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FsSyncConfig {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// The rsync daemon of each node.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// KB/s for all file traffic (S7); transfers run one at a time, each with the whole budget.
    pub bandwidth_kbps: u64,
    pub secret: String,
    /// How long changes are gathered before a transfer (≤ 100 ms).
    pub batch: Duration,
    /// Where the password file lives.
    pub work_dir: PathBuf,
}

#[derive(Debug)]
pub struct RsyncFsSync {
    cfg: FsSyncConfig,
    pusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One transfer at a time: the bandwidth budget is not split.
    lane: tokio::sync::Mutex<()>,
}

impl RsyncFsSync {
    pub fn new(cfg: FsSyncConfig) -> AdapterResult<RsyncFsSync> {
        for (i, p) in cfg.paths.iter().enumerate() {
            if !p.is_dir() {
                return Err(AdapterError::new(format!("fs.paths[{i}]: {} is not a directory", p.display())));
            }
        }
        if cfg.bandwidth_kbps == 0 {
            return Err(AdapterError::new("the replication bandwidth must be above 0 KB/s"));
        }
        std::fs::create_dir_all(&cfg.work_dir).map_err(|e| AdapterError::new(format!("{}: {e}", cfg.work_dir.display())))?;
        write_private(&cfg.work_dir.join("rsync.password"), &format!("{}\n", cfg.secret)).map_err(|e| AdapterError::new(format!("password file: {e}")))?;
        Ok(RsyncFsSync { cfg, pusher: Mutex::new(None), lane: tokio::sync::Mutex::new(()) })
    }

    fn url(&self, peer: NodeId, i: usize) -> AdapterResult<String> {
        let addr = self.cfg.peers.get(&peer).ok_or_else(|| AdapterError::new(format!("no rsync address for {peer}")))?;
        Ok(format!("rsync://{RSYNC_USER}@{}:{}/{}/", addr.ip(), addr.port(), module(i)))
    }

    fn rsync(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("rsync");
        c.args(["-aH", "--delete", "--delay-updates", "--numeric-ids"]);
        c.arg(format!("--bwlimit={}", self.cfg.bandwidth_kbps));
        c.arg(format!("--password-file={}", self.cfg.work_dir.join("rsync.password").display()));
        for x in &self.cfg.excludes {
            c.arg(format!("--exclude={x}"));
        }
        c.kill_on_drop(true).stdin(std::process::Stdio::null());
        c
    }

    /// One pass over directory `i` to the peer.
    async fn push_dir(&self, peer: NodeId, i: usize) -> AdapterResult<()> {
        let _lane = self.lane.lock().await;
        let src = format!("{}/", self.cfg.paths[i].display());
        let out = self.rsync().arg(&src).arg(self.url(peer, i)?).output().await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
        check(&out)
    }
}

fn check(out: &std::process::Output) -> AdapterResult<()> {
    // 24: files vanished during the transfer — the next batch carries them.
    if out.status.success() || out.status.code() == Some(24) {
        return Ok(());
    }
    Err(AdapterError::new(format!("rsync failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
}

#[async_trait]
impl FsSync for std::sync::Arc<RsyncFsSync> {
    async fn push_start(&self, peer: NodeId) -> AdapterResult<()> {
        self.push_stop().await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let mut watchers = Vec::new();
        for (i, p) in self.cfg.paths.iter().enumerate() {
            let tx = tx.clone();
            let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                // Any event (an overflow included) means: pass over this directory again.
                let _ = ev;
                let _ = tx.send(i);
            })
            .map_err(|e| AdapterError::new(format!("watching {}: {e}", p.display())))?;
            w.watch(p, notify::RecursiveMode::Recursive).map_err(|e| AdapterError::new(format!("watching {}: {e}", p.display())))?;
            watchers.push(w);
        }
        let me = self.clone();
        let task = tokio::spawn(async move {
            let _watchers = watchers;
            let mut dirty: std::collections::BTreeSet<usize> = (0..me.cfg.paths.len()).collect();
            loop {
                for i in std::mem::take(&mut dirty) {
                    if let Err(e) = me.push_dir(peer, i).await {
                        tracing::warn!("file sync: {e}");
                        dirty.insert(i);
                    }
                }
                if dirty.is_empty() {
                    match rx.recv().await {
                        Some(i) => {
                            dirty.insert(i);
                        }
                        None => return,
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // Gather what follows within the batch window.
                tokio::time::sleep(me.cfg.batch).await;
                while let Ok(i) = rx.try_recv() {
                    dirty.insert(i);
                }
            }
        });
        *self.pusher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(())
    }

    async fn push_stop(&self) -> AdapterResult<()> {
        if let Some(t) = self.pusher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        Ok(())
    }

    async fn resync_from(&self, peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
        let _lane = self.lane.lock().await;
        let n = self.cfg.paths.len() as u64;
        for (i, p) in self.cfg.paths.iter().enumerate() {
            let mut cmd = self.rsync();
            cmd.args(["--info=progress2", "--no-inc-recursive"]).arg(self.url(peer, i)?).arg(format!("{}/", p.display()));
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
            let mut out = child.stdout.take().ok_or_else(|| AdapterError::new("rsync: no output"))?;
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            // progress2 redraws one line with \r: "  1,234,567  45%  ..."; report percent of the
            // whole job, this directory being the i-th of n.
            loop {
                let k = out.read(&mut buf).await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
                if k == 0 {
                    break;
                }
                for &b in &buf[..k] {
                    if b == b'\r' || b == b'\n' {
                        if let Some(pct) = percent(&line) {
                            progress(i as u64 * 100 + pct, n * 100);
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            let status = child.wait_with_output().await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
            check(&status)?;
            progress((i as u64 + 1) * 100, n * 100);
        }
        Ok(())
    }
}

/// The percentage in an rsync `--info=progress2` line.
fn percent(line: &[u8]) -> Option<u64> {
    let s = String::from_utf8_lossy(line);
    s.split_whitespace().find_map(|w| w.strip_suffix('%')).and_then(|p| p.parse().ok()).map(|p: u64| p.min(100))
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress2_lines_give_their_percentage() {
        assert_eq!(super::percent(b"    1,234,567  45%   10.00MB/s    0:00:01 (xfr#3, to-chk=0/9)"), Some(45));
        assert_eq!(super::percent(b"sending incremental file list"), None);
    }
}
