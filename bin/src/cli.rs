//! Operator commands against a running node (S14, S15): status, set-state, switchover,
//! maintenance, resync with a progress bar.

use crate::client::{Failure, Node};
use ridondato_core::{Command, JobState, ResyncKind, Status};
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/ridondato/control.sock";

/// `status`: the two-node table and this node's details, or `--json`.
pub fn status(node: &Node, json: bool) -> Result<(), Failure> {
    let (s, dropped) = node.status()?;
    if json {
        let mut v = serde_json::to_value(&s).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.insert("dropped_datagrams".into(), serde_json::json!(dropped));
        }
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?);
    } else {
        print!("{}", render_status(&s));
        if !dropped.is_empty() {
            let parts: Vec<String> = dropped.iter().map(|(why, n)| format!("{n} {why}")).collect();
            println!("dropped datagrams since start: {}", parts.join(", "));
        }
    }
    Ok(())
}

/// Bytes for a person: B, KiB, MiB or GiB.
fn size(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..0x10_0000 => format!("{:.1} KiB", b as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", b as f64 / 1048576.0),
        _ => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

/// The two nodes side by side as this node sees them (the peer as last heard), then this
/// node's details. Two fixed columns need no table crate.
fn table(s: &Status) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let role = format!("{}{}", s.role, s.transition.as_ref().map(|t| format!(" ({t})")).unwrap_or_default());
    let peer_role = match (s.peer.role, s.peer.alive) {
        (None, _) => "never heard".to_string(),
        (Some(r), true) => r.to_string(),
        (Some(r), false) => format!("unreachable (was {r})"),
    };
    let heard = s.peer.silent_for_ms.map_or("-".to_string(), |ms| format!("{ms} ms ago"));
    let rows = [
        ("", format!("node {} (this)", s.node.0), format!("node {} (peer)", s.peer.id.0)),
        ("role", role, peer_role),
        ("epoch", s.epoch.to_string(), s.peer.epoch.to_string()),
        ("last heard", "-".into(), heard),
        ("db position", s.db_position.0.to_string(), s.peer.position.0.to_string()),
        ("semi-sync", yes(s.semi_sync_active), yes(s.peer.semi_sync)),
        ("node IP held", yes(s.vip_held), "-".into()),
        ("services", yes(s.services_running), "-".into()),
        ("file sync pushing", yes(s.fs_pushing), "-".into()),
    ];
    let w = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).max(16);
    rows.iter().map(|(k, a, b)| format!("{k:<18} {a:<w$}  {b}\n")).collect()
}

pub fn render_status(s: &Status) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = table(s);
    // A node without a database reports nothing about one: no line for it.
    let db_seen = s.db_writable || s.db_replicating || s.db_position.0 > 0 || s.db_lag_ms.is_some() || s.db_error.is_some();
    if db_seen {
        let stale = if s.db_error.is_some() { " (last known)" } else { "" };
        out += &format!(
            "db {} at {}{stale}  replication {}  lag {}{}  semi-sync {}  replicas {}\n",
            if s.db_writable { "read-write" } else { "read-only" },
            s.db_position.0,
            s.db_replication.as_str(),
            s.db_lag_ms.map_or("-".into(), |l| format!("{l} ms")),
            s.db_lag_tx.map_or(String::new(), |n| format!(" / {n} transactions")),
            yes(s.semi_sync_active),
            s.db_replicas,
        );
        if let Some(e) = &s.db_error {
            out += &format!("db error: {e}\n");
        }
    }
    if let Some(m) = &s.mongo {
        let stale = if m.error.is_some() { " (last known)" } else { "" };
        out += &format!(
            "mongo {}  optime {}/{}.{}{stale}  lag {}  rollbacks {}\n",
            m.state,
            m.optime.0,
            m.optime.1,
            m.optime.2,
            m.lag_ms.map_or("-".into(), |l| format!("{l} ms")),
            m.rollbacks
        );
        if let Some(e) = &m.error {
            out += &format!("mongo error: {e}\n");
        }
    }
    // The policy covers the database and MongoDB alike.
    if let Some(b) = &s.promotion_blocker {
        out += &format!("not promotable: {b}\n");
    }
    if let Some(fs) = &s.fs {
        out += &format!("fs backlog {}  full passes {}  queue overflows {}  traffic {}\n", fs.backlog, fs.rescans, fs.overflows, size(fs.bytes));
        if fs.watch_limited {
            out += "fs: inotify cannot see every change (watch limit reached, or a synced directory replaced): periodic full passes; raise fs.inotify.max_user_watches or restart\n";
        }
        if let Some(e) = &fs.last_error {
            out += &format!("fs error: {}\n", e.lines().next().unwrap_or_default());
        }
        if let Some(r) = &fs.refused {
            out += &format!("fs: the peer's last push was refused here: {}\n", r.lines().next().unwrap_or_default());
        }
    }
    if s.maintenance.on {
        out += "maintenance ON: automatic failover paused\n";
    }
    if let Some(j) = &s.job {
        out += &format!(
            "resync {} job {}: {:?} phase {} ({}/{}) {}%\n",
            j.kind.as_str(),
            j.id,
            j.state,
            j.phase.as_str(),
            j.phase_index + 1,
            j.phases,
            j.percent()
        );
        if let Some((done, total)) = j.files {
            out += &format!("  files {done}/{total}  {} of {}\n", size(j.done), size(j.total));
        }
    }
    for a in &s.alarms {
        out += &format!("alarm: {a}\n");
    }
    out
}

/// Sends one command and prints the node's answer.
pub fn command(node: &Node, cmd: Command) -> Result<(), Failure> {
    println!("{}", node.command(cmd)?);
    Ok(())
}

/// `switchover`: sends it, then prints each change of the two roles until they have swapped
/// (or the node says it failed, or 30 s pass).
pub fn switchover(node: &Node) -> Result<(), Failure> {
    let (before, _) = node.status()?;
    println!("{}", node.command(Command::Switchover)?);
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let (s, _) = node.status()?;
        let peer = s.peer.role.map_or("unknown".to_string(), |r| r.to_string());
        let line = format!(
            "  node {}: {}{}   node {}: {}{}",
            s.node.0,
            s.role,
            s.transition.as_ref().map(|t| format!(" ({t})")).unwrap_or_default(),
            s.peer.id.0,
            peer,
            if s.peer.alive { "" } else { " (not heard)" }
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if s.role != before.role && s.peer.role == Some(before.role) && s.peer.alive && s.transition.is_none() {
            let master = if s.role == ridondato_core::Role::Master { s.node.0 } else { s.peer.id.0 };
            println!("switch-over done in {} ms: node {master} is Master", started.elapsed().as_millis());
            return Ok(());
        }
        if s.alarms.iter().any(|a| matches!(a, ridondato_core::Alarm::SwitchoverFailed)) && started.elapsed() > Duration::from_secs(1) {
            return Err("the switch-over failed (alarm switchover-failed): see `ridondato status` and the log".into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the switch-over did not complete within 30 s: see `ridondato status`".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `resync`: asks first when the database is to be replaced, starts the job, and follows it
/// with a progress bar until it ends (unless `no_wait`).
pub fn resync(node: &Node, kind: Option<ResyncKind>, yes: bool, no_wait: bool) -> Result<(), Failure> {
    let Some(kind) = kind else { return command(node, Command::CancelResync) };
    if matches!(kind, ResyncKind::Db | ResyncKind::All) {
        confirm_db_resync(node, kind, yes)?;
    }
    println!("{}", node.command(Command::Resync(kind))?);
    if no_wait {
        return Ok(());
    }
    follow_job(node)
}

/// A database resync replaces this node's data: say what will be discarded, and where it is
/// saved first, then ask (`--yes` answers for scripts).
fn confirm_db_resync(node: &Node, kind: ResyncKind, yes: bool) -> Result<(), Failure> {
    let (s, _) = node.status()?;
    let errant: u64 = s.alarms.iter().map(|a| if let ridondato_core::Alarm::ErrantTransactions { count } = a { *count } else { 0 }).sum();
    let mut plan = format!(
        "resync {}: this node's database (position {}) is replaced by a copy of the Master's ({}, position {}).\n",
        kind.as_str(),
        s.db_position.0,
        s.peer.id,
        s.peer.position.0
    );
    if errant > 0 {
        plan += &format!("It holds {errant} transactions the Master does not have: they will be discarded.\n");
    }
    plan += "Before anything is overwritten, this node's schemas and a report of its errant transactions are saved under <state_dir>/db-backups/.\n";
    eprint!("{plan}");
    if yes {
        return Ok(());
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err("not confirmed: run it from a terminal, or add --yes".into());
    }
    eprint!("Continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| e.to_string())?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("not confirmed: nothing done".into())
    }
}

/// Follows the running job with indicatif's bar (bytes of the current phase, rate, ETA); the
/// bar hides itself when standard error is not a terminal, the result line is printed anyway.
fn follow_job(node: &Node) -> Result<(), Failure> {
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>13} [{bar:32}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .map_err(|e| e.to_string())?
    .progress_chars("#>.");
    let bar = indicatif::ProgressBar::new(0).with_style(style);
    let mut phase = None;
    loop {
        let (s, _) = node.status()?;
        let Some(j) = s.job else {
            bar.abandon();
            return Err("the job disappeared (the node restarted?): see `ridondato status`".into());
        };
        if phase != Some(j.phase_index) {
            // A new phase has its own size: start the bar (and its rate) again.
            phase = Some(j.phase_index);
            bar.reset();
            bar.set_prefix(format!("{} {}/{}", j.phase.as_str(), j.phase_index + 1, j.phases));
        }
        bar.set_length(j.total.max(1));
        bar.set_position(j.done.min(j.total.max(1)));
        bar.set_message(format!("{}% overall{}", j.percent(), j.files.map_or(String::new(), |(d, t)| format!(", files {d}/{t}"))));
        match j.state {
            JobState::Running => std::thread::sleep(Duration::from_millis(250)),
            JobState::Done => {
                bar.finish();
                println!("resync {} done", j.kind.as_str());
                return Ok(());
            }
            JobState::Failed | JobState::Cancelled => {
                bar.abandon();
                return Err(format!("resync {} {:?}: {}", j.kind.as_str(), j.state, j.error.unwrap_or_default()).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Config, FsReport, JobStatus, Node, NodeId, ResyncPhase};

    #[test]
    fn the_two_nodes_stand_side_by_side() {
        let mut s = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        assert!(render_status(&s).contains("never heard"), "{}", render_status(&s));
        s.peer.role = Some(ridondato_core::Role::Master);
        s.peer.alive = false;
        s.peer.silent_for_ms = Some(1500);
        let out = render_status(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains("node 1 (this)") && lines[0].contains("node 2 (peer)"), "{out}");
        assert!(lines[1].starts_with("role") && lines[1].ends_with("unreachable (was master)"), "{out}");
        assert!(out.contains("1500 ms ago"), "{out}");
        // The columns line up: the peer's column starts at the same place on every row.
        let col = lines[0].find("node 2").unwrap_or(0);
        assert!(lines.iter().take(9).all(|l| l.len() >= col), "{out}");
    }

    #[test]
    fn the_file_sync_and_a_resync_in_files_are_shown() {
        let mut s = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        assert!(!render_status(&s).contains("fs "), "no [fs]: no line");
        s.fs = Some(FsReport {
            backlog: 3,
            rescans: 2,
            overflows: 1,
            watch_limited: true,
            bytes: 5 << 20,
            last_error: Some("rsync failed\nmore".into()),
            refused: Some("receiving into /srv: No space left on device (28)\nx".into()),
        });
        s.job = Some(JobStatus {
            id: 7,
            kind: ResyncKind::Fs,
            state: JobState::Running,
            phase: ResyncPhase::FsCopy,
            phase_index: 0,
            phases: 1,
            done: 1536,
            total: 4096,
            files: Some((10, 40)),
            error: None,
        });
        let out = render_status(&s);
        assert!(out.contains("fs backlog 3  full passes 2  queue overflows 1  traffic 5.0 MiB"), "{out}");
        assert!(out.contains("watch limit reached") && out.contains("fs error: rsync failed\n"), "{out}");
        assert!(out.contains("refused here: receiving into /srv: No space left on device (28)\n"), "{out}");
        assert!(out.contains("files 10/40  1.5 KiB of 4.0 KiB"), "{out}");
        assert_eq!(size(1023), "1023 B");
    }

    #[test]
    fn a_mongo_member_that_does_not_answer_shows_its_last_known_optime_and_why_it_blocks() {
        let mut s = Node::new(Config::lan(NodeId(1), NodeId(2))).status();
        s.mongo = Some(ridondato_core::MongoReport {
            state: "UNREACHABLE".into(),
            optime: (3, 500, 7),
            error: Some("connection refused".into()),
            ..Default::default()
        });
        s.promotion_blocker = Some("its MongoDB member does not answer (connection refused)".into());
        let out = render_status(&s);
        assert!(out.contains("mongo UNREACHABLE  optime 3/500.7 (last known)") && out.contains("mongo error: connection refused\n"), "{out}");
        assert!(out.contains("not promotable: its MongoDB member does not answer"), "without a [db] too: {out}");
    }
}
