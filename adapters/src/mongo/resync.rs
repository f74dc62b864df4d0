//! The Mongo resync job (S11 "Mongo", and part of "All"): rebuild this member from the primary
//! by MongoDB's own initial sync. The member is stopped through its unit or hooks, its data
//! directory is moved aside (kept, never deleted: it may hold the only copy of something), the
//! member is started empty and clones from the primary; progress comes from
//! `replSetGetStatus`'s `initialSyncStatus` (bytes copied of the approximate total).

use super::MongoMember;
use crate::services_cmd::CommandServices;
use crate::traits::{AdapterError, AdapterResult, ProgressFn, Services};
use mongodb::bson::{doc, Document};
use ridondato_core::Progress;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a resync needs besides the connection: how to stop and start the member, where its
/// data lives, how long the copy may take.
#[derive(Clone, Debug)]
pub struct ResyncSetup {
    pub control: CommandServices,
    pub data_dir: PathBuf,
    pub within: Duration,
}

fn err(msg: impl Into<String>) -> AdapterError {
    AdapterError::new(format!("mongo resync: {}", msg.into()))
}

/// Moves every entry of `dir` into a new sibling directory named for the time, and returns it.
fn move_aside(dir: &Path) -> AdapterResult<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let name = dir.file_name().ok_or_else(|| err(format!("{}: not a data directory", dir.display())))?;
    let saved = dir.with_file_name(format!("{}.before-resync-{stamp}", name.to_string_lossy()));
    std::fs::create_dir(&saved).map_err(|e| err(format!("{}: {e}", saved.display())))?;
    let entries = std::fs::read_dir(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| err(format!("{}: {e}", dir.display())))?;
        std::fs::rename(entry.path(), saved.join(entry.file_name())).map_err(|e| err(format!("moving {} aside: {e}", entry.path().display())))?;
    }
    Ok(saved)
}

impl MongoMember {
    /// The peer's member is the primary and healthy: the only source a resync may copy from.
    async fn source_ready(&self) -> AdapterResult<()> {
        let s = self.status().await?;
        let peer = Self::member(&s, &self.cfg.peer).ok_or_else(|| err(format!("{} is not in the replica set", self.cfg.peer)))?;
        if peer.get_i32("state") != Ok(1) {
            return Err(err(format!("{} is not the primary ({}): nothing was touched", self.cfg.peer, peer.get_str("stateStr").unwrap_or("?"))));
        }
        Ok(())
    }

    pub(crate) async fn run_resync(&self, setup: &ResyncSetup, progress: ProgressFn) -> AdapterResult<()> {
        self.source_ready().await?;
        if self.writable().await {
            return Err(err("this member is the primary: a resync runs on the Slave only"));
        }
        setup.control.stop().await.map_err(|e| err(format!("stopping the member: {}", e.0)))?;
        let saved = move_aside(&setup.data_dir)?;
        tracing::info!("mongo resync: this member's data moved to {}", saved.display());
        setup.control.start().await.map_err(|e| err(format!("starting the member: {}", e.0)))?;
        let started = Instant::now();
        let mut seen_sync = false;
        loop {
            if started.elapsed() > setup.within {
                return Err(err(format!("not a secondary within {} s; the old data is in {}", setup.within.as_secs(), saved.display())));
            }
            let status = self.admin(doc! { "replSetGetStatus": 1, "initialSync": 1 }).await.ok();
            if let Some(s) = &status {
                if let Some((done, total)) = copied(s) {
                    seen_sync = true;
                    progress(Progress::of(done, total));
                }
                match s.get_i32("myState") {
                    Ok(2) if seen_sync || started.elapsed() > Duration::from_secs(2) => {
                        let total = s.get_document("initialSyncStatus").ok().and_then(|i| i.get_i64("approxTotalDataSize").ok()).unwrap_or(0).max(0) as u64;
                        progress(Progress::of(total, total));
                        tracing::info!("mongo resync: a replicating secondary again after {} ms", started.elapsed().as_millis());
                        return Ok(());
                    }
                    Ok(3) => return Err(err(format!("the initial sync failed (RECOVERING); the old data is in {}", saved.display()))),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// (bytes copied, approximate total) from `initialSyncStatus`, while there is one.
fn copied(s: &Document) -> Option<(u64, u64)> {
    let i = s.get_document("initialSyncStatus").ok()?;
    let n = |k: &str| i.get_i64(k).ok().or_else(|| i.get_i32(k).ok().map(i64::from)).map(|v| v.max(0) as u64);
    Some((n("approxTotalBytesCopied")?, n("approxTotalDataSize")?))
}
