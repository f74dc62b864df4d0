//! The local control channel: a Unix socket, one JSON request per connection, one JSON answer.
//! Access is the socket file's permissions (0600, root); the HTTP API (later) adds tokens.

use ridondato_adapters::{CloudIp, DriverHandle};
use ridondato_core::{Command, NodeId, Status};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Status,
    Command(Command),
    /// `cloud move-ip`: associate the public IP with that node's instance and read it back.
    CloudMoveIp(NodeId),
    /// Who holds the public IP, read from the cloud API now.
    CloudHolder,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The node's status, and the datagrams refused since start by reason.
    Status(Box<Status>, std::collections::BTreeMap<String, u64>),
    Reply(Result<String, String>),
    /// The request could not be understood.
    BadRequest(String),
}

/// Connections answered at once; more wait in the kernel's backlog. A local flood cannot take
/// the daemon's file descriptors this way, and the operator's next call still gets through.
const MAX_CONNECTIONS: usize = 32;
/// A connection must send its request within this (one line); a silent one is dropped.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);

/// Serves requests for as long as the daemon runs: an accept error (out of file descriptors,
/// say) is logged and retried after a pause, never the end of the control channel. Bad
/// requests get an answer naming what is wrong.
pub async fn serve(path: &Path, handle: DriverHandle, cloud: Option<Arc<dyn CloudIp>>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run would make bind fail (config validation made sure this
    // path is not a regular file).
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    set_private(path)?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut errors = ridondato_adapters::accept::AcceptErrors::new("control socket");
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return Ok(()) };
        let Some((stream, _)) = errors.check(listener.accept().await).await else { continue };
        let h = handle.clone();
        let c = cloud.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(stream, h, c).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

async fn answer(stream: tokio::net::UnixStream, h: DriverHandle, cloud: Option<Arc<dyn CloudIp>>) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    // Who asks (the kernel's word, SO_PEERCRED): every command is audited with it.
    let caller = stream
        .peer_cred()
        .map(|c| format!("uid {} pid {}", c.uid(), c.pid().map_or("?".into(), |p| p.to_string())))
        .unwrap_or_else(|_| "unknown caller".into());
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r.take(64 * 1024));
    tokio::time::timeout(REQUEST_WITHIN, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 5 s"))??;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::BadRequest(format!("not a control request: {e}")),
        Ok(Request::Status) => match h.status.borrow().clone() {
            Some(s) => Response::Status(Box::new(s), h.stats.drops.totals()),
            None => Response::Reply(Err("the node is starting".into())),
        },
        Ok(Request::Command(cmd)) => {
            tracing::info!("operator command from {caller}: {cmd:?}");
            let reply = h.command(cmd).await;
            match &reply {
                Ok(m) => tracing::info!("operator command from {caller}: done: {m}"),
                Err(e) => tracing::info!("operator command from {caller}: refused: {e}"),
            }
            Response::Reply(reply)
        }
        Ok(Request::CloudMoveIp(to)) => {
            tracing::info!("operator command from {caller}: cloud move-ip to {to}");
            let reply = match &cloud {
                None => Err("this node is not in cloud mode".to_string()),
                Some(c) => move_ip(c.as_ref(), to).await,
            };
            match &reply {
                Ok(m) => tracing::info!("operator command from {caller}: done: {m}"),
                Err(e) => tracing::warn!("operator command from {caller}: failed: {e}"),
            }
            Response::Reply(reply)
        }
        Ok(Request::CloudHolder) => Response::Reply(match &cloud {
            None => Err("this node is not in cloud mode".to_string()),
            Some(c) => c.holder().await.map(|h| h.map_or("none".to_string(), |n| n.0.to_string())).map_err(|e| e.0),
        }),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

/// Moves the public IP and proves it by reading the association back.
async fn move_ip(c: &dyn CloudIp, to: NodeId) -> Result<String, String> {
    c.associate(to).await.map_err(|e| e.0)?;
    match c.holder().await.map_err(|e| e.0)? {
        Some(n) if n == to => Ok(format!("the public IP is associated with node {} (read back from the API)", to.0)),
        other => Err(format!("the API accepted the move but reads the public IP as held by {other:?}")),
    }
}

/// Client side: one request, one answer. A status must come within 5 s; a command within
/// 60 s (a switch-over waits for the peer to catch up). A daemon that does not answer in time,
/// or a socket only root may open, gets a message that says so.
pub fn request(path: &Path, req: &Request) -> Result<Response, String> {
    let within = match req {
        Request::Status => Duration::from_secs(5),
        Request::Command(_) | Request::CloudMoveIp(_) | Request::CloudHolder => Duration::from_secs(60),
    };
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!("permission denied on {}: the control socket is root's; run this as root", path.display()),
        _ => format!("cannot reach the daemon at {}: {e} (is `ridondato run` running?)", path.display()),
    })?;
    let _ = s.set_read_timeout(Some(within));
    let _ = s.set_write_timeout(Some(within));
    let late = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("the daemon did not answer within {} s (it may be hung or overloaded; see its log)", within.as_secs())
        }
        _ => format!("talking to the daemon: {e}"),
    };
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(late)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(late)?;
    if answer.is_empty() {
        return Err("the daemon closed the connection without an answer (is it shutting down?)".into());
    }
    serde_json::from_str(&answer).map_err(|e| format!("the daemon's answer is not understood: {e}"))
}
