//! The local control channel: a Unix socket, one JSON request per connection, one JSON answer.
//! Access is the socket file's permissions (0600, root); the HTTP API (later) adds tokens.

use ridondato_adapters::DriverHandle;
use ridondato_core::{Command, Status};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Status,
    Command(Command),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Status(Box<Status>),
    Reply(Result<String, String>),
    /// The request could not be understood.
    BadRequest(String),
}

/// Serves requests until the listener fails. Bad requests get an answer naming what is wrong.
pub async fn serve(path: &Path, handle: DriverHandle) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    set_private(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let h = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, h).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

async fn answer(stream: tokio::net::UnixStream, h: DriverHandle) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r.take(64 * 1024));
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::BadRequest(format!("not a control request: {e}")),
        Ok(Request::Status) => match h.status.borrow().clone() {
            Some(s) => Response::Status(Box::new(s)),
            None => Response::Reply(Err("the node is starting".into())),
        },
        Ok(Request::Command(cmd)) => Response::Reply(h.command(cmd).await),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

/// Client side: one request, one answer, with a timeout long enough for a switch-over.
pub fn request(path: &Path, req: &Request) -> Result<Response, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("cannot reach the daemon at {}: {e} (is `ridondato run` running?)", path.display()))?;
    let timeout = Some(Duration::from_secs(60));
    let _ = s.set_read_timeout(timeout);
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| format!("sending to the daemon: {e}"))?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(|e| format!("reading the daemon's answer: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("the daemon's answer is not understood: {e}"))
}
