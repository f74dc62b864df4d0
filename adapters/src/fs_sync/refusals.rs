//! What the receiving side says about a push it refused or could not write. rsync sends its
//! receiver's errors to the client only; the daemon's `log file` is the one place this node
//! sees them, one line per message tagged with the child's pid. We read the lines of a child
//! that exited with a failure and keep the reason (the Slave's status and alarm).

use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

/// The last push refused and why; `None` once one landed. Shared with the adapter's report.
pub type Refused = Arc<Mutex<Option<String>>>;

/// How one inetd rsync child ended, as far as the peer's pushes are concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A push landed: any earlier refusal is over.
    Landed,
    /// A push was refused or could not be written: why.
    Refused(String),
    /// Anything else (a resync served, a sender that went away mid-transfer): not this node's
    /// refusal, worth a debug line at most.
    Other(String),
}

/// The exit codes that say the sender or the connection went away, not that this side refused:
/// socket and protocol-stream I/O (10, 12), a signal (20), timeouts (30, 35).
const SENDER_GONE: [i32; 5] = [10, 12, 20, 30, 35];

/// Judges the child `pid` that ended with `status`, from the daemon's log text.
pub fn judge(pid: u32, status: ExitStatus, log: &str) -> Outcome {
    let tag = format!("[{pid}] ");
    let lines: Vec<&str> = log.lines().filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest)).collect();
    let module = lines.iter().find_map(|l| module_of(l));
    let push = module.is_some_and(|m| m.starts_with('p'));
    // 24: files vanished on the sender meanwhile; the Master's next batch deletes them.
    let ok = status.success() || status.code() == Some(24);
    if ok {
        return if push { Outcome::Landed } else { Outcome::Other("served".into()) };
    }
    let why = reason(&lines).unwrap_or_else(|| format!("rsync exited with {status}"));
    // An auth failure names no module as allowed, yet it is a refused push all the same.
    let auth = lines.iter().any(|l| l.starts_with("auth failed"));
    let gone = status.code().is_some_and(|c| SENDER_GONE.contains(&c));
    if (push || auth) && !gone {
        Outcome::Refused(why)
    } else {
        Outcome::Other(why)
    }
}

/// The module a log line names, if it is one of the daemon's own lines about it.
fn module_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("rsync allowed access on module ").or_else(|| line.strip_prefix("auth failed on module "))?;
    rest.split_whitespace().next()
}

/// The lines that say what went wrong, rsync's own wording, the general "rsync error: … (code
/// N)" lines only when nothing more specific was said; `None` if there is none.
fn reason(lines: &[&str]) -> Option<String> {
    const CHATTER: [&str; 7] = ["connect from ", "rsync allowed access", "rsync to ", "rsync on ", "receiving file list", "sent ", "total size"];
    let said: Vec<&str> = lines.iter().copied().filter(|l| !CHATTER.iter().any(|c| l.starts_with(c))).collect();
    let specific: Vec<&str> = said.iter().copied().filter(|l| !l.starts_with("rsync error:")).collect();
    let pick = if specific.is_empty() { said } else { specific };
    let text = pick
        .iter()
        .map(|l| match *l {
            l if l.starts_with("pre-xfer exec returned failure") => "refused: this node pushes its own files (it is, or just was, the Master)",
            l => l.strip_prefix("rsync: ").unwrap_or(l),
        })
        .collect::<Vec<_>>()
        .join("; ");
    (!text.is_empty()).then(|| cut(&text, 400))
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Records a child's outcome: logs a refusal when its reason is new, clears it when a push
/// landed. `paths[i]` names module `p<i>` in the message.
pub fn settle(pid: u32, status: ExitStatus, log: &Path, refused: &Refused, paths: &[std::path::PathBuf]) {
    let text = std::fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let mut last = refused.lock().unwrap_or_else(|p| p.into_inner());
    match judge(pid, status, &text) {
        Outcome::Landed => {
            if last.take().is_some() {
                tracing::info!("file sync: the peer's pushes land here again");
            }
        }
        Outcome::Refused(why) => {
            let into = module_in(&text, pid).and_then(|i| paths.get(i)).map(|p| format!("receiving into {}: ", p.display())).unwrap_or_default();
            let why = format!("{into}{why}");
            if last.as_deref() != Some(why.as_str()) {
                tracing::warn!("file sync: refused a push from the peer: {why}");
            }
            *last = Some(why);
        }
        Outcome::Other(why) => tracing::debug!("rsync daemon: transfer {pid} ended: {why}"),
    }
}

/// The index of the push module child `pid` served.
fn module_in(log: &str, pid: u32) -> Option<usize> {
    let tag = format!("[{pid}] ");
    log.lines().filter_map(|l| l.split_once(&tag).and_then(|(_, r)| module_of(r))).find_map(|m| m.strip_prefix('p')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn code(c: i32) -> ExitStatus {
        ExitStatus::from_raw(c << 8)
    }

    const FULL: &str = "2026/11/26 17:05:47 [27882] connect from localhost (127.0.0.1)
2026/11/26 17:05:47 [27882] rsync allowed access on module p0 from localhost (127.0.0.1)
2026/11/26 17:05:47 [27999] rsync allowed access on module p0 from localhost (127.0.0.1)
2026/11/26 17:05:48 [27882] rsync: [receiver] write failed on \"big\" (in p0): No space left on device (28)
2026/11/26 17:05:48 [27882] rsync error: error in file IO (code 11) at receiver.c(657) [receiver=3.5.0]
2026/11/26 17:05:48 [27999] rsync error: some other child (code 11)
";

    #[test]
    fn a_full_disk_is_a_refusal_in_rsyncs_words_and_only_the_childs_own_lines() {
        assert_eq!(judge(27882, code(11), FULL), Outcome::Refused("[receiver] write failed on \"big\" (in p0): No space left on device (28)".into()));
        assert_eq!(module_in(FULL, 27882), Some(0));
        assert_eq!(judge(27882, code(0), FULL), Outcome::Landed);
    }

    #[test]
    fn a_pushing_node_refusing_and_a_wrong_secret_are_refusals_a_vanished_sender_is_not() {
        let pre = "x [7] rsync allowed access on module p1 from h\nx [7] pre-xfer exec returned failure (256)\nx [7] rsync error: requested action not supported (code 4)\n";
        assert!(matches!(judge(7, code(4), pre), Outcome::Refused(w) if w.contains("pushes its own files")));
        let auth = "x [8] auth failed on module p0 from h (198.18.0.1): password mismatch\n";
        assert!(matches!(judge(8, code(5), auth), Outcome::Refused(w) if w.contains("password mismatch")));
        let gone = "x [9] rsync allowed access on module p0 from h\nx [9] rsync: connection unexpectedly closed (0 bytes received so far) [receiver]\n";
        assert!(matches!(judge(9, code(12), gone), Outcome::Other(_)));
        let pull = "x [6] rsync allowed access on module r0 from h\nx [6] rsync: [sender] some error\n";
        assert!(matches!(judge(6, code(23), pull), Outcome::Other(_)));
        assert_eq!(judge(5, code(11), ""), Outcome::Other("rsync exited with exit status: 11".into()));
    }
}
