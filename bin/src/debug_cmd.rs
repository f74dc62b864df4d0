//! `ridondato lab-frame`: sends one authenticated node-to-node frame (a harmless switch-over
//! request) to a daemon, optionally forged or repeated, so that the lab can check that forged and
//! replayed frames are refused.

use ridondato_adapters::auth_codec::{AuthCodec, Key};
use ridondato_adapters::MessageCodec;
use ridondato_core::{Message, NodeId};
use std::net::SocketAddr;

const USAGE: &str =
    "usage: ridondato lab-frame --secret FILE --from ID --to ID --dest IP:PORT [--forge] [--repeat N] [--bind IP:PORT --save FILE] [--replay FILE]";

pub fn run(args: &[String]) -> Result<(), String> {
    let (mut secret, mut from, mut to, mut dest, mut forge, mut repeat) = (None, None, None, None, false, 1u32);
    let (mut bind, mut save, mut replay) = (None, None, None);
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
            "--bind" => bind = Some(val()?.parse::<SocketAddr>().map_err(|_| "--bind: expected IP:PORT")?),
            "--save" => save = Some(val()?),
            "--replay" => replay = Some(val()?),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let (Some(secret), Some(from), Some(to), Some(dest)) = (secret, from, to, dest) else { return Err(USAGE.into()) };
    if let Some(file) = replay {
        // A frame captured earlier, sent again byte for byte.
        let frame = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.send_to(&frame, dest).map_err(|e| format!("sending to {dest}: {e}"))?;
        println!("replayed {} bytes from {file} to {dest}", frame.len());
        return Ok(());
    }
    let key = if forge { Key::from_secret(b"not the cluster secret, forged")? } else { Key::from_file(std::path::Path::new(&secret))? };
    // A run of its own: it addresses the receiver's run once it has heard it (with --bind, on
    // the port the receiver sends to), else its frames are hellos.
    let codec = AuthCodec::new(key, from, to)?;
    let sock = std::net::UdpSocket::bind(bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))).map_err(|e| e.to_string())?;
    if bind.is_some() {
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        while !codec.knows_peer() {
            let (n, _) = sock.recv_from(&mut buf).map_err(|e| format!("waiting for a frame of node {to}: {e}"))?;
            let _ = codec.open(&buf[..n]);
        }
    }
    let frame = codec.seal(&Message::SwitchoverRequest { from: NodeId(from), epoch: 0 });
    for _ in 0..repeat {
        sock.send_to(&frame, dest).map_err(|e| format!("sending to {dest}: {e}"))?;
    }
    if let Some(file) = save {
        std::fs::write(&file, &frame).map_err(|e| format!("{file}: {e}"))?;
    }
    println!("sent {repeat} frame(s) of {} bytes to {dest}{}", frame.len(), if forge { " (forged)" } else { "" });
    Ok(())
}
