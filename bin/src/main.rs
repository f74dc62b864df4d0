//! `ridondato`: the daemon and the operator CLI.

mod api;
mod args;
mod check_mongo;
mod cli;
mod client;
mod cloud_cmd;
mod config;
mod control;
mod daemon;
mod debug_cmd;
mod host_check;
mod notify;
mod replay_cmd;
mod sim_cmd;

use args::{Cli, LogFormat, OnOff, State, Verb};
use clap::{CommandFactory, Parser};
use client::{Failure, Node};
use ridondato_core::{Command, Target};

fn main() {
    // Two TLS providers are compiled in (the AWS SDK brings aws-lc-rs, the MongoDB driver ring):
    // rustls then cannot pick a process default by itself, so name one before any TLS is used.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    // clap prints its own usage errors and exits 2, --help and --version 0.
    let cli = Cli::parse();
    let result = dispatch(cli.verb);
    if let Err(f) = result {
        let (code, msg) = match f {
            Failure::Refused(m) => (1, m),
            Failure::Usage(m) => (2, m),
            Failure::Unreachable(m) => (3, m),
        };
        eprintln!("error: {msg}");
        std::process::exit(code);
    }
}

fn dispatch(verb: Verb) -> Result<(), Failure> {
    match verb {
        Verb::Run { config, log_format } => Ok(daemon::run(&config, log_format == LogFormat::Json)?),
        Verb::CheckConfig { file } => Ok(check_config(&file)?),
        Verb::CheckMongo { config } => check_mongo::run(&config),
        Verb::Status { to, json } => cli::status(&Node::from_target(&to)?, json),
        Verb::SetState { state, accept_data_loss, peer, to } => {
            let target = match state {
                State::Master => Target::Master,
                State::Slave => Target::Slave,
                State::Off => Target::Off,
            };
            let cmd = match (accept_data_loss, peer) {
                (true, _) if target != Target::Master => return Err(Failure::Usage("--accept-data-loss goes with `set-state master` only".into())),
                (true, _) => Command::ForceMaster,
                (false, true) => Command::AskPeer(target),
                (false, false) => Command::SetState(target),
            };
            cli::command(&Node::from_target(&to)?, cmd)
        }
        Verb::Switchover { to } => cli::switchover(&Node::from_target(&to)?),
        Verb::CloudSwitchover { dry_run, abort, journal, to } => cloud_cmd::switchover(&to, journal, dry_run, abort),
        Verb::Cloud { what } => cloud_cmd::cloud(&what),
        Verb::Maintenance { mode, to } => cli::command(&Node::from_target(&to)?, Command::Maintenance(mode == OnOff::On)),
        Verb::Resync { what, yes, no_wait, to } => cli::resync(&Node::from_target(&to)?, client::resync_kind(what), yes, no_wait),
        Verb::Replay { paths, to_scenario, ops } => replay_cmd::run(&paths, to_scenario.as_deref(), ops),
        Verb::Sim(a) => Ok(sim_cmd::run(&a)?),
        Verb::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ridondato", &mut std::io::stdout());
            Ok(())
        }
        Verb::LabFrame(a) => Ok(debug_cmd::run(&a)?),
    }
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let c = config::load(file)?;
    let problems = host_check::check(&c);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(format!("{}: {} problem(s) on this host:\n{}", file.display(), problems.len(), list.join("\n")));
    }
    println!("{}: valid — node {} ({:?} mode), peer {} at {}", file.display(), c.core.node, c.core.mode, c.core.peer, c.file.node.peer_ip);
    Ok(())
}
