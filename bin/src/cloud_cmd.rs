//! Cloud mode's operator commands (S14): `cloud move-ip`, `cloud holder`, and the seed's four
//! manual switch-over steps as one command, `cloud-switchover`, run from either node through
//! its daemon (the other node is reached over the authenticated peer link). Each step is
//! verified before the next; the run is journaled, so a run cut short (the CLI killed, the API
//! failing, a node restarting) is resumed by running the command again, or undone with
//! `--abort` while the old Master can still take its role back.

use crate::args::{CloudVerb, Target as To};
use crate::client::{Failure, Node};
use crate::control::{request, Request, Response};
use ridondato_core::{Command, NodeId, Role, Status, Target};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a run is journaled unless `--journal` or `--config` (its state_dir) says otherwise.
const DEFAULT_JOURNAL: &str = "/var/lib/ridondato/cloud-switchover.json";
/// How long a node may take to reach the state a step asked of it.
const STEP_WITHIN: Duration = Duration::from_secs(60);

/// What a run has done so far: the four steps in order, the last one completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    from: u8,
    to: u8,
    done: u8,
}

fn reply(r: Response) -> Result<String, String> {
    match r {
        Response::Reply(r) => r,
        Response::BadRequest(e) => Err(e),
        Response::Status(..) => Err("unexpected answer from the daemon".into()),
    }
}

fn status(socket: &Path) -> Result<Status, String> {
    match request(socket, &Request::Status)? {
        Response::Status(s, _) => Ok(*s),
        other => Err(reply(other).err().unwrap_or_else(|| "no status".into())),
    }
}

/// `cloud move-ip N`, `cloud holder`: root on the node only.
pub fn cloud(what: &CloudVerb) -> Result<(), Failure> {
    let (req, to, name) = match what {
        CloudVerb::MoveIp { node, to } => (Request::CloudMoveIp(NodeId(*node)), to, "moving the public IP by hand"),
        CloudVerb::Holder { to } => (Request::CloudHolder, to, "asking the cloud API who holds the IP"),
    };
    println!("{}", Node::from_target(to)?.local_only(&req, name)?);
    Ok(())
}

/// A run of the four steps: through this node's control socket, journaled in `journal`.
#[derive(Debug)]
pub struct Switchover {
    pub socket: PathBuf,
    pub journal: PathBuf,
    pub dry_run: bool,
    pub abort: bool,
}

/// `cloud-switchover`, its progress on standard output; with `--url`, the node's daemon runs it
/// (its journal) and the CLI prints the plan or the acceptance.
pub fn switchover(to: &To, journal: Option<PathBuf>, dry_run: bool, abort: bool) -> Result<(), Failure> {
    let node = Node::from_target(to)?;
    if !node.is_local() {
        if abort || journal.is_some() {
            return Err(Failure::Usage("--abort and --journal are for the node itself (root, control socket), not through --url".into()));
        }
        let v = node.http("POST", "/cloud-switchover", Some(serde_json::json!({ "dry_run": dry_run })))?;
        match &v["result"] {
            serde_json::Value::Array(lines) => lines.iter().for_each(|l| println!("{}", l.as_str().unwrap_or_default())),
            other => println!("{}", other.as_str().unwrap_or_default()),
        }
        return Ok(());
    }
    let journal = match (journal, &to.config) {
        (Some(j), _) => j,
        (None, Some(cfg)) => crate::config::load(cfg)?.file.node.state_dir.join("cloud-switchover.json"),
        (None, None) => PathBuf::from(DEFAULT_JOURNAL),
    };
    let run = Switchover { socket: crate::client::socket_of(to)?, journal, dry_run, abort };
    Ok(switchover_with(&run, &mut |line| println!("{line}"))?)
}

/// The same, each line of progress given to `say` (the HTTP API logs them).
pub fn switchover_with(opts: &Switchover, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    let (socket, dry_run, abort) = (opts.socket.clone(), opts.dry_run, opts.abort);
    let path = opts.journal.clone();
    let run = Run { socket, me: NodeId(0), path };
    let s = status(&run.socket)?;
    if s.cloud.is_none() {
        return Err("this node is not in cloud mode ([cloud] in its configuration)".into());
    }
    let run = Run { me: s.node, ..run };
    let journal = match run.load()? {
        Some(j) => {
            say(&format!("resuming the switch-over from node {} to node {} after step {}/4 (journal {})", j.from, j.to, j.done, run.path.display()));
            j
        }
        None if abort => return Err("no switch-over to abort: no journal".into()),
        None => {
            let (from, to) = match (s.role, s.peer.role, s.peer.alive) {
                (_, _, false) => return Err(format!("the peer {} is not heard: a switch-over needs both nodes", s.peer.id)),
                (Role::Master, Some(Role::Slave), _) => (s.node, s.peer.id),
                (Role::Slave, Some(Role::Master), _) => (s.peer.id, s.node),
                (r, p, _) => {
                    return Err(format!(
                        "a switch-over needs a Master and a Slave; this node is {r}, the peer {}",
                        p.map_or("unknown".into(), |p| p.to_string())
                    ))
                }
            };
            Journal { from: from.0, to: to.0, done: 0 }
        }
    };
    let (from, to) = (NodeId(journal.from), NodeId(journal.to));
    if abort {
        return run.abort(&journal, say);
    }
    let ip = s.cloud.as_ref().and_then(|c| c.public_ip.clone()).unwrap_or_else(|| "the public IP".into());
    let steps = [
        format!("node {}: services off, confirmed by its state", from.0),
        format!("{ip}: associated with node {}'s instance, read back from the API", to.0),
        format!("node {}: Master, confirmed by its state", to.0),
        format!("node {}: Slave, confirmed by its state", from.0),
    ];
    if dry_run {
        say("cloud switch-over plan (nothing done):");
        for (i, s) in steps.iter().enumerate() {
            let mark = if (i as u8) < journal.done { " (done)" } else { "" };
            say(&format!("  {}/4 {s}{mark}", i + 1));
        }
        return Ok(());
    }
    let mut journal = journal;
    run.save(&journal)?;
    for k in journal.done + 1..=4 {
        say(&format!("step {k}/4: {}", steps[usize::from(k) - 1]));
        let t = Instant::now();
        let result = match k {
            1 => run.set(from, Target::Off),
            2 => reply(request(&run.socket, &Request::CloudMoveIp(to))?),
            3 => run.set(to, Target::Master),
            _ => run.set(from, Target::Slave),
        };
        match result {
            Ok(m) => say(&format!("  done in {} ms: {m}", t.elapsed().as_millis())),
            Err(e) => {
                let next = match k {
                    1 | 2 => "run `ridondato cloud-switchover` again to resume once the cause is fixed, or `--abort` to give the role back to the old Master",
                    _ => "run `ridondato cloud-switchover` again to resume once the cause is fixed",
                };
                return Err(format!("step {k}/4 failed: {e}\nthe run is journaled in {}: {next}", run.path.display()));
            }
        }
        journal.done = k;
        run.save(&journal)?;
    }
    let _ = std::fs::remove_file(&run.path);
    say(&format!("switch-over done: node {} is Master and holds {ip}; node {} is Slave", to.0, from.0));
    Ok(())
}

struct Run {
    socket: PathBuf,
    me: NodeId,
    path: PathBuf,
}

impl Run {
    fn load(&self) -> Result<Option<Journal>, String> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: not a switch-over journal ({e}); remove it to start afresh", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Written whole to a temporary name and renamed: a crash leaves the old or the new one.
    fn save(&self, j: &Journal) -> Result<(), String> {
        let e = |x: std::io::Error| format!("journal {}: {x}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(e)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(e)?;
        std::io::Write::write_all(&mut f, &serde_json::to_vec(j).map_err(|x| x.to_string())?).map_err(e)?;
        f.sync_all().map_err(e)?;
        std::fs::rename(&tmp, &self.path).map_err(e)
    }

    /// The role a node has now: this node's own, or the peer's as last heard.
    fn role_of(&self, node: NodeId) -> Result<Option<Role>, String> {
        let s = status(&self.socket)?;
        Ok(if node == self.me { Some(s.role) } else { s.peer.role.filter(|_| s.peer.alive) })
    }

    /// Asks `node` for `target` and waits until it has it. The peer is asked again every 2 s
    /// (the request travels as a datagram; asking twice is harmless).
    fn set(&self, node: NodeId, target: Target) -> Result<String, String> {
        let want = match target {
            Target::Master => Role::Master,
            Target::Slave => Role::Slave,
            Target::Off => Role::Off,
        };
        let cmd = if node == self.me { Command::SetState(target) } else { Command::AskPeer(target) };
        let t = Instant::now();
        let mut asked: Option<Instant> = None;
        loop {
            if self.role_of(node)? == Some(want) {
                return Ok(format!("node {} is {want}", node.0));
            }
            let again = asked.is_none_or(|a| node != self.me && a.elapsed() >= Duration::from_secs(2));
            if again {
                // A local refusal is final; the peer's own refusal shows only as a role that does
                // not come (and in its log), its request failing only when it is not heard.
                if let Err(e) = reply(request(&self.socket, &Request::Command(cmd.clone()))?) {
                    return Err(format!("node {} refused: {e}", node.0));
                }
                asked = Some(Instant::now());
            }
            if t.elapsed() > STEP_WITHIN {
                let now = self.role_of(node)?.map_or("not heard".into(), |r| r.to_string());
                return Err(format!("node {} is {now}, not {want}, after {} s (its log and `ridondato status` there say why)", node.0, STEP_WITHIN.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Gives the role back to the old Master, possible while the new one has not taken it.
    fn abort(&self, j: &Journal, say: &mut dyn FnMut(&str)) -> Result<(), String> {
        let (from, to) = (NodeId(j.from), NodeId(j.to));
        if j.done >= 3 {
            return Err(format!("node {} is already Master: finish with `ridondato cloud-switchover`, or switch back with a new run", to.0));
        }
        if j.done >= 2 {
            say(&format!("abort: the public IP back to node {}", from.0));
            say(&format!("  {}", reply(request(&self.socket, &Request::CloudMoveIp(from))?)?));
        }
        if j.done >= 1 {
            say(&format!("abort: node {} Master again", from.0));
            say(&format!("  {}", self.set(from, Target::Master)?));
        }
        let _ = std::fs::remove_file(&self.path);
        say(&format!("aborted: node {} is Master, node {} is Slave", from.0, to.0));
        Ok(())
    }
}
