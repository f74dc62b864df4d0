//! Member-to-member connections. A partition cuts them here (outbound) and in the command
//! handlers (inbound, by the `from` field every internal command carries). With users
//! configured, each new connection first authenticates with SCRAM-SHA-256 as the first user
//! ([`Auth::login`](crate::auth::Auth::login)), where mongod would use its keyFile.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bson::Document;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::member::Member;
use crate::wire;

#[derive(Debug)]
pub struct Link {
    pub host: String,
    conn: Mutex<Option<TcpStream>>,
    next_id: AtomicI32,
}

fn unreachable(host: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, format!("{host} is partitioned away"))
}

impl Link {
    pub fn new(host: &str) -> Self {
        Link { host: host.to_string(), conn: Mutex::new(None), next_id: AtomicI32::new(1) }
    }

    /// One command; any failure drops the connection so the next call reconnects.
    pub async fn call(&self, member: &Member, cmd: &Document, timeout: Duration) -> io::Result<Document> {
        if member.is_partitioned(&self.host) {
            *self.conn.lock().await = None;
            return Err(unreachable(&self.host));
        }
        let mut guard = self.conn.lock().await;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let res = tokio::time::timeout(timeout, async {
            if guard.is_none() {
                let mut s = TcpStream::connect(&self.host).await?;
                s.set_nodelay(true)?;
                // With users configured, a fresh connection logs in before its first command.
                member.auth.login(&mut s, &self.next_id).await?;
                *guard = Some(s);
            }
            match guard.as_mut() {
                Some(s) => wire::call(s, id, cmd).await,
                None => Err(io::Error::other("no connection")),
            }
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "member call timed out")));
        if res.is_err() || member.is_partitioned(&self.host) {
            *guard = None;
        }
        if member.is_partitioned(&self.host) {
            return Err(unreachable(&self.host));
        }
        res
    }
}
