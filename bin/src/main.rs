//! `ridondato`: the daemon and the operator CLI.

mod api;
mod cli;
mod cloud_cmd;
mod config;
mod control;
mod daemon;
mod debug_cmd;
mod host_check;
mod notify;
mod sim_cmd;

const USAGE: &str = "ridondato — a high-availability pair for a PBX

usage:
  ridondato run --config FILE               the daemon
  ridondato check-config FILE               validate a node configuration
  ridondato status [--json]                 this node's state, peer, VIP, replication, job, alarms
  ridondato set-state master|slave|off      change this node's state (S15)
  ridondato set-state master --accept-data-loss
                                            promote past the promotion policy (logged)
  ridondato set-state master|slave|off --peer
                                            ask the peer node for that state (its rules decide)
  ridondato switchover                      planned switch-over: the Slave becomes Master
  ridondato cloud-switchover [--dry-run] [--abort] [--journal FILE]
                                            cloud mode: the four switch-over steps (S14), each
                                            verified, journaled, resumed by running it again
  ridondato cloud move-ip NODE_ID | holder  cloud mode: move the public IP (read back) / who holds it
  ridondato maintenance on|off              pause automatic failover (both nodes)
  ridondato resync db|fs|all|cancel [--yes] forced resync from the Master, with progress
                                            (db/all: asks first; this node's data is saved)
  ridondato sim FILE... [--seed S]          run scenario files in the simulator
  ridondato sim --sweep N [--seed S]        run N random fault schedules
  ridondato sim --bench                     simulator speed
  ridondato lab-frame ...                   send a (forged/repeated) frame, for lab tests
Operator commands take --socket PATH or --config FILE (default socket /run/ridondato/control.sock).";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("sim") => sim_cmd::run(rest),
        Some("run") => daemon::run(rest),
        Some("lab-frame") => debug_cmd::run(rest),
        Some("check-config") => check_config(rest),
        Some("status") => cli::status(rest),
        Some("cloud") => cloud_cmd::cloud(rest),
        Some("cloud-switchover") => cloud_cmd::switchover(rest),
        Some(verb @ ("set-state" | "switchover" | "maintenance" | "resync")) => cli::command(verb, rest),
        Some("help" | "-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn check_config(args: &[String]) -> Result<(), String> {
    let [file] = args else { return Err("usage: ridondato check-config FILE".into()) };
    let c = config::load(std::path::Path::new(file))?;
    let problems = host_check::check(&c);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(format!("{file}: {} problem(s) on this host:\n{}", problems.len(), list.join("\n")));
    }
    println!("{file}: valid — node {} ({:?} mode), peer {} at {}", c.core.node, c.core.mode, c.core.peer, c.file.node.peer_ip);
    Ok(())
}
