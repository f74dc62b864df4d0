//! `ridondato lab-frame`: sends one authenticated node-to-node frame (a harmless switch-over
//! request) to a daemon, optionally forged or repeated, so that the lab can check that forged and
//! replayed frames are refused.

use crate::args::LabFrameArgs;
use ridondato_adapters::auth_codec::{AuthCodec, Key};
use ridondato_adapters::MessageCodec;
use ridondato_core::{Message, NodeId};
use std::net::SocketAddr;

pub fn run(a: &LabFrameArgs) -> Result<(), String> {
    let (secret, from, to, dest, forge, repeat, bind) = (&a.secret, a.from, a.to, a.dest, a.forge, a.repeat, a.bind);
    let (save, replay) = (a.save.clone(), a.replay.clone());
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
