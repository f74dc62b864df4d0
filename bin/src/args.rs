//! The command line, declared with clap's derive: every verb has its `--help`, a bad argument
//! is named with the usage, and shell completions come from the same declaration.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub const EXIT_CODES: &str = "Exit codes:
  0  done (a command was accepted; a followed job or switch-over completed)
  1  refused or failed: the node (or the step) said why, printed after `error:`
  2  bad usage: an unknown verb, option or value (nothing was sent)
  3  the node could not be reached (control socket or HTTP API)";

#[derive(Debug, Parser)]
#[command(name = "ridondato", version, about = "ridondato — a high-availability pair for a PBX", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// The daemon.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a node configuration (and this host's side of it); nothing is started.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a live pair's MongoDB replica set against the layout ridondato drives (one voter,
    /// the primary; a non-voting secondary that replicates), with the node's [mongo] settings.
    CheckMongo {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Both nodes side by side: role, epoch, VIP, replication, file sync, job, alarms.
    Status {
        #[command(flatten)]
        to: Target,
        /// This node's full status as JSON (the peer as this node last heard it, inside).
        #[arg(long)]
        json: bool,
    },
    /// Change this node's state (S15), or ask the peer for one (`--peer`).
    SetState {
        #[arg(value_enum)]
        state: State,
        /// Promote past the promotion policy (logged; only on the node itself, by root).
        #[arg(long, conflicts_with = "peer")]
        accept_data_loss: bool,
        /// Ask the peer node for that state; its own rules decide.
        #[arg(long)]
        peer: bool,
        #[command(flatten)]
        to: Target,
    },
    /// Planned switch-over: the Slave becomes Master with nothing lost; the Master becomes Slave.
    Switchover {
        #[command(flatten)]
        to: Target,
    },
    /// Cloud mode: the four switch-over steps (S14), each verified, journaled, resumable.
    CloudSwitchover {
        /// Show the plan (and the steps already done); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Undo an interrupted run while the old Master can still take its role back.
        #[arg(long, conflicts_with = "dry_run")]
        abort: bool,
        /// The run's journal (default: <state_dir>/cloud-switchover.json with --config).
        #[arg(long, value_name = "FILE")]
        journal: Option<PathBuf>,
        #[command(flatten)]
        to: Target,
    },
    /// Cloud mode: the public IP by hand.
    Cloud {
        #[command(subcommand)]
        what: CloudVerb,
    },
    /// Pause (on) or resume (off) automatic failover on both nodes (B6).
    Maintenance {
        #[arg(value_enum)]
        mode: OnOff,
        #[command(flatten)]
        to: Target,
    },
    /// Forced resync from the Master (S11), followed with a progress bar until it ends.
    Resync {
        #[arg(value_enum)]
        what: ResyncWhat,
        /// Do not ask before a database resync replaces this node's data (for scripts).
        #[arg(long)]
        yes: bool,
        /// Start it and return; follow it with `status`.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        to: Target,
    },
    /// Run a core again from a node's input journal (<state_dir>/journal: a directory or its
    /// *.rdj files), check that it answers every input as journaled, print the timeline (B9).
    Replay {
        #[arg(value_name = "JOURNAL", required = true)]
        paths: Vec<PathBuf>,
        /// Also write a scenario that plays the incident in the simulator.
        #[arg(long, value_name = "FILE")]
        to_scenario: Option<PathBuf>,
        /// Also print every operation the core started and how long it took, and every message
        /// heard from the peer (where the time of a failover went).
        #[arg(long)]
        ops: bool,
    },
    /// Run scenario files or random fault schedules in the deterministic simulator.
    Sim(SimArgs),
    /// Print a shell completion script (e.g. `ridondato completions bash > /etc/bash_completion.d/ridondato`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Send a (forged or repeated) node-to-node frame: for lab tests.
    #[command(hide = true)]
    LabFrame(LabFrameArgs),
}

/// Which node a command goes to: the local control socket (root on the node) or a node's HTTP
/// API (`--url` with `--token-file`, from anywhere the API is reachable).
#[derive(Debug, Args)]
pub struct Target {
    /// The local control socket.
    #[arg(long, value_name = "PATH", default_value = crate::cli::DEFAULT_SOCKET, conflicts_with_all = ["config", "url"])]
    pub socket: PathBuf,
    /// The node's configuration: its control socket (and state_dir) are used.
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// A node's HTTP API, e.g. http://198.18.0.1:8008 (or https:// with TLS).
    #[arg(long, value_name = "URL", requires = "token_file")]
    pub url: Option<String>,
    /// The API token (the node's api.token_file, copied with mode 600).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With https: the CA (or self-signed certificate) to trust, PEM.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CloudVerb {
    /// Associate the public IP with that node's instance and read it back from the API.
    MoveIp {
        #[arg(value_name = "NODE_ID")]
        node: u8,
        #[command(flatten)]
        to: Target,
    },
    /// Who holds the public IP, read from the cloud API now.
    Holder {
        #[command(flatten)]
        to: Target,
    },
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scenario files.
    #[arg(value_name = "FILE", conflicts_with_all = ["sweep", "bench"])]
    pub files: Vec<String>,
    /// The seed (scenarios), or the first seed of a sweep.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run this many random fault schedules.
    #[arg(long, value_name = "N")]
    pub sweep: Option<u64>,
    /// Threads for a sweep (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print each schedule's timeline.
    #[arg(long)]
    pub trace: bool,
    /// Through the real async driver under turmoil.
    #[arg(long, requires = "sweep")]
    pub tier2: bool,
    /// The simulator's speed.
    #[arg(long)]
    pub bench: bool,
}

#[derive(Debug, Args)]
pub struct LabFrameArgs {
    #[arg(long)]
    pub secret: String,
    #[arg(long)]
    pub from: u8,
    #[arg(long)]
    pub to: u8,
    #[arg(long)]
    pub dest: std::net::SocketAddr,
    #[arg(long)]
    pub forge: bool,
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    #[arg(long)]
    pub bind: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub save: Option<String>,
    #[arg(long)]
    pub replay: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum State {
    Master,
    Slave,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResyncWhat {
    Db,
    Fs,
    Mongo,
    All,
    Cancel,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = Cli::try_parse_from(["ridondato", "set-state", "primary"]).expect_err("refused");
        assert!(e.to_string().contains("primary") && e.to_string().contains("master"), "{e}");
        let e = Cli::try_parse_from(["ridondato", "resync", "db", "--url", "http://x"]).expect_err("refused");
        assert!(e.to_string().contains("--token-file"), "{e}");
        let ok = Cli::try_parse_from(["ridondato", "set-state", "master", "--accept-data-loss"]).expect("valid");
        assert!(matches!(ok.verb, Verb::SetState { state: State::Master, accept_data_loss: true, .. }));
    }
}
