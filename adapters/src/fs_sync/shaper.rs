//! The bandwidth cap (S7, S9) for all file traffic, real-time and resync together. rsync's own
//! `--bwlimit` holds the average but sends in bursts; every rsync connection here instead goes
//! through a local relay whose bytes, both directions, draw from one token bucket with a small
//! burst, so the cap also holds in every 1-second window.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A token bucket in nanoseconds of a caller-supplied clock: pure, so its guarantee (at most
/// `rate * t + burst` bytes over any span `t`) is tested on virtual time.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    /// `rate` in bytes per second; the burst is 20 ms worth, at least one 4 KiB chunk.
    pub fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        let burst = (rate / 50.0).max(4096.0);
        Bucket { rate, burst, tokens: burst, last_ns: 0 }
    }

    /// The largest chunk worth asking for at once.
    pub fn chunk(&self) -> usize {
        (self.burst as usize).clamp(1024, 16 * 1024)
    }

    /// Takes `n` bytes at `now_ns` and says how long to wait before sending them. The debt is
    /// taken at once, so callers queue in order and the sum never runs ahead of the rate.
    pub fn reserve(&mut self, now_ns: u64, n: usize) -> u64 {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            0
        } else {
            ((-self.tokens) / self.rate * 1e9).ceil() as u64
        }
    }
}

/// The bucket shared by every relayed connection of one node.
#[derive(Debug)]
pub struct Shaper {
    bucket: Mutex<Bucket>,
    epoch: Instant,
    /// Bytes relayed so far, both directions (the status and the benchmark read it).
    pub bytes: std::sync::atomic::AtomicU64,
}

impl Shaper {
    pub fn new(rate_bytes: u64) -> Arc<Shaper> {
        Arc::new(Shaper { bucket: Mutex::new(Bucket::new(rate_bytes)), epoch: Instant::now(), bytes: Default::default() })
    }

    fn chunk(&self) -> usize {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).chunk()
    }

    async fn take(&self, n: usize) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let wait = self.bucket.lock().unwrap_or_else(|p| p.into_inner()).reserve(now, n);
        if wait > 0 {
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
        self.bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Our rsync runs a transfer or two at a time (a push, a resync pull); anything beyond this is
/// not ours and must not eat the daemon's file descriptors.
const MAX_RELAY_CONNECTIONS: usize = 16;
/// A relayed connection with no byte in either direction for this long is dropped.
const RELAY_IDLE: Duration = Duration::from_secs(300);

/// Whether the loopback connection from `from` to our listener `to` belongs to a process of
/// this daemon's own user (root), as the kernel says. Any other local user is refused, so no
/// unprivileged process can use the relay to reach the peer, nor fill it.
fn same_user(from: SocketAddr, to: SocketAddr) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return false };
    super::peer_uid::owner(from, to).is_ok_and(|uid| uid == me)
}

/// A loopback listener relaying each connection to `target` through a shaper. rsync is pointed
/// at `addr`. Dropping it ends the listener and every connection.
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Why the last connection to the target failed, if it did: rsync itself only sees its
    /// connection to us reset, which tells an operator nothing.
    unreachable: Arc<Mutex<Option<String>>>,
}

impl Relay {
    pub async fn start(target: SocketAddr, shaper: Arc<Shaper>) -> std::io::Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let unreachable: Arc<Mutex<Option<String>>> = Default::default();
        let (held, why) = (conns.clone(), unreachable.clone());
        let accept = tokio::spawn(async move {
            let mut errors = crate::accept::AcceptErrors::new("file sync relay");
            loop {
                let Some((client, from)) = errors.check(listener.accept().await).await else { continue };
                // Only our own rsync (same user as this daemon) may go through to the peer.
                if !same_user(from, addr) {
                    tracing::debug!("file sync relay: refused a connection from {from}, not this daemon's user");
                    continue;
                }
                let mut c = held.lock().unwrap_or_else(|p| p.into_inner());
                c.retain(|t| !t.is_finished());
                if c.len() >= MAX_RELAY_CONNECTIONS {
                    tracing::warn!("file sync relay: {MAX_RELAY_CONNECTIONS} connections open, refusing one more");
                    continue;
                }
                let (shaper, why) = (shaper.clone(), why.clone());
                c.push(tokio::spawn(async move {
                    if let Err(e) = pipe(client, target, shaper, &why).await {
                        tracing::debug!("file sync relay to {target}: {e}");
                    }
                }));
            }
        });
        Ok(Relay { addr, accept, conns, unreachable })
    }

    /// The reason the target could not be reached on the last attempt, if it could not.
    pub fn unreachable(&self) -> Option<String> {
        self.unreachable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops every connection now. Killing an rsync is not enough to stop its transfer: what it
    /// wrote into its socket before dying would still trickle through, under the cap, and could
    /// complete a file on the peer after this node was told to stop.
    pub fn cut(&self) {
        for t in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pipe(client: tokio::net::TcpStream, target: SocketAddr, shaper: Arc<Shaper>, why: &Mutex<Option<String>>) -> std::io::Result<()> {
    let socket = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // Small kernel buffers: what the peer may push ahead of the bucket on a pull is bounded by
    // the receive window, and what sits unsent on a push by the send buffer.
    socket.set_recv_buffer_size(64 * 1024)?;
    socket.set_send_buffer_size(64 * 1024)?;
    let upstream = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 5 s"))
        .and_then(|r| r);
    *why.lock().unwrap_or_else(|p| p.into_inner()) = upstream.as_ref().err().map(|e| format!("the peer's rsync daemon at {target} is unreachable: {e}"));
    let upstream = upstream?;
    upstream.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let activity = Activity { start: std::time::Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) };
    let up = copy(cr, uw, shaper.clone(), &activity);
    let down = copy(ur, cw, shaper, &activity);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// When either direction of a relayed connection last moved a byte.
struct Activity {
    start: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shaper: Arc<Shaper>,
    activity: &Activity,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; shaper.chunk()];
    loop {
        // One direction may be quiet for long (a big file going the other way under the cap):
        // only both quiet for RELAY_IDLE ends the connection.
        let n = loop {
            match tokio::time::timeout(RELAY_IDLE, from.read(&mut buf)).await {
                Ok(r) => break r?,
                Err(_) if activity.idle() < RELAY_IDLE => continue,
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no byte either way for 300 s")),
            }
        };
        activity.touch();
        if n == 0 {
            return to.shutdown().await;
        }
        shaper.take(n).await;
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;

    /// Greedy senders asking for random chunks: over every 1-second window of virtual time the
    /// bytes released stay within the rate plus the burst (+2 %), and the long-run average is
    /// the rate.
    #[test]
    fn no_window_runs_over_the_cap() {
        for rate in [500 * 1024u64, 5000 * 1024, 100 * 1024 * 1024] {
            let mut b = Bucket::new(rate);
            let mut now = 0u64;
            let mut released: Vec<(u64, u64)> = Vec::new();
            let mut x = 7u64;
            while now < 20_000_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let n = 1 + (x >> 33) as usize % b.chunk();
                let wait = b.reserve(now, n);
                now += wait;
                released.push((now, n as u64));
            }
            let total: u64 = released.iter().map(|r| r.1).sum();
            let avg = total as f64 / (now as f64 / 1e9);
            assert!((avg / rate as f64 - 1.0).abs() < 0.01, "rate {rate}: average {avg}");
            let (mut lo, mut sum, mut max) = (0usize, 0u64, 0u64);
            for hi in 0..released.len() {
                sum += released[hi].1;
                while released[hi].0 - released[lo].0 >= 1_000_000_000 {
                    sum -= released[lo].1;
                    lo += 1;
                }
                max = max.max(sum);
            }
            assert!(max as f64 <= rate as f64 * 1.021 + 4096.0, "rate {rate}: a window held {max}");
        }
    }

    #[test]
    fn idle_time_does_not_bank_more_than_the_burst() {
        let mut b = Bucket::new(1_000_000);
        assert_eq!(b.reserve(0, 20_000), 0);
        // An hour idle, then a big ask: only 20 ms worth is free.
        let wait = b.reserve(3_600_000_000_000, 1_000_000);
        assert!((970_000_000..=990_000_000).contains(&wait), "{wait}");
    }
}
