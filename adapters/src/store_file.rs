//! The crash-safe state store: write a temporary file, fsync it, rename it over the old one,
//! fsync the directory. A crash at any point leaves either the old or the new state, whole.

use crate::traits::{AdapterError, AdapterResult, StateStore};
use async_trait::async_trait;
use ridondato_core::PersistedState;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    /// Stores in `dir/state.json`; the directory is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> AdapterResult<FileStateStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| AdapterError::new(format!("{}: {e}", dir.display())))?;
        Ok(FileStateStore { path: dir.join("state.json") })
    }

    fn save_sync(path: &std::path::Path, state: &PersistedState) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[async_trait]
impl StateStore for FileStateStore {
    async fn load(&self) -> AdapterResult<Option<PersistedState>> {
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AdapterError::new(format!("{}: {e}", self.path.display()))),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AdapterError::new(format!("{}: not a ridondato state file ({e}); refusing to guess the epoch. To recover: stop ridondato on this node, move the file aside (`mv {0} {0}.corrupt`) and start it again: it starts as a new node would, except that a node whose database holds data waits for its peer like a former Slave and takes the epoch from it", self.path.display()))),
        }
    }

    async fn save(&self, state: &PersistedState) -> AdapterResult<()> {
        let (path, state) = (self.path.clone(), state.clone());
        // fsync blocks: keep it off the async workers.
        tokio::task::spawn_blocking(move || FileStateStore::save_sync(&path, &state))
            .await
            .map_err(|e| AdapterError::new(e.to_string()))?
            .map_err(|e| AdapterError::new(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Maintenance, Role};

    #[tokio::test]
    async fn saves_replace_whole_and_a_bad_file_is_an_error_not_a_fresh_start() {
        let dir = std::env::temp_dir().join(format!("ridondato-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = FileStateStore::new(&dir).expect("store");
        assert_eq!(s.load().await.expect("load"), None, "no file: a fresh install");
        let st = PersistedState { epoch: 7, last_role: Some(Role::Master), needs_resync: true, maintenance: Maintenance { on: true, version: 2 }, boots: 3 };
        s.save(&st).await.expect("save");
        s.save(&PersistedState { epoch: 8, ..st.clone() }).await.expect("save");
        assert_eq!(s.load().await.expect("load").map(|p| p.epoch), Some(8));
        assert!(!dir.join("state.json.tmp").exists(), "no temporary left behind");
        std::fs::write(dir.join("state.json"), b"{ half a file").expect("corrupt");
        assert!(s.load().await.expect_err("corrupt").0.contains("refusing to guess"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
