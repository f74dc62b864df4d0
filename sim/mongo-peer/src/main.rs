//! `ridondato-mongo-peer --bind IP:PORT --replSet NAME --dbpath DIR [--host NAME:PORT]
//! [--initial-sync-bytes-per-sec N] [--user NAME --password-file PATH]`: a mongod look-alike
//! that runs until SIGTERM/SIGINT. With `--user`, clients must authenticate with SCRAM-SHA-256
//! as that user (in `admin`), whose password is the file's contents without trailing newline.

use std::net::SocketAddr;
use std::process::ExitCode;

use ridondato_mongo_peer::{serve, PeerOptions};

const USAGE: &str = "usage: ridondato-mongo-peer --bind IP:PORT --replSet NAME --dbpath DIR \
[--host NAME:PORT] [--initial-sync-bytes-per-sec N] [--user NAME --password-file PATH]";

fn parse(args: &[String]) -> Result<PeerOptions, String> {
    let (mut bind, mut set, mut dbpath, mut host, mut rate) = (None, None, None, None, None);
    let (mut user, mut password_file) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => {
                let v = value()?;
                bind = Some(v.parse::<SocketAddr>().map_err(|e| format!("--bind {v:?}: not an IP:PORT ({e})"))?);
            }
            "--replSet" => set = Some(value()?).filter(|s| !s.is_empty()),
            "--dbpath" => dbpath = Some(value()?),
            "--host" => {
                let v = value()?;
                if !v.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                    return Err(format!("--host {v:?}: not a NAME:PORT"));
                }
                host = Some(v);
            }
            "--initial-sync-bytes-per-sec" => {
                let v = value()?;
                rate = Some(v.parse::<u64>().map_err(|_| format!("--initial-sync-bytes-per-sec {v:?}: not a number"))?);
            }
            "--user" => user = Some(value()?).filter(|s| !s.is_empty()),
            "--password-file" => password_file = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let bind = bind.ok_or("--bind is required")?;
    let set = set.ok_or("--replSet is required (a non-empty set name)")?;
    let dbpath = dbpath.ok_or("--dbpath is required")?;
    let mut opts = PeerOptions::new(bind, set, dbpath);
    opts.host = host;
    if let Some(r) = rate {
        opts.initial_sync_bytes_per_sec = r;
    }
    match (user, password_file) {
        (None, None) => {}
        (Some(user), Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--password-file {path:?}: {e}"))?;
            opts.users.push((user, text.trim_end_matches(['\r', '\n']).to_string()));
        }
        (Some(_), None) => return Err("--user needs --password-file".into()),
        (None, Some(_)) => return Err("--password-file needs --user (a non-empty name)".into()),
    }
    Ok(opts)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ridondato-mongo-peer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ridondato-mongo-peer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handle = match serve(opts).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("ridondato-mongo-peer: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("ridondato-mongo-peer: listening on {} as {}", handle.addr(), handle.host());
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ridondato-mongo-peer: cannot watch SIGTERM: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}
