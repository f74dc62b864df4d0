//! inotify over one synced directory tree, on tokio. Our own rather than `notify`'s because two
//! failures must be seen, not swallowed: a queue overflow (events lost) and a watch that could not
//! be added (the user's watch limit reached), which `notify` drops for new subdirectories.
//! Either one means individual paths are no longer complete, so the caller owes a full pass.

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;

/// What one read of the inotify queue says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `rel` (relative to the root) changed; `subtree`: a directory appeared, list all of it.
    Path { rel: PathBuf, subtree: bool },
    /// The kernel queue overflowed: events were lost.
    Overflow,
    /// A directory could not be watched (watch limit), or the synced directory's own watch is
    /// gone: changes would go unseen.
    WatchLimit(String),
}

#[derive(Debug)]
pub struct TreeWatcher {
    fd: AsyncFd<Inotify>,
    root: PathBuf,
    /// Each watched directory, relative to the root ("" is the root).
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVE_SELF
        | WatchMask::DELETE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

impl TreeWatcher {
    /// Watches every directory under `root` now (the inotify instance, and so its queue size, is
    /// fixed here). A watch limit reached already is reported in the returned changes. What
    /// failed pushes left here while this node was a Slave (`PARTIAL_DIR`) is removed on the way:
    /// this node's tree is now the one that counts, and those pieces belong to no file of it.
    pub fn new(root: &Path) -> std::io::Result<(TreeWatcher, Vec<Change>)> {
        let inotify = Inotify::init()?;
        // `AsyncFd::new` is deprecated because it cannot check that its value owns a descriptor
        // that stays put; an `Inotify` does own its (non-blocking) descriptor for its whole life.
        #[allow(deprecated)]
        let fd = AsyncFd::new(inotify)?;
        let mut w = TreeWatcher { fd, root: root.to_path_buf(), dirs: HashMap::new() };
        let mut out = Vec::new();
        w.add_tree(Path::new(""), &mut out, true)?;
        Ok((w, out))
    }

    /// Adds watches on `rel` and every directory below it (symlinks not followed); `sweep`:
    /// removes the `PARTIAL_DIR` directories found.
    fn add_tree(&mut self, rel: &Path, out: &mut Vec<Change>, sweep: bool) -> std::io::Result<()> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(d) = stack.pop() {
            let abs = self.root.join(&d);
            match self.fd.get_mut().add_watch(&abs, mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, d.clone());
                }
                Err(e) if e.raw_os_error() == Some(28) => {
                    // ENOSPC: out of watches; the rest of this subtree stays unwatched.
                    out.push(Change::WatchLimit(format!("inotify watch limit reached at {} (raise fs.inotify.max_user_watches)", abs.display())));
                    return Ok(());
                }
                // Gone meanwhile, or not a directory any more: its parent's event covers it.
                Err(e) if !d.as_os_str().is_empty() => {
                    tracing::debug!("watching {}: {e}", abs.display());
                    continue;
                }
                Err(e) => return Err(std::io::Error::new(e.kind(), format!("watching {}: {e}", abs.display()))),
            }
            let Ok(entries) = std::fs::read_dir(&abs) else { continue };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if sweep && e.file_name() == super::rsync::PARTIAL_DIR {
                    match std::fs::remove_dir_all(e.path()) {
                        Ok(()) => tracing::info!("file sync: removed {}, left by a failed push to this node", e.path().display()),
                        Err(err) => tracing::warn!("file sync: could not remove {}: {err}", e.path().display()),
                    }
                    continue;
                }
                stack.push(d.join(e.file_name()));
            }
        }
        Ok(())
    }

    /// Waits for the next events and returns them.
    pub async fn next(&mut self) -> std::io::Result<Vec<Change>> {
        let mut buf = [0u8; 64 * 1024];
        let raw: Vec<(WatchDescriptor, EventMask, Option<OsString>)> = loop {
            let mut guard = self.fd.readable_mut().await?;
            // `read_events` answers an empty queue with no events rather than WouldBlock; say
            // WouldBlock so tokio clears the readiness, or this loop would spin.
            let read = guard.try_io(|fd| {
                let evs: Vec<_> = fd.get_mut().read_events(&mut buf)?.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_os_string()))).collect();
                if evs.is_empty() {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(evs)
            });
            match read {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        let mut out = Vec::new();
        for (wd, mask, name) in raw {
            if mask.contains(EventMask::Q_OVERFLOW) {
                out.push(Change::Overflow);
                continue;
            }
            if mask.contains(EventMask::IGNORED) {
                self.dirs.remove(&wd);
                continue;
            }
            if mask.intersects(EventMask::MOVE_SELF | EventMask::DELETE_SELF) {
                // The synced directory itself moved away or removed: what is at its path now is
                // not watched, so say so (periodic full passes) rather than go quietly blind.
                // (A subdirectory's own move is seen, by path, in its parent's events.)
                if self.dirs.get(&wd).is_some_and(|d| d.as_os_str().is_empty()) {
                    out.push(Change::WatchLimit(format!("{} was moved or removed: its inotify watch is lost", self.root.display())));
                }
                continue;
            }
            let Some(dir) = self.dirs.get(&wd).cloned() else { continue };
            let rel = match name {
                Some(n) => dir.join(n),
                None => dir,
            };
            let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) && mask.contains(EventMask::ISDIR);
            if appeared {
                // A directory made or moved in: watch it (a moved one keeps its watches, which
                // now answer to the new path) and list all of it.
                self.add_tree(&rel, &mut out, false)?;
            }
            out.push(Change::Path { rel, subtree: appeared });
        }
        Ok(out)
    }
}
