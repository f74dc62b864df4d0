//! Operator commands against a running node (S14, S15): status, set-state, switchover,
//! maintenance, resync with a progress bar.

use crate::control::{request, Request, Response};
use ridondato_core::{Command, JobState, ResyncKind, Status, Target};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/ridondato/control.sock";

/// Splits `--socket PATH` (or `--config FILE`, whose control_socket is used) from the words.
pub fn socket_and_words(args: &[String]) -> Result<(PathBuf, Vec<String>), String> {
    let mut socket = PathBuf::from(DEFAULT_SOCKET);
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => socket = it.next().ok_or("--socket needs a path")?.into(),
            "--config" => {
                let f = it.next().ok_or("--config needs a file")?;
                socket = crate::config::load(std::path::Path::new(f))?.file.node.control_socket;
            }
            w => words.push(w.to_string()),
        }
    }
    Ok((socket, words))
}

pub fn parse_command(verb: &str, words: &[String]) -> Result<Command, String> {
    let arg = words.first().map(String::as_str);
    let forced = words.len() == 2 && words[1] == "--accept-data-loss";
    let peer = words.len() == 2 && words[1] == "--peer";
    if words.len() > 1 && !(verb == "set-state" && ((arg == Some("master") && forced) || peer)) {
        return Err(format!("`{verb}`: unexpected `{}`", words[1..].join(" ")));
    }
    Ok(match (verb, arg) {
        ("set-state", Some("master")) if peer => Command::AskPeer(Target::Master),
        ("set-state", Some("slave")) if peer => Command::AskPeer(Target::Slave),
        ("set-state", Some("off")) if peer => Command::AskPeer(Target::Off),
        ("set-state", Some("master")) if forced => Command::ForceMaster,
        ("set-state", Some("master")) => Command::SetState(Target::Master),
        ("set-state", Some("slave")) => Command::SetState(Target::Slave),
        ("set-state", Some("off")) => Command::SetState(Target::Off),
        ("set-state", _) => return Err("usage: ridondato set-state master [--accept-data-loss] | slave | off, or with --peer for the peer node".into()),
        ("switchover", None) => Command::Switchover,
        ("maintenance", Some("on")) => Command::Maintenance(true),
        ("maintenance", Some("off")) => Command::Maintenance(false),
        ("maintenance", _) => return Err("usage: ridondato maintenance on|off".into()),
        ("resync", Some("db")) => Command::Resync(ResyncKind::Db),
        ("resync", Some("fs")) => Command::Resync(ResyncKind::Fs),
        ("resync", Some("all")) => Command::Resync(ResyncKind::All),
        ("resync", Some("cancel")) => Command::CancelResync,
        ("resync", _) => return Err("usage: ridondato resync db|fs|all|cancel".into()),
        (v, Some(extra)) => return Err(format!("`{v}` takes no argument `{extra}`")),
        (v, None) => return Err(format!("unknown command `{v}`")),
    })
}

pub fn status(args: &[String]) -> Result<(), String> {
    let (socket, words) = socket_and_words(args)?;
    let json = words.iter().any(|w| w == "--json");
    let (s, dropped) = fetch_status_and_drops(&socket)?;
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

fn fetch_status(socket: &std::path::Path) -> Result<Status, String> {
    fetch_status_and_drops(socket).map(|(s, _)| s)
}

fn fetch_status_and_drops(socket: &std::path::Path) -> Result<(Status, std::collections::BTreeMap<String, u64>), String> {
    match request(socket, &Request::Status)? {
        Response::Status(s, dropped) => Ok((*s, dropped)),
        Response::Reply(Err(e)) | Response::BadRequest(e) => Err(e),
        Response::Reply(Ok(m)) => Err(m),
    }
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

pub fn render_status(s: &Status) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!("node {}  role {}  epoch {}{}\n", s.node, s.role, s.epoch, s.transition.as_ref().map(|t| format!("  ({t})")).unwrap_or_default());
    let peer_role = s.peer.role.map_or("never heard".to_string(), |r| r.to_string());
    let silent = s.peer.silent_for_ms.map_or(String::new(), |ms| format!(", heard {ms} ms ago"));
    out += &format!("peer {}  {}{}{}\n", s.peer.id, peer_role, if s.peer.alive { "" } else { " (silent)" }, silent);
    out += &format!("vip {}  services {}  fs-push {}\n", yes(s.vip_held), yes(s.services_running), yes(s.fs_pushing));
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
        if let Some(b) = &s.promotion_blocker {
            out += &format!("not promotable: {b}\n");
        }
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

/// Sends one command; for `resync`, follows the job with a progress bar until it ends.
pub fn command(verb: &str, args: &[String]) -> Result<(), String> {
    let (socket, words) = socket_and_words(args)?;
    let no_wait = words.iter().any(|w| w == "--no-wait");
    let words: Vec<String> = words.into_iter().filter(|w| w != "--no-wait").collect();
    let yes = words.iter().any(|w| w == "--yes");
    let words: Vec<String> = words.into_iter().filter(|w| w != "--yes").collect();
    let cmd = parse_command(verb, &words)?;
    if let Command::Resync(kind @ (ResyncKind::Db | ResyncKind::All)) = cmd {
        confirm_db_resync(&socket, kind, yes)?;
    }
    let follow = matches!(cmd, Command::Resync(_)) && !no_wait;
    match request(&socket, &Request::Command(cmd))? {
        Response::Reply(Ok(m)) => println!("{m}"),
        Response::Reply(Err(e)) | Response::BadRequest(e) => return Err(e),
        Response::Status(..) => return Err("unexpected answer".into()),
    }
    if follow {
        follow_job(&socket)?;
    }
    Ok(())
}

/// A database resync replaces this node's data: say what will be discarded, and where it is
/// saved first, then ask (`--yes` answers for scripts).
fn confirm_db_resync(socket: &std::path::Path, kind: ResyncKind, yes: bool) -> Result<(), String> {
    let s = fetch_status(socket)?;
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

fn follow_job(socket: &std::path::Path) -> Result<(), String> {
    loop {
        let s = fetch_status(socket)?;
        let Some(j) = s.job else { return Err("the job disappeared".into()) };
        let pct = j.percent();
        let bar: String = (0..40).map(|i| if i * 100 / 40 < pct as usize { '#' } else { '.' }).collect();
        let files = j.files.map_or(String::new(), |(d, t)| format!("  files {d}/{t}"));
        eprint!("\r[{bar}] {pct:>3}%  {:<14}{files:<22}", j.phase.as_str());
        match j.state {
            JobState::Running => std::thread::sleep(Duration::from_millis(250)),
            JobState::Done => {
                eprintln!();
                println!("resync {} done", j.kind.as_str());
                return Ok(());
            }
            JobState::Failed | JobState::Cancelled => {
                eprintln!();
                return Err(format!("resync {} {:?}: {}", j.kind.as_str(), j.state, j.error.unwrap_or_default()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Config, FsReport, JobStatus, Node, NodeId, ResyncPhase};

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
}
