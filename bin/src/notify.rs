//! systemd integration without libsystemd: `READY=1` once the node runs, `WATCHDOG=1` at half
//! the watchdog interval while the driver loop keeps answering.

use ridondato_adapters::DriverHandle;
use std::time::Duration;

fn send(msg: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let r = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = r {
        tracing::debug!("sd_notify {msg}: {e}");
    }
}

/// READY once the first status exists; WATCHDOG only while the status keeps changing time,
/// so a stuck driver loop lets systemd restart us.
pub fn spawn(handle: DriverHandle) {
    tokio::spawn(async move {
        let mut rx = handle.status.clone();
        while rx.borrow().is_none() {
            if rx.changed().await.is_err() {
                return;
            }
        }
        send("READY=1");
        let Some(usec) = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse::<u64>().ok()) else { return };
        let every = Duration::from_micros(usec / 2);
        let mut last = None;
        loop {
            tokio::time::sleep(every).await;
            let now = rx.borrow().as_ref().map(|s| s.now);
            if now != last {
                send("WATCHDOG=1");
                last = now;
            }
        }
    });
}
