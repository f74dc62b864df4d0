//! What changed since the last transfer, per synced directory: the paths inotify named (relative
//! to the directory), or "everything" after an overflow, a watch error or a batch too large to
//! list. Pure bookkeeping, tested without inotify.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One directory's pending changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Relative path -> whether it is a directory to send as a whole, with deletions inside (it
    /// appeared by creation or rename: files made in it before its watch existed raised no
    /// event, and one made again at a path may differ from what the replica holds there).
    pub paths: BTreeMap<PathBuf, bool>,
    /// A full pass over the directory is owed (overflow, watch error, too many paths).
    pub full: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        !self.full && self.paths.is_empty()
    }

    /// What it counts for in the backlog: its paths, and one for an owed full pass.
    pub fn size(&self) -> u64 {
        self.paths.len() as u64 + u64::from(self.full)
    }

    /// Records a path relative to the synced directory; the directory itself ("") changing (its
    /// mode, its mtime) is a one-entry transfer of ".".
    pub fn add(&mut self, rel: &Path, subtree: bool, cap: usize) {
        if self.full {
            return;
        }
        let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() };
        let e = self.paths.entry(rel).or_insert(false);
        *e |= subtree;
        if self.paths.len() > cap {
            self.overflow();
        }
    }

    /// Individual paths can no longer be trusted to be complete: pass over everything.
    pub fn overflow(&mut self) {
        self.full = true;
        self.paths.clear();
    }

    /// Puts back what a failed transfer took, merged with what arrived meanwhile.
    pub fn restore(&mut self, taken: Pending, cap: usize) {
        if taken.full {
            self.overflow();
            return;
        }
        for (p, sub) in taken.paths {
            if self.full {
                return;
            }
            *self.paths.entry(p).or_insert(false) |= sub;
            if self.paths.len() > cap {
                self.overflow();
            }
        }
    }
}

/// The `--files-from` list for `pending`, NUL-separated: each path and its parents (so their
/// modes and mtimes follow), excluded paths left out. A directory marked as new goes as itself;
/// its contents follow in a transfer of their own. `is_dir` says what each path is now.
pub fn file_list(pending: &Pending, excludes: &[String], is_dir: impl Fn(&Path) -> bool) -> Vec<u8> {
    let mut names: std::collections::BTreeSet<&Path> = std::collections::BTreeSet::new();
    for rel in pending.paths.keys() {
        names.extend(rel.ancestors().filter(|a| !a.as_os_str().is_empty()));
    }
    let mut out = Vec::new();
    for n in names {
        use std::os::unix::ffi::OsStrExt;
        if super::exclude::excluded(n, is_dir(n), excludes) {
            continue;
        }
        out.extend_from_slice(n.as_os_str().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_merged_and_capped() {
        let mut p = Pending::default();
        p.add(Path::new("a/b"), false, 3);
        p.add(Path::new("a/b"), true, 3);
        p.add(Path::new(""), false, 3);
        assert_eq!(p.paths.len(), 2);
        assert_eq!(p.paths.get(Path::new("a/b")), Some(&true));
        assert_eq!(p.paths.get(Path::new(".")), Some(&false));
        p.add(Path::new("c"), false, 3);
        assert!(!p.full);
        p.add(Path::new("d"), false, 3);
        assert!(p.full && p.paths.is_empty(), "over the cap: a full pass instead");
        p.add(Path::new("e"), false, 3);
        assert!(p.paths.is_empty());
    }

    #[test]
    fn a_failed_transfer_is_put_back() {
        let mut taken = Pending::default();
        taken.add(Path::new("x"), false, 10);
        let mut now = Pending::default();
        now.add(Path::new("y"), true, 10);
        now.restore(taken.clone(), 10);
        assert_eq!(now.paths.len(), 2);
        now.restore(Pending { full: true, ..Pending::default() }, 10);
        assert!(now.full);
    }

    #[test]
    fn the_list_carries_parents_but_not_exclusions() {
        let mut p = Pending::default();
        p.add(Path::new("new/deep"), true, 10);
        p.add(Path::new("old/gone"), false, 10);
        p.add(Path::new("old/gone.tmp"), false, 10);
        let list = file_list(&p, &["*.tmp".to_string()], |_| false);
        let names: Vec<String> = list.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        assert_eq!(names, ["new", "new/deep", "old", "old/gone"]);
    }
}
