//! The rsync invocations: a transfer of listed paths, a full pass, a listing and a pull with
//! progress. All go through the local relay (the cap), never straight to the peer.

use super::changes::{file_list, Pending};
use crate::traits::{AdapterError, AdapterResult};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What every invocation shares: archive mode with hard links and numeric owners, the cluster
/// secret. rsync writes each file to a hidden temporary name beside it and renames it into place
/// when complete (removes it when interrupted, or keeps it in `PARTIAL_DIR` for a push), so a
/// partial file never has the final name.
pub fn base(password_file: &Path, excludes: &[String]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("rsync");
    // No Nagle on our side of the daemon connection either (see `daemon::inetd_child`).
    c.args(["-aH", "--numeric-ids", "--sockopts=TCP_NODELAY"]);
    c.arg(format!("--password-file={}", password_file.display()));
    for x in excludes {
        c.arg(format!("--exclude={x}"));
    }
    c.kill_on_drop(true).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Where the Slave keeps what landed of a file whose push failed (a full disk, a cut link), in
/// the file's own directory: the retry sends only the rest (rsync resumes from it in place), and
/// a partial file never has the final name. rsync itself keeps it out of what it sends and
/// what `--delete` removes.
pub const PARTIAL_DIR: &str = ".ridondato-partial";

/// Above this many new directories in one batch, a full pass instead.
const MAX_SUBTREE_RUNS: usize = 16;

/// Sends what `pending` names from `root` to `url`: listed paths one by one, those gone from
/// here deleted there; then each directory that appeared as a whole, with `--delete` inside it
/// (a directory moved away and made again must not keep its old contents there). A full pass
/// is the whole tree with deletions. `cmd` makes a fresh base command per rsync run.
pub async fn push(cmd: impl Fn() -> tokio::process::Command, root: &Path, url: &str, pending: &Pending, excludes: &[String]) -> AdapterResult<()> {
    let cmd = || {
        let mut c = cmd();
        c.arg(format!("--partial-dir={PARTIAL_DIR}"));
        c
    };
    let src = format!("{}/", root.display());
    let subs = subtrees(pending);
    // Many new directories at once (an unpacked archive): one pass costs less than a run each.
    if pending.full || subs.len() > MAX_SUBTREE_RUNS {
        return run(cmd().arg("--delete").arg(&src).arg(url), None).await;
    }
    // rsync leaves partial-dir entries out of what it sends; our list must not name them either.
    let excludes: Vec<String> = excludes.iter().cloned().chain([format!("{PARTIAL_DIR}/")]).collect();
    let excludes = &excludes[..];
    let list = file_list(pending, excludes, |rel| root.join(rel).is_dir());
    run(cmd().args(["--from0", "--files-from=-", "--delete-missing-args", "--force"]).arg(&src).arg(url), Some(&list)).await?;
    for rel in subs {
        let dir = root.join(&rel);
        // Gone again meanwhile: the list above has deleted it there.
        if dir.is_dir() && !super::exclude::excluded(&rel, true, excludes) {
            run(cmd().arg("--delete").arg(format!("{}/", dir.display())).arg(format!("{url}{}/", rel.display())), None).await?;
        }
    }
    Ok(())
}

/// The outermost of the directories marked as new (one inside another is covered by it).
pub fn subtrees(pending: &Pending) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for (rel, _) in pending.paths.iter().filter(|(_, sub)| **sub) {
        // BTreeMap order puts a parent before its children.
        if !out.iter().any(|o| rel.starts_with(o)) {
            out.push(rel.clone());
        }
    }
    out
}

/// Runs one rsync to its end, `input` on its standard input if given.
async fn run(cmd: &mut tokio::process::Command, input: Option<&[u8]>) -> AdapterResult<()> {
    let e = |e: std::io::Error| AdapterError::new(format!("rsync: {e}"));
    let out = match input {
        None => cmd.output().await.map_err(e)?,
        Some(bytes) => {
            let mut child = cmd.stdin(Stdio::piped()).spawn().map_err(e)?;
            if let Some(mut stdin) = child.stdin.take() {
                // A failure here shows up as rsync's own exit status below.
                let _ = stdin.write_all(bytes).await;
            }
            child.wait_with_output().await.map_err(e)?
        }
    };
    check(out.status, &out.stderr)
}

pub fn check(status: std::process::ExitStatus, stderr: &[u8]) -> AdapterResult<()> {
    // 24: files vanished during the transfer; the events that removed them follow.
    if status.success() || status.code() == Some(24) {
        return Ok(());
    }
    Err(AdapterError::new(format!("rsync failed ({status}): {}", String::from_utf8_lossy(stderr).trim())))
}

/// Whether a push failed because the receiving side refused it or could not write it (rather
/// than a connection or this side's problem): the receiver's file I/O errors, and the refusal
/// of a daemon whose node pushes itself.
pub fn refused_by_receiver(error: &str) -> bool {
    let receiver = error.contains("[receiver") || error.contains("[generator");
    error.contains("(exit status: 4)") || (receiver && (error.contains("(exit status: 11)") || error.contains("(exit status: 23)")))
}

/// Total bytes and entries the peer's tree holds, from `rsync --list-only`.
pub async fn measure(mut cmd: tokio::process::Command, url: &str) -> AdapterResult<(u64, u64)> {
    cmd.args(["--list-only", "-r", "--no-human-readable"]).arg(url).stdout(Stdio::piped());
    let out = cmd.output().await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
    check(out.status, &out.stderr)?;
    let mut bytes = 0u64;
    let mut entries = 0u64;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "-rw-r--r--      1234 2026/11/25 12:00:00 name"
        if let Some(size) = line.split_whitespace().nth(1).and_then(|s| s.replace(',', "").parse::<u64>().ok()) {
            entries += 1;
            if line.starts_with('-') {
                bytes += size;
            }
        }
    }
    Ok((bytes, entries))
}

/// One progress line of `--info=progress2`: percent of the whole transfer, files checked and
/// files in the list ("  1,234,567  45%  10.00MB/s  0:00:01 (xfr#3, to-chk=4/9)").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub percent: u64,
    pub checked: Option<(u64, u64)>,
}

pub fn parse_line(line: &[u8]) -> Option<Line> {
    let s = String::from_utf8_lossy(line);
    let percent = s.split_whitespace().find_map(|w| w.strip_suffix('%')).and_then(|p| p.parse::<u64>().ok())?.min(100);
    let checked = s.split("to-chk=").nth(1).and_then(|rest| {
        let rest = rest.trim_end_matches(')');
        let (left, total) = rest.split_once('/')?;
        let (left, total) = (left.parse::<u64>().ok()?, total.parse::<u64>().ok()?);
        Some((total.saturating_sub(left), total))
    });
    Some(Line { percent, checked })
}

/// A cancelled pull (the future dropped) must not leave the receiving rsync's temporary file in
/// the synced directory, which a SIGKILL would: its process group gets SIGTERM, on which rsync
/// removes it.
struct TermOnDrop(Option<tokio::process::Child>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        // The whole group: the receiving half of a pull is a child of the process we started.
        let term = child.id().and_then(|pid| tokio::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).spawn().ok());
        if term.is_none() {
            let _ = child.start_kill();
        }
        // Dropped without kill_on_drop, tokio reaps it when it exits.
    }
}

/// Pulls `url` into `dst` (deleting what the peer lacks), calling `on_line` per progress line.
pub async fn pull(mut cmd: tokio::process::Command, url: &str, dst: &Path, mut on_line: impl FnMut(Line)) -> AdapterResult<()> {
    cmd.args(["--delete", "--info=progress2", "--no-inc-recursive"]).arg(url).arg(format!("{}/", dst.display())).stdout(Stdio::piped());
    cmd.kill_on_drop(false).process_group(0);
    let mut guard = TermOnDrop(Some(cmd.spawn().map_err(|e| AdapterError::new(format!("rsync: {e}")))?));
    let child = guard.0.as_mut().ok_or_else(|| AdapterError::new("rsync: gone"))?;
    let mut out = child.stdout.take().ok_or_else(|| AdapterError::new("rsync: no output"))?;
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    // progress2 redraws one line with \r.
    loop {
        let k = out.read(&mut buf).await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
        if k == 0 {
            break;
        }
        for &b in &buf[..k] {
            if b == b'\r' || b == b'\n' {
                if let Some(l) = parse_line(&line) {
                    on_line(l);
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    let child = guard.0.take().ok_or_else(|| AdapterError::new("rsync: gone"))?;
    let out = child.wait_with_output().await.map_err(|e| AdapterError::new(format!("rsync: {e}")))?;
    check(out.status, &out.stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress2_lines_give_percent_and_files() {
        let l = parse_line(b"    1,234,567  45%   10.00MB/s    0:00:01 (xfr#3, to-chk=4/9)").expect("a line");
        assert_eq!(l, Line { percent: 45, checked: Some((5, 9)) });
        let l = parse_line(b"          1,024 100%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1000/1001)").expect("a line");
        assert_eq!(l, Line { percent: 100, checked: None });
        assert_eq!(parse_line(b"sending incremental file list"), None);
    }

    #[test]
    fn only_the_outermost_new_directories_get_their_own_transfer() {
        let mut p = Pending::default();
        for (rel, sub) in [("a", true), ("a/b", true), ("ab", true), ("c/file", false), ("c/d", true)] {
            p.add(Path::new(rel), sub, 100);
        }
        assert_eq!(subtrees(&p), [PathBuf::from("a"), PathBuf::from("ab"), PathBuf::from("c/d")]);
    }
}
