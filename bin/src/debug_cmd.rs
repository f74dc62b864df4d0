//! `ridondato lab-frame`: sends one authenticated node-to-node frame (a harmless switch-over
//! request) to a daemon, optionally forged or repeated, so that the lab can check that forged and
//! replayed frames are refused.

use ridondato_adapters::auth_codec::{AuthCodec, Key};
use ridondato_adapters::MessageCodec;
use ridondato_core::{Message, NodeId};
use std::net::SocketAddr;

const USAGE: &str = "usage: ridondato lab-frame --secret FILE --from ID --to ID --dest IP:PORT [--forge] [--repeat N]";

pub fn run(args: &[String]) -> Result<(), String> {
    let (mut secret, mut from, mut to, mut dest, mut forge, mut repeat) = (None, None, None, None, false, 1u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--secret" => secret = Some(val()?),
            "--from" => from = Some(val()?.parse::<u8>().map_err(|_| "--from: not a node id")?),
            "--to" => to = Some(val()?.parse::<u8>().map_err(|_| "--to: not a node id")?),
            "--dest" => dest = Some(val()?.parse::<SocketAddr>().map_err(|_| "--dest: expected IP:PORT")?),
            "--repeat" => repeat = val()?.parse().map_err(|_| "--repeat: not a number")?,
            "--forge" => forge = true,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let (Some(secret), Some(from), Some(to), Some(dest)) = (secret, from, to, dest) else { return Err(USAGE.into()) };
    let key = if forge { Key::from_secret(b"not the cluster secret, forged")? } else { Key::from_file(std::path::Path::new(&secret))? };
    let codec = AuthCodec::starting_now(key, from, to);
    let frame = codec.seal(&Message::SwitchoverRequest { from: NodeId(from), epoch: 0 });
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    for _ in 0..repeat {
        sock.send_to(&frame, dest).map_err(|e| format!("sending to {dest}: {e}"))?;
    }
    println!("sent {repeat} frame(s) of {} bytes to {dest}{}", frame.len(), if forge { " (forged)" } else { "" });
    Ok(())
}
