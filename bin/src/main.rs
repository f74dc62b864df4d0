//! `ridondato`: the daemon and the operator CLI.

mod sim_cmd;

const USAGE: &str = "ridondato — a high-availability pair for a PBX

usage:
  ridondato sim FILE... [--seed S]          run scenario files in the simulator
  ridondato sim --sweep N [--seed S]        run N random fault schedules
  ridondato help";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sim") => sim_cmd::run(&args[1..]),
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
