//! Starting peers in-process and polling them, for the driver tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::Client;
use ridondato_mongo_peer::{serve, PeerHandle, PeerOptions};

pub type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("ridondato-mongo-peer-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub async fn start(dir: &Path, bind: SocketAddr, rate: u64) -> R<PeerHandle> {
    let mut opts = PeerOptions::new(bind, "rs0", dir);
    opts.initial_sync_bytes_per_sec = rate;
    Ok(serve(opts).await?)
}

pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn direct(addr: SocketAddr) -> R<Client> {
    Ok(Client::with_uri_str(format!("mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500")).await?)
}

pub async fn set_client(a: SocketAddr, b: SocketAddr, extra: &str) -> R<Client> {
    Ok(Client::with_uri_str(format!("mongodb://{a},{b}/?replicaSet=rs0&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=15000{extra}")).await?)
}

pub async fn admin(c: &Client, cmd: Document) -> mongodb::error::Result<Document> {
    c.database("admin").run_command(cmd).await
}

/// The server's error code, wherever the driver put it.
pub fn code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(im) => im.write_errors.as_ref().and_then(|w| w.first()).map(|w| w.code),
        _ => None,
    }
}

/// Polls `probe` every 25 ms until it yields a value or `secs` pass.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> R<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn status(c: &Client) -> Option<Document> {
    admin(c, doc! {"replSetGetStatus": 1, "initialSync": 1}).await.ok()
}

pub fn member<'a>(status: &'a Document, host: &str) -> Option<&'a Document> {
    status.get_array("members").ok()?.iter().filter_map(Bson::as_document).find(|m| m.get_str("name") == Ok(host))
}

pub fn config(a: &str, b: &str, version: i32, a_votes: i32) -> Document {
    let b_votes = 1 - a_votes;
    doc! { "_id": "rs0", "version": version, "members": [
        { "_id": 0, "host": a, "votes": a_votes, "priority": a_votes },
        { "_id": 1, "host": b, "votes": b_votes, "priority": b_votes },
    ] }
}

/// Waits until `c`'s member sees A primary and B secondary.
pub async fn primary_and_secondary(c: &Client, a_host: &str, b_host: &str) -> R {
    wait_for("A primary, B secondary", 10, || async {
        let s = status(c).await?;
        let ok = member(&s, a_host)?.get_i32("state") == Ok(1) && member(&s, b_host)?.get_i32("state") == Ok(2);
        ok.then_some(())
    })
    .await
}

/// Kills a spawned binary however the test ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two members: A votes 1 / priority 1, B votes 0 / priority 0; returns once A is primary and
/// B secondary.
pub struct Pair {
    pub a: Option<PeerHandle>,
    pub b: Option<PeerHandle>,
    pub a_addr: SocketAddr,
    pub b_addr: SocketAddr,
    pub a_dir: PathBuf,
    pub b_dir: PathBuf,
    pub a_host: String,
    pub b_host: String,
}

impl Pair {
    pub async fn start(tag: &str, b_rate: u64) -> R<Pair> {
        let (a_dir, b_dir) = (fresh_dir(&format!("{tag}-a")), fresh_dir(&format!("{tag}-b")));
        let a = start(&a_dir, any_port(), 0).await?;
        let b = start(&b_dir, any_port(), b_rate).await?;
        let (a_host, b_host) = (a.host().to_string(), b.host().to_string());
        let (a_addr, b_addr) = (a.addr(), b.addr());
        let ca = direct(a_addr).await?;
        admin(&ca, doc! {"replSetInitiate": config(&a_host, &b_host, 1, 1)}).await?;
        primary_and_secondary(&ca, &a_host, &b_host).await?;
        Ok(Pair { a: Some(a), b: Some(b), a_addr, b_addr, a_dir, b_dir, a_host, b_host })
    }

    pub fn a(&self) -> &PeerHandle {
        self.a.as_ref().expect("A is running")
    }

    pub fn b(&self) -> &PeerHandle {
        self.b.as_ref().expect("B is running")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.a.take();
        self.b.take();
        let _ = std::fs::remove_dir_all(&self.a_dir);
        let _ = std::fs::remove_dir_all(&self.b_dir);
    }
}

/// Waits until B has applied everything A has.
pub async fn caught_up(a: &Client, b: &Client) -> R {
    wait_for("B to catch up with A", 10, || async {
        let (sa, sb) = (status(a).await?, status(b).await?);
        let applied = |s: &Document| s.get_document("optimes").ok()?.get("appliedOpTime").cloned();
        (applied(&sa)? == applied(&sb)?).then_some(())
    })
    .await
}

/// One OP_MSG command on a fresh connection, without the driver's read-preference handling.
/// With the moreToCome flag (2) no reply is expected; `follow_up` is then sent on the same
/// connection and its reply returned.
pub async fn raw(addr: SocketAddr, cmd: Document, flags: u32, follow_up: Option<Document>) -> R<Document> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let frame = |d: &Document, flags: u32, id: i32| -> R<Vec<u8>> {
        let mut body = Vec::new();
        d.to_writer(&mut body)?;
        let mut out = Vec::new();
        out.extend_from_slice(&((21 + body.len()) as i32).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&2013i32.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&body);
        Ok(out)
    };
    s.write_all(&frame(&cmd, flags, 1)?).await?;
    if let Some(next) = follow_up {
        s.write_all(&frame(&next, 0, 2)?).await?;
    }
    let mut header = [0u8; 16];
    s.read_exact(&mut header).await?;
    let len = i32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut body = vec![0u8; len - 16];
    s.read_exact(&mut body).await?;
    Ok(Document::from_reader(&body[5..])?)
}
