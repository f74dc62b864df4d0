//! One vocabulary of fault and operator operations, shared by scenario files, property tests
//! and the seed sweep, with a parser and a printer that round-trip.

use ridondato_core::{Command, ResyncKind, Target};
use std::fmt;

/// Node index in the simulated pair: 0 is `a`, 1 is `b`.
pub type Ix = usize;

pub fn node_name(ix: Ix) -> &'static str {
    ["a", "b"][ix]
}

fn parse_node(s: &str) -> Result<Ix, String> {
    match s {
        "a" => Ok(0),
        "b" => Ok(1),
        _ => Err(format!("unknown node `{s}` (expected a or b)")),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Start the node's daemon (first start, or after `crash`).
    Start(Ix),
    /// The daemon process dies; the host, its addresses and its database keep running.
    Crash(Ix),
    /// The daemon stops (SIGSTOP, a deadlock): it hears, decides and renews nothing, but keeps
    /// its state; the VIP's lease runs out. `Resume` lets it go on with what queued meanwhile.
    Pause(Ix),
    Resume(Ix),
    /// The host loses power: link down, addresses and processes gone; disks keep their data.
    PowerOff(Ix),
    /// Power back on: the host boots and its daemon starts.
    PowerOn(Ix),
    LinkDown(Ix),
    LinkUp(Ix),
    /// Heartbeats dropped both ways (nftables on the UDP port); ARP still crosses.
    Cut,
    /// Heartbeats from `.0` to `.1` dropped.
    CutOneWay(Ix, Ix),
    /// The LAN splits between the nodes: nothing crosses, ARP included. The witness stays on
    /// the side of the given node, or is unreachable to both.
    Split {
        witness: Option<Ix>,
    },
    /// Messages between the nodes are held, then delivered at `release`.
    Hold,
    Release,
    /// Random loss of node-to-node messages, percent.
    Loss(u32),
    /// Extra one-way latency of node-to-node messages, ms.
    Latency(u64),
    /// Ends every network fault (cut, split, hold, loss, latency).
    Heal,
    /// An adapter operation (by name, `*` for all) becomes slow (factor), fails, or hangs.
    Slow(Ix, String, u64),
    Fail(Ix, String),
    Hang(Ix, String),
    /// The node's adapters behave again.
    Fix(Ix),
    /// The node's clock runs fast (+) or slow (-) by this many parts per million.
    Drift(Ix, i64),
    Cmd(Ix, Command),
    /// The client writer through the front door starts or stops.
    Writer(bool),
    /// An operator moves the cloud public IP by hand (S14 step 2).
    CloudMove(Ix),
    /// The node's database server dies (the daemon and the host stay up).
    DbDown(Ix),
    /// The database server comes back: read-only, replication configured but not started.
    DbUp(Ix),
    /// etcd (the lease arbiter) unreachable from one node, down altogether, or back for all.
    EtcdCut(Ix),
    EtcdDown,
    EtcdUp,
    /// The node's `mongod` dies (the daemon and the host stay up), and comes back.
    MongoDown(Ix),
    MongoUp(Ix),
    /// Someone stops the node's replication (`STOP SLAVE` by hand).
    StopReplication(Ix),
    /// The node's state file is deleted (the next start finds none).
    LoseState(Ix),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &Ix| node_name(*i);
        match self {
            Fault::Start(i) => write!(f, "start {}", n(i)),
            Fault::Crash(i) => write!(f, "crash {}", n(i)),
            Fault::Pause(i) => write!(f, "pause {}", n(i)),
            Fault::Resume(i) => write!(f, "resume {}", n(i)),
            Fault::PowerOff(i) => write!(f, "power-off {}", n(i)),
            Fault::PowerOn(i) => write!(f, "power-on {}", n(i)),
            Fault::LinkDown(i) => write!(f, "link-down {}", n(i)),
            Fault::LinkUp(i) => write!(f, "link-up {}", n(i)),
            Fault::Cut => f.write_str("cut"),
            Fault::CutOneWay(a, b) => write!(f, "cut-oneway {} {}", n(a), n(b)),
            Fault::Split { witness } => write!(f, "split witness={}", witness.map_or("none", node_name)),
            Fault::Hold => f.write_str("hold"),
            Fault::Release => f.write_str("release"),
            Fault::Loss(p) => write!(f, "loss {p}"),
            Fault::Latency(ms) => write!(f, "latency {ms}"),
            Fault::Heal => f.write_str("heal"),
            Fault::Slow(i, op, k) => write!(f, "slow {} {op} {k}", n(i)),
            Fault::Fail(i, op) => write!(f, "fail {} {op}", n(i)),
            Fault::Hang(i, op) => write!(f, "hang {} {op}", n(i)),
            Fault::Fix(i) => write!(f, "fix {}", n(i)),
            Fault::Drift(i, ppm) => write!(f, "drift {} {ppm}", n(i)),
            Fault::Cmd(i, c) => write!(f, "{} {}", n(i), command_text(c)),
            Fault::Writer(on) => write!(f, "writer {}", if *on { "on" } else { "off" }),
            Fault::CloudMove(i) => write!(f, "cloud-move {}", n(i)),
            Fault::DbDown(i) => write!(f, "db-down {}", n(i)),
            Fault::DbUp(i) => write!(f, "db-up {}", n(i)),
            Fault::MongoDown(i) => write!(f, "mongo-down {}", n(i)),
            Fault::EtcdCut(i) => write!(f, "etcd-cut {}", n(i)),
            Fault::EtcdDown => f.write_str("etcd-down"),
            Fault::EtcdUp => f.write_str("etcd-up"),
            Fault::MongoUp(i) => write!(f, "mongo-up {}", n(i)),
            Fault::StopReplication(i) => write!(f, "stop-replication {}", n(i)),
            Fault::LoseState(i) => write!(f, "lose-state {}", n(i)),
        }
    }
}

pub fn command_text(c: &Command) -> String {
    match c {
        Command::SetState(Target::Master) => "set-state master".into(),
        Command::SetState(Target::Slave) => "set-state slave".into(),
        Command::SetState(Target::Off) => "set-state off".into(),
        Command::ForceMaster => "set-state master --accept-data-loss".into(),
        Command::Switchover => "switchover".into(),
        Command::Maintenance(on) => format!("maintenance {}", if *on { "on" } else { "off" }),
        Command::Resync(k) => format!("resync {}", k.as_str()),
        Command::CancelResync => "resync cancel".into(),
        Command::Shutdown => "shutdown".into(),
        Command::AskPeer(t) => format!("{} --peer", command_text(&Command::SetState(*t))),
    }
}

/// Parses an operator command as the CLI spells it (`set-state master`, `resync all`...).
pub fn parse_command(words: &[&str]) -> Result<Command, String> {
    Ok(match words {
        ["set-state", "master"] => Command::SetState(Target::Master),
        ["set-state", "slave"] => Command::SetState(Target::Slave),
        ["set-state", "off"] => Command::SetState(Target::Off),
        ["set-state", "master", "--accept-data-loss"] => Command::ForceMaster,
        ["set-state", "master", "--peer"] => Command::AskPeer(Target::Master),
        ["set-state", "slave", "--peer"] => Command::AskPeer(Target::Slave),
        ["set-state", "off", "--peer"] => Command::AskPeer(Target::Off),
        ["switchover"] => Command::Switchover,
        ["maintenance", "on"] => Command::Maintenance(true),
        ["maintenance", "off"] => Command::Maintenance(false),
        ["resync", "db"] => Command::Resync(ResyncKind::Db),
        ["resync", "fs"] => Command::Resync(ResyncKind::Fs),
        ["resync", "all"] => Command::Resync(ResyncKind::All),
        ["resync", "mongo"] => Command::Resync(ResyncKind::Mongo),
        ["resync", "cancel"] => Command::CancelResync,
        ["shutdown"] => Command::Shutdown,
        _ => return Err(format!("unknown command `{}`", words.join(" "))),
    })
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("`{s}` is not a valid {what}"))
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(line: &str) -> Result<Fault, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let node = |i: usize| w.get(i).ok_or_else(|| format!("`{line}`: missing node")).and_then(|s| parse_node(s));
        let arg = |i: usize| w.get(i).copied().ok_or_else(|| format!("`{line}`: missing argument"));
        Ok(match w.first().copied().unwrap_or("") {
            "start" => Fault::Start(node(1)?),
            "crash" => Fault::Crash(node(1)?),
            "pause" => Fault::Pause(node(1)?),
            "resume" => Fault::Resume(node(1)?),
            "power-off" => Fault::PowerOff(node(1)?),
            "power-on" => Fault::PowerOn(node(1)?),
            "link-down" => Fault::LinkDown(node(1)?),
            "link-up" => Fault::LinkUp(node(1)?),
            "cut" => Fault::Cut,
            "cut-oneway" => Fault::CutOneWay(node(1)?, node(2)?),
            "split" => {
                let wit = arg(1)?.strip_prefix("witness=").ok_or_else(|| format!("`{line}`: expected witness=a|b|none"))?;
                Fault::Split { witness: if wit == "none" { None } else { Some(parse_node(wit)?) } }
            }
            "hold" => Fault::Hold,
            "release" => Fault::Release,
            "loss" => Fault::Loss(num(arg(1)?, "percentage")?),
            "latency" => Fault::Latency(num(arg(1)?, "latency in ms")?),
            "heal" => Fault::Heal,
            "slow" => Fault::Slow(node(1)?, arg(2)?.to_string(), num(arg(3)?, "factor")?),
            "fail" => Fault::Fail(node(1)?, arg(2)?.to_string()),
            "hang" => Fault::Hang(node(1)?, arg(2)?.to_string()),
            "fix" => Fault::Fix(node(1)?),
            "drift" => Fault::Drift(node(1)?, num(arg(2)?, "drift in ppm")?),
            "writer" => Fault::Writer(arg(1)? == "on"),
            "cloud-move" => Fault::CloudMove(node(1)?),
            "db-down" => Fault::DbDown(node(1)?),
            "db-up" => Fault::DbUp(node(1)?),
            "mongo-down" => Fault::MongoDown(node(1)?),
            "etcd-cut" => Fault::EtcdCut(node(1)?),
            "etcd-down" => Fault::EtcdDown,
            "etcd-up" => Fault::EtcdUp,
            "mongo-up" => Fault::MongoUp(node(1)?),
            "stop-replication" => Fault::StopReplication(node(1)?),
            "lose-state" => Fault::LoseState(node(1)?),
            "a" | "b" => Fault::Cmd(node(0)?, parse_command(&w[1..])?),
            other => return Err(format!("unknown operation `{other}` in `{line}`")),
        })
    }
}
