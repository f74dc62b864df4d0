//! The etcd lease arbiter (B11): the Master holds a leader key attached to a lease it keeps
//! alive; a Slave takes over only by creating that key, which it can do only once the lease has
//! expired; a Master that cannot refresh its lease in time steps down before the lease can
//! expire for the others.
//!
//! Why etcd and why this shape. Two nodes alone cannot tell a dead peer from a cut link; a
//! third party with linearizable writes settles it. etcd provides exactly the two primitives
//! needed:
//!
//! - Leases (<https://etcd.io/docs/v3.4/learning/api/#lease-api>): a lease is granted with a
//!   TTL and lives as long as its holder keeps it alive; when it expires or is revoked, every
//!   key attached to it is deleted. The leader key therefore disappears by itself when the
//!   Master dies or is cut off from the etcd quorum, and nobody has to delete it.
//! - Transactions (<https://etcd.io/docs/v3.4/learning/api/#transaction>): `if
//!   create_revision(key) == 0 then put else get` is an atomic create-if-absent (a key that
//!   does not exist has create revision 0), so of two contenders exactly one creates the key,
//!   and the other learns who holds it in the same round trip.
//!
//! The model is Patroni's DCS leader key (its etcd3 backend, `patroni/dcs/etcd3.py`): a
//! `leader` key under the cluster's prefix naming the leader, attached to a lease of `ttl`,
//! created with a `create_revision == 0` transaction and kept alive by the leader on every
//! loop; a leader that cannot update it within its retry budget demotes itself, under
//! Patroni's rule `loop_wait + 2 * retry_timeout <= ttl`
//! (<https://patroni.readthedocs.io/en/latest/dynamic_configuration.html>).
//!
//! The key is `{prefix}/leader`; its value is `node=<u8> epoch=<u64>` in exactly that text
//! (canonical decimal, one space), parsed strictly: anything else under the key is an error
//! naming the value, never a guess.
//!
//! # Timing: when the Master must step down
//!
//! Let `t0` be the local monotonic instant just before the last successful [`EtcdArbiter::refresh`]
//! (or winning [`EtcdArbiter::acquire`]) was *started*. etcd's leader renewed the lease at some
//! moment after `t0`, so the lease cannot expire before `t0 + TTL` as counted by the etcd
//! leader's clock. The Master must have stopped acting as Master before then, so it steps down
//! at `t0 + TTL - margin` with
//!
//! `margin = op_timeout + max(TTL / 1000, 100 ms)`
//!
//! - `op_timeout`: a refresh in flight at the deadline may only report its failure up to
//!   `op_timeout` later; that much of the TTL is reserved. If the caller runs the deadline as
//!   its own timer (recommended), this term is the time the demotion itself has to complete.
//! - `max(TTL / 1000, 100 ms)`: clock-rate differences between this host and the etcd leader
//!   (NTP slews at most 500 ppm; quartz drifts about 100 ppm, so 0.1 % is generous), with a
//!   100 ms floor for scheduling delays.
//!
//! For the default TTL 5 s and op_timeout 1 s: margin = 1 s + 100 ms = 1.1 s, so the Master
//! steps down 3.9 s after the start of its last successful refresh. It refreshes every 1 s
//! (at most `(TTL - margin - op_timeout) / 2` = 1.45 s, so that two attempts fit before the
//! deadline, as in Patroni's rule), tolerating two failed refreshes in a row.
//! [`EtcdConfig::step_down_margin`] and [`EtcdConfig::step_down_after`] compute these numbers.
//!
//! The Slave's side only ever waits longer than the TTL, which is safe: the etcd leader checks
//! for expired leases every 500 ms, so the key disappears between TTL and about TTL + 0.5 s
//! after the last keep-alive (the tests measure +100 to +215 ms); a change of etcd leader
//! restarts every lease at TTL plus an election timeout (etcd-io/etcd#4778), so during an etcd
//! election the Slave waits a few seconds more. etcd may also raise a TTL below its minimum (1.5 × election timeout, rounded
//! up: 2 s with the default 1 s election timeout); [`EtcdArbiter::refresh`] reports the TTL
//! etcd actually applies.
//!
//! One etcd-side case stays safe too: an etcd leader cut from its quorum keeps
//! renewing leases (renewals do not go through raft) until CheckQuorum steps it down, up to two
//! election timeouts `E` later (the tests measure about 1.9 s with `E` = 1 s). The majority side
//! cannot elect a new leader before `E` and that leader adds `E` to every lease (etcd-io/etcd#4778),
//! so the lease lives there until at least `partition + E + TTL + E`, while the Master steps
//! down by `partition + 2E + TTL - margin` at the latest.
//!
//! Caveat: etcd versions before the February 2024 backports (etcd-io/etcd#15247, #17465 for
//! 3.4) could let a stalled etcd leader revoke leases early, which would let the Slave take
//! the key while the Master still trusts its lease. Debian bookworm's 3.4.23 predates that fix;
//! production clusters should run a current 3.5/3.6.
//!
//! # Endpoints and failure
//!
//! etcd-client balances over its endpoints but does not fail over: a request routed to a dead
//! member fails (etcdv3/etcd-client#12, "it's your responsibility"). So each endpoint has its
//! own client, one of them is preferred (the last that answered) and an operation that gets no
//! answer from it tries the next, within one `op_timeout` for the whole operation (the
//! remaining time is split between the endpoints not yet tried, so one black-holed member
//! cannot eat it all). Requests carry etcd's `require leader` flag: a member cut from its
//! quorum answers "no leader" at once instead of serving stale state. Every method returns
//! within `op_timeout` (plus scheduling), with an error naming the operation, the key, and
//! each endpoint's failure.
//!
//! Retrying on another member is safe for every operation: a duplicated grant leaves an
//! unattached lease that expires on its own; a duplicated create transaction finds the key on a
//! lease of ours and counts as won; keep-alives and revokes are idempotent.
//!
//! [`EtcdArbiter::connect`] is lazy: without credentials it does no I/O at all (etcd-client
//! connects on first use), so a down etcd does not fail construction. With credentials,
//! etcd-client authenticates while connecting, so each endpoint's client is built on its first
//! use instead, within that operation's budget.
//!
//! TLS (optional, [`EtcdTls`]): the members' CA, and a client certificate where etcd asks for
//! one (`--client-cert-auth`), on rustls with the aws-lc-rs provider like the rest of the
//! workspace. One set of TLS options serves every endpoint, and the name checked is each
//! endpoint's host: an IP endpoint needs that IP in the member certificate's names.

use crate::traits::{AdapterError, AdapterResult};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Error as EtcdError, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};
use ridondato_core::{NodeId, Verdict};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How many leases granted by attempts that ended without an answer (timeouts) are remembered,
/// so that a key created by one of them is recognised as ours. Older ones expire by themselves.
const MAX_CANDIDATES: usize = 8;

#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://host:2379` or `host:2379`).
    pub endpoints: Vec<String>,
    /// The lease's time to live, in seconds (etcd's unit). 5 s is the usual choice.
    pub ttl_s: i64,
    /// The leader key is `{prefix}/leader`, e.g. prefix `/ridondato/<cluster>`.
    pub prefix: String,
    /// etcd user name and password (etcd's simple authentication).
    pub user: Option<(String, String)>,
    /// TLS to the members (`https://` endpoints); `None`: plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// The bound on each method, all endpoints and steps included.
    pub op_timeout: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: configs are logged at start-up.
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ttl_s", &self.ttl_s)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| format!("{u} (password hidden)")))
            .field("tls", &self.tls.as_ref().map(|t| if t.identity.is_some() { "CA and client certificate" } else { "CA" }))
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// TLS material, PEM-encoded, as read from the configured files.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (no system roots are trusted).
    pub ca: Vec<u8>,
    /// This node's certificate and private key, for members that verify clients.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("EtcdTls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

/// Which piece of the TLS material is unusable.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TlsPart {
    Ca,
    Certificate,
    Key,
}

impl std::fmt::Display for TlsPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsPart::Ca => "CA",
            TlsPart::Certificate => "client certificate",
            TlsPart::Key => "client key",
        })
    }
}

/// An endpoint whose scheme does not match the TLS configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemeMismatch {
    /// `http://` while TLS is configured.
    PlainWithTls(String),
    /// `https://` without the members' CA.
    SecureWithoutCa(String),
}

/// The one rule for endpoints and TLS, used by the configuration check (which names the field)
/// and by [`EtcdArbiter::connect`] alike: with TLS every endpoint is `https://` (or has no
/// scheme), without it none is.
pub fn scheme_mismatch(endpoints: &[String], tls: bool) -> Option<SchemeMismatch> {
    if tls {
        endpoints.iter().find(|e| e.starts_with("http://")).map(|e| SchemeMismatch::PlainWithTls(e.clone()))
    } else {
        endpoints.iter().find(|e| e.starts_with("https://")).map(|e| SchemeMismatch::SecureWithoutCa(e.clone()))
    }
}

impl EtcdTls {
    /// Material that cannot be used is refused here, by piece, rather than failing later as an
    /// unreadable handshake error (rustls ignores a CA file without certificates and reads a
    /// key only when connecting).
    pub fn check(&self) -> Result<(), (TlsPart, String)> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let holds_certificate = |pem: &[u8]| CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok());
        if !holds_certificate(&self.ca) {
            return Err((TlsPart::Ca, "holds no PEM certificate".into()));
        }
        if let Some((cert, key)) = &self.identity {
            if !holds_certificate(cert) {
                return Err((TlsPart::Certificate, "holds no PEM certificate".into()));
            }
            PrivateKeyDer::from_pem_slice(key).map_err(|e| (TlsPart::Key, format!("holds no usable PEM private key ({e})")))?;
        }
        Ok(())
    }

    fn options(&self) -> Result<etcd_client::TlsOptions, String> {
        self.check().map_err(|(part, why)| format!("the {part} file {why}"))?;
        let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        Ok(tls)
    }
}

impl EtcdConfig {
    /// The margin of the step-down rule (see the module documentation):
    /// `op_timeout + max(TTL / 1000, 100 ms)`.
    pub fn step_down_margin(&self) -> Duration {
        let ttl = Duration::from_secs(self.ttl_s.max(0) as u64);
        self.op_timeout + (ttl / 1000).max(Duration::from_millis(100))
    }

    /// How long after the *start* of its last successful refresh (or winning acquire) a Master
    /// must step down: `TTL - margin`, zero if the margin eats the whole TTL (a configuration
    /// [`EtcdArbiter::connect`] refuses).
    pub fn step_down_after(&self) -> Duration {
        Duration::from_secs(self.ttl_s.max(0) as u64).saturating_sub(self.step_down_margin())
    }

    /// The leader key.
    pub fn key(&self) -> String {
        format!("{}/leader", self.prefix.trim_end_matches('/'))
    }
}

/// The outcome of [`EtcdArbiter::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// We hold the leader key, on this lease, which [`EtcdArbiter::refresh`] now keeps alive.
    Won { lease_id: i64 },
    /// Someone holds it: the node and epoch written in the key. It may name this very node when
    /// the key is a leftover of a previous run of it (a restart within the TTL): that is not
    /// leadership, wait for it to expire.
    Held { node: u8, epoch: u64 },
}

/// The value stored under the leader key.
pub fn encode_value(node: u8, epoch: u64) -> String {
    format!("node={node} epoch={epoch}")
}

/// Parses a leader value strictly: exactly `node=<u8> epoch=<u64>`, canonical decimal.
pub fn parse_value(raw: &[u8]) -> Result<(u8, u64), String> {
    let text = String::from_utf8_lossy(raw);
    let shown: String = text.chars().take(80).collect();
    let shown = if text.chars().count() > 80 { format!("{shown}…") } else { shown };
    let bad = || format!("malformed leader value {shown:?}: expected \"node=<0-255> epoch=<integer>\"");
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    let mut words = s.split(' ');
    let (Some(n), Some(e), None) = (words.next(), words.next(), words.next()) else { return Err(bad()) };
    let digits = |w: &str, prefix: &str| w.strip_prefix(prefix).filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).map(str::to_owned);
    let node = digits(n, "node=").and_then(|d| d.parse::<u8>().ok()).ok_or_else(bad)?;
    let epoch = digits(e, "epoch=").and_then(|d| d.parse::<u64>().ok()).ok_or_else(bad)?;
    // Canonical only (no leading zeros): one holder, one spelling.
    if encode_value(node, epoch) != s {
        return Err(bad());
    }
    Ok((node, epoch))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    id: i64,
    ttl_s: i64,
}

#[derive(Debug, Default)]
struct State {
    /// The lease our leader key is attached to, as far as we know.
    held: Option<Lease>,
    /// Leases granted by acquisitions that got no answer to their transaction: the key may
    /// have been created on one of them.
    candidates: Vec<Lease>,
}

struct Member {
    url: String,
    client: OnceCell<Client>,
}

/// The leader key on an etcd lease (B11). `Send + Sync`; share it behind an `Arc`.
pub struct EtcdArbiter {
    cfg: EtcdConfig,
    key: String,
    options: ConnectOptions,
    members: Vec<Member>,
    /// The member that answered last, tried first.
    preferred: AtomicUsize,
    state: Mutex<State>,
}

impl std::fmt::Debug for EtcdArbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdArbiter").field("cfg", &self.cfg).field("key", &self.key).field("state", &*self.state()).finish()
    }
}

const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<EtcdArbiter>();
};

/// An answer from etcd that another member would give too: no point trying the next one.
fn definitive(e: &EtcdError) -> bool {
    match e {
        // gRPC codes: InvalidArgument 3, NotFound 5, AlreadyExists 6, PermissionDenied 7,
        // FailedPrecondition 9, OutOfRange 11, Unauthenticated 16. etcd's "no leader",
        // "leader changed" and "request timed out" are Unavailable (14): try another member.
        EtcdError::GRpcStatus(s) => matches!(s.code() as i32, 3 | 5 | 6 | 7 | 9 | 11 | 16),
        EtcdError::LeaseKeepAliveError(_) => lease_not_found(e),
        _ => false,
    }
}

/// etcd's answer for a lease that expired or was revoked (keep-alive: TTL 0; revoke: NotFound).
fn lease_not_found(e: &EtcdError) -> bool {
    match e {
        EtcdError::LeaseKeepAliveError(m) => m == "lease not found",
        EtcdError::GRpcStatus(s) => s.code() as i32 == 5 && s.message().contains("lease not found"),
        _ => false,
    }
}

fn one_line(e: &EtcdError) -> String {
    match e {
        // tonic's Display of a status includes empty details and metadata: the message is enough.
        EtcdError::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

impl EtcdArbiter {
    /// Checks the configuration and prepares one client per endpoint. Lazy: without a user no
    /// I/O happens here (a down etcd does not fail construction); with a user each endpoint
    /// authenticates on its first use.
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, String> {
        if cfg.endpoints.is_empty() {
            return Err("etcd arbiter: no endpoint configured".into());
        }
        if cfg.ttl_s <= 0 {
            return Err(format!("etcd arbiter: TTL {} s is not positive", cfg.ttl_s));
        }
        if cfg.op_timeout.is_zero() {
            return Err("etcd arbiter: op_timeout is zero".into());
        }
        if cfg.step_down_after().is_zero() {
            return Err(format!(
                "etcd arbiter: TTL {} s leaves nothing after the step-down margin {} ms (op_timeout {} ms): the Master would step down at once",
                cfg.ttl_s,
                cfg.step_down_margin().as_millis(),
                cfg.op_timeout.as_millis()
            ));
        }
        let mut options = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(cfg.op_timeout)
            .with_timeout(cfg.op_timeout)
            // HTTP/2 pings: a connection to a frozen or unplugged member is noticed and
            // re-established instead of holding every later request until it times out.
            .with_keep_alive(cfg.op_timeout, cfg.op_timeout);
        if let Some((user, password)) = &cfg.user {
            options = options.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
        }
        match scheme_mismatch(&cfg.endpoints, cfg.tls.is_some()) {
            Some(SchemeMismatch::PlainWithTls(e)) => return Err(format!("etcd endpoint {e}: TLS is configured, so the endpoints must be https://")),
            Some(SchemeMismatch::SecureWithoutCa(e)) => return Err(format!("etcd endpoint {e}: https:// needs the members' CA (TLS is not configured)")),
            None => {}
        }
        if let Some(tls) = &cfg.tls {
            options = options.with_tls(tls.options().map_err(|e| format!("etcd TLS: {e}"))?);
        }
        let mut members = Vec::with_capacity(cfg.endpoints.len());
        for url in &cfg.endpoints {
            let client = OnceCell::new();
            if cfg.user.is_none() {
                // No I/O without credentials: this only parses the URL and sets up the channel.
                let c = Client::connect([url.as_str()], Some(options.clone())).await.map_err(|e| format!("etcd endpoint {url}: {}", one_line(&e)))?;
                let _ = client.set(c);
            }
            members.push(Member { url: url.clone(), client });
        }
        Ok(Self { key: cfg.key(), cfg, options, members, preferred: AtomicUsize::new(0), state: Mutex::new(State::default()) })
    }

    /// The leader key this arbiter contends for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease our key is on, as far as we know (`None` after a release or a failed refresh).
    pub fn lease_id(&self) -> Option<i64> {
        self.state().held.map(|l| l.id)
    }

    /// The TTL etcd granted our lease: the configured one, or more if that was below etcd's
    /// minimum. The step-down rule may keep using the configured TTL (it is never longer).
    pub fn lease_ttl(&self) -> Option<Duration> {
        self.state().held.map(|l| Duration::from_secs(l.ttl_s.max(0) as u64))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` against the preferred member, then the others, until one answers or `deadline`.
    /// `Ok(Ok(_))`: success; `Ok(Err(e))`: a definitive answer from etcd (`e` for the caller to
    /// interpret); `Err(text)`: no member answered, each one's failure in `text`.
    async fn call<T, F, Fut>(&self, what: &str, deadline: Instant, f: F) -> Result<Result<T, EtcdError>, String>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let n = self.members.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let m = &self.members[i];
            let now = Instant::now();
            if now >= deadline {
                failures.push(format!("{}: not tried, out of time", m.url));
                continue;
            }
            // The time left, shared between the members not yet tried.
            let budget = (deadline - now) / (n - k) as u32;
            let attempt = async {
                let client = m.client.get_or_try_init(|| Client::connect([m.url.as_str()], Some(self.options.clone()))).await?.clone();
                f(client).await
            };
            match tokio::time::timeout(budget, attempt).await {
                Ok(Ok(v)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(Ok(v));
                }
                Ok(Err(e)) if definitive(&e) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(Err(e));
                }
                Ok(Err(e)) => failures.push(format!("{}: {}", m.url, one_line(&e))),
                Err(_) => failures.push(format!("{}: no answer within {} ms", m.url, budget.as_millis())),
            }
            tracing::debug!(what, key = %self.key, failure = %failures[failures.len() - 1], "etcd member failed, trying the next");
        }
        Err(format!("etcd {what} of {}: no member answered within {} ms: {}", self.key, self.cfg.op_timeout.as_millis(), failures.join("; ")))
    }

    fn refused(&self, what: &str, e: &EtcdError) -> String {
        format!("etcd {what} of {}: {}", self.key, one_line(e))
    }

    /// Revokes a lease we granted but do not need, within what is left of `deadline`; a failure
    /// only costs the lease's TTL (it holds no key), so it is logged, not returned.
    async fn revoke_quietly(&self, id: i64, deadline: Instant) {
        match self.call("lease revoke", deadline, |mut c| async move { c.lease_revoke(id).await }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if lease_not_found(&e) => {}
            Ok(Err(e)) => tracing::warn!(lease = format!("{id:x}"), error = %one_line(&e), "etcd: revoking an unused lease failed; it expires by itself"),
            Err(e) => tracing::warn!(lease = format!("{id:x}"), error = %e, "etcd: revoking an unused lease failed; it expires by itself"),
        }
    }

    /// Grants a lease of the configured TTL and creates the leader key on it if the key does
    /// not exist (`create_revision == 0`), else reads who holds it. A lease that did not win is
    /// revoked. Acquiring a key we already hold is `Won` (with its value rewritten if the epoch
    /// changed).
    pub async fn acquire(&self, node: u8, epoch: u64) -> Result<Acquire, String> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        let ttl = self.cfg.ttl_s;
        let grant = match self.call("acquire (lease grant)", deadline, |mut c| async move { c.lease_grant(ttl, None).await }).await? {
            Ok(g) => g,
            Err(e) => return Err(self.refused("acquire (lease grant)", &e)),
        };
        if grant.id() == 0 || grant.ttl() <= 0 {
            return Err(format!("etcd acquire (lease grant) of {}: lease {:x} with TTL {}: {}", self.key, grant.id(), grant.ttl(), grant.error()));
        }
        let new = Lease { id: grant.id(), ttl_s: grant.ttl() };
        {
            let mut st = self.state();
            st.candidates.push(new);
            if st.candidates.len() > MAX_CANDIDATES {
                st.candidates.remove(0);
            }
        }
        let value = encode_value(node, epoch);
        let key = self.key.clone();
        let txn = || {
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(new.id)))])
                .or_else([TxnOp::get(key.clone(), None)])
        };
        let resp = match self
            .call("acquire (create transaction)", deadline, |mut c| {
                let t = txn();
                async move { c.txn(t).await }
            })
            .await?
        {
            Ok(r) => r,
            Err(e) => {
                self.forget_candidate(new.id);
                self.revoke_quietly(new.id, deadline).await;
                return Err(self.refused("acquire (create transaction)", &e));
            }
        };
        if resp.succeeded() {
            self.adopt(new);
            return Ok(Acquire::Won { lease_id: new.id });
        }
        let kv = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        let Some(kv) = kv else {
            // The compare failed (the key existed) yet the read in the same revision found
            // nothing: not something etcd does.
            self.forget_candidate(new.id);
            self.revoke_quietly(new.id, deadline).await;
            return Err(format!("etcd acquire of {}: the key exists but the transaction returned no value", self.key));
        };
        // A key on one of our leases: ours already (held), or created by an earlier attempt of
        // ours whose answer was lost, or by this attempt on another member after a lost answer.
        let ours = {
            let st = self.state();
            st.held.into_iter().chain(st.candidates.iter().copied()).find(|l| l.id == kv.lease())
        };
        if let Some(lease) = ours {
            self.adopt(lease);
            if lease.id != new.id {
                self.forget_candidate(new.id);
                self.revoke_quietly(new.id, deadline).await;
            }
            if kv.value() != value.as_bytes() {
                self.relabel(&kv, lease, &value, deadline).await?;
            }
            return Ok(Acquire::Won { lease_id: lease.id });
        }
        self.forget_candidate(new.id);
        self.revoke_quietly(new.id, deadline).await;
        let (node, epoch) = parse_value(kv.value()).map_err(|e| format!("etcd acquire of {}: {e}", self.key))?;
        Ok(Acquire::Held { node, epoch })
    }

    /// Rewrites the value of a key we hold (a new epoch), only while it is still on our lease.
    async fn relabel(&self, kv: &KeyValue, lease: Lease, value: &str, deadline: Instant) -> Result<(), String> {
        let key = self.key.clone();
        let txn = || {
            Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, lease.id), Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())])
                .and_then([TxnOp::put(key.clone(), value.to_owned(), Some(PutOptions::new().with_lease(lease.id)))])
        };
        match self
            .call("acquire (rewrite value)", deadline, |mut c| {
                let t = txn();
                async move { c.txn(t).await }
            })
            .await?
        {
            Ok(r) if r.succeeded() => Ok(()),
            Ok(_) => Err(format!("etcd acquire (rewrite value) of {}: the key changed meanwhile", self.key)),
            Err(e) => Err(self.refused("acquire (rewrite value)", &e)),
        }
    }

    fn adopt(&self, lease: Lease) {
        let mut st = self.state();
        st.held = Some(lease);
        st.candidates.retain(|l| l.id != lease.id);
    }

    fn forget_candidate(&self, id: i64) {
        self.state().candidates.retain(|l| l.id != id);
    }

    /// One keep-alive of the held lease. Returns the TTL etcd reports (the lease now runs that
    /// long from when etcd's leader received the keep-alive, which is after this call started).
    /// An error if we hold no lease, if etcd says it expired or was revoked (then the key is gone
    /// and no longer ours: the lease is forgotten), or if no member answered in time.
    pub async fn refresh(&self) -> Result<Duration, String> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        let Some(lease) = self.state().held else {
            return Err(format!("etcd refresh of {}: no lease held (not acquired, released or lost)", self.key));
        };
        let id = lease.id;
        let r = self
            .call("refresh", deadline, |mut c| async move {
                // etcd-client's keep_alive sends one keep-alive and checks its answer (TTL > 0)
                // without returning it; a second one on the same stream gives the TTL.
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) => Ok(resp.ttl()),
                    None => Err(EtcdError::LeaseKeepAliveError("the keep-alive stream closed".into())),
                }
            })
            .await?;
        match r {
            Ok(ttl) if ttl > 0 => Ok(Duration::from_secs(ttl as u64)),
            Ok(_) => Err(self.lost(id)),
            Err(e) if lease_not_found(&e) => Err(self.lost(id)),
            Err(e) => Err(self.refused("refresh", &e)),
        }
    }

    fn lost(&self, id: i64) -> String {
        let mut st = self.state();
        if st.held.map(|l| l.id) == Some(id) {
            st.held = None;
        }
        format!("etcd refresh of {}: lease {id:x} expired or was revoked: the key is no longer ours", self.key)
    }

    /// Who holds the leader key: `(node, epoch)`, or `None` if nobody does. A linearizable read.
    pub async fn holder(&self) -> Result<Option<(u8, u64)>, String> {
        match self.read("holder").await? {
            None => Ok(None),
            Some(kv) => parse_value(kv.value()).map(Some).map_err(|e| format!("etcd holder of {}: {e}", self.key)),
        }
    }

    /// Whether the leader key holds exactly `node`/`epoch` on the lease we hold: what a Master
    /// can check before an irreversible step. A linearizable read.
    pub async fn still_leader(&self, node: u8, epoch: u64) -> Result<bool, String> {
        let kv = self.read("leadership check").await?;
        let held = self.state().held.map(|l| l.id);
        Ok(kv.is_some_and(|kv| Some(kv.lease()) == held && kv.value() == encode_value(node, epoch).as_bytes()))
    }

    async fn read(&self, what: &str) -> Result<Option<KeyValue>, String> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        let key = self.key.clone();
        match self
            .call(what, deadline, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?
        {
            Ok(mut r) => Ok(r.take_kvs().into_iter().next()),
            Err(e) => Err(self.refused(what, &e)),
        }
    }

    /// Revokes our lease, which deletes the leader key at once: a planned hand-over or a
    /// shutdown. Nothing held is success; so is a lease etcd no longer knows. On an error the
    /// lease stays recorded (a retry revokes it) and expires within the TTL anyway.
    pub async fn release(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.op_timeout;
        let (held, candidates) = {
            let mut st = self.state();
            (st.held.take(), std::mem::take(&mut st.candidates))
        };
        // Our key's lease first: the leftovers of timed-out attempts only get what time is left.
        let mut r = Ok(());
        if let Some(lease) = held {
            let id = lease.id;
            r = match self.call("release", deadline, |mut c| async move { c.lease_revoke(id).await }).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if lease_not_found(&e) => Ok(()),
                Ok(Err(e)) => Err(self.refused("release", &e)),
                Err(e) => Err(e),
            };
            if r.is_err() {
                self.state().held.get_or_insert(lease);
            }
        }
        for c in candidates {
            if Instant::now() < deadline {
                self.revoke_quietly(c.id, deadline).await;
            }
        }
        r
    }
}

/// The core's view: who holds the key after the call. A key that names this node but is not on
/// our lease (a previous run's, within its TTL) is no leadership: an error, so the promotion
/// is refused until it expires.
#[async_trait::async_trait]
impl crate::traits::Arbiter for EtcdArbiter {
    async fn may_take(&self, me: NodeId, epoch: u64) -> AdapterResult<Verdict> {
        self.take(me, epoch).await.map(|holder| Verdict::Lease { holder })
    }

    async fn may_keep(&self, me: NodeId, epoch: u64) -> AdapterResult<Verdict> {
        if self.lease_id().is_some() && EtcdArbiter::refresh(self).await.is_ok() {
            return Ok(Verdict::Lease { holder: Some((me, epoch)) });
        }
        // Not ours any more (expired during an etcd outage, or never taken): take it again if
        // it is free, else say who has it.
        self.take(me, epoch).await.map(|holder| Verdict::Lease { holder })
    }

    async fn release(&self) -> AdapterResult<()> {
        EtcdArbiter::release(self).await.map_err(AdapterError::new)
    }
}

impl EtcdArbiter {
    async fn take(&self, node: NodeId, epoch: u64) -> AdapterResult<Option<(NodeId, u64)>> {
        match EtcdArbiter::acquire(self, node.0, epoch).await.map_err(AdapterError::new)? {
            Acquire::Won { .. } => Ok(Some((node, epoch))),
            Acquire::Held { node: n, .. } if n == node.0 => {
                Err(AdapterError::new(format!("the etcd leader key is a leftover of a previous run of {node}: waiting for its lease to expire")))
            }
            Acquire::Held { node: n, epoch: e } => Ok(Some((NodeId(n), e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_anything_else_is_refused_by_name() {
        assert_eq!(encode_value(1, 7), "node=1 epoch=7");
        assert_eq!(parse_value(b"node=1 epoch=7"), Ok((1, 7)));
        assert_eq!(parse_value(b"node=255 epoch=18446744073709551615"), Ok((255, u64::MAX)));
        for bad in [
            "",
            "node=1",
            "node=1 epoch=7 ",
            " node=1 epoch=7",
            "node=1  epoch=7",
            "node=256 epoch=1",
            "node=01 epoch=1",
            "node=+1 epoch=1",
            "epoch=1 node=1",
            "node=1 epoch=-1",
            "node=1\tepoch=1",
            "garbage",
        ] {
            let e = parse_value(bad.as_bytes()).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(parse_value(&[0xff, 0xfe]).is_err());
        let long = "x".repeat(500);
        assert!(parse_value(long.as_bytes()).expect_err("long").len() < 200, "a long value is shown shortened");
    }

    #[test]
    fn margins_for_the_default_ttl_and_timeout() {
        let cfg = EtcdConfig {
            endpoints: vec![],
            ttl_s: 5,
            prefix: "/r/".into(),
            user: Some(("u".into(), "secret".into())),
            tls: None,
            op_timeout: Duration::from_secs(1),
        };
        assert_eq!(cfg.step_down_margin(), Duration::from_millis(1100));
        assert_eq!(cfg.step_down_after(), Duration::from_millis(3900));
        assert_eq!(cfg.key(), "/r/leader");
        assert!(!format!("{cfg:?}").contains("secret"));
        let long = EtcdConfig { ttl_s: 300, ..cfg };
        assert_eq!(long.step_down_margin(), Duration::from_millis(1300));
    }
}
