//! The etcd lease arbiter (B11) against real etcd processes on loopback: single members and a
//! three-member cluster, each on free ports with its own data directory, killed by PID when
//! the test ends. Needs etcd (scripts/deps-etcd.sh); under CI=true its absence is a failure.
//! The TTL is 2 s (etcd's minimum with its default 1 s election timeout) to keep them short.
#![cfg(feature = "etcd")]

use ridondato_adapters::arbiter_etcd::{Acquire, EtcdArbiter, EtcdConfig, EtcdTls};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TTL_S: i64 = 2;
const TTL: Duration = Duration::from_secs(TTL_S as u64);
const OP: Duration = Duration::from_secs(1);
/// What "within op_timeout" tolerates on a loaded 2-core machine: the timer fires on time,
/// the task may be scheduled a little later.
const SLACK: Duration = Duration::from_millis(250);

/// One etcd at a time: they are timing tests, and parallel clusters on two cores would only
/// measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn etcd_binary() -> Option<PathBuf> {
    let usual = Path::new("/usr/bin/etcd");
    if usual.is_file() {
        return Some(usual.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("etcd")).find(|p| p.is_file())
}

/// The binary, or `None` (a skip) outside CI: under CI=true its absence fails the test.
fn available() -> Option<PathBuf> {
    let found = etcd_binary();
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "etcd is missing (/usr/bin/etcd or on PATH; scripts/deps-etcd.sh installs it)");
        eprintln!("notice: etcd not found (/usr/bin/etcd or on PATH): the etcd tests are skipped; scripts/deps-etcd.sh installs it");
    }
    found
}

/// `n` distinct free ports on loopback (the listeners are all held until every port is known).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

struct Member {
    client_port: u16,
    child: Option<Child>,
}

/// Real etcd processes; killed by PID and their data directories removed on drop.
struct Cluster {
    root: PathBuf,
    members: Vec<Member>,
    /// Members serving TLS only, verifying client certificates: what a client needs.
    tls: Option<EtcdTls>,
}

/// A CA, and a certificate signed by it: for the members (their IP and name), or a client.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Pki { ca: p.self_signed(&ca_key).expect("CA"), ca_key }
    }

    /// (certificate PEM, key PEM) for `names` (an IP becomes an IP name).
    fn issue(&self, names: &[&str], server: bool) -> (Vec<u8>, Vec<u8>) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        p.distinguished_name.push(DnType::CommonName, if server { "etcd" } else { "ridondato" });
        p.extended_key_usages =
            if server { vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth] } else { vec![ExtendedKeyUsagePurpose::ClientAuth] };
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }
}

impl Cluster {
    async fn start(bin: &Path, n: usize) -> Cluster {
        Cluster::start_with(bin, n, false).await
    }

    async fn start_with(bin: &Path, n: usize, tls: bool) -> Cluster {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let unique = format!("{}-{}-{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let root = std::env::temp_dir().join(format!("ridondato-etcd-{unique}"));
        std::fs::create_dir_all(&root).expect("temp dir");
        let ports = free_ports(2 * n);
        let (clients, peers) = ports.split_at(n);
        let initial: Vec<String> = (0..n).map(|i| format!("m{i}=http://127.0.0.1:{}", peers[i])).collect();
        let mut cluster = Cluster { root: root.clone(), members: Vec::new(), tls: None };
        let mut tls_flags = Vec::new();
        if tls {
            let pki = Pki::new("ridondato-test-ca");
            let (cert, key) = pki.issue(&["127.0.0.1", "localhost"], true);
            let write = |name: &str, pem: &[u8]| {
                let f = root.join(name);
                std::fs::write(&f, pem).expect("write PEM");
                f.display().to_string()
            };
            let ca = pki.ca.pem().into_bytes();
            tls_flags = vec![
                format!("--cert-file={}", write("server.pem", &cert)),
                format!("--key-file={}", write("server-key.pem", &key)),
                format!("--trusted-ca-file={}", write("ca.pem", &ca)),
                "--client-cert-auth".to_string(),
            ];
            cluster.tls = Some(EtcdTls { ca, identity: Some(pki.issue(&[], false)) });
        }
        let scheme = if tls { "https" } else { "http" };
        for i in 0..n {
            let log = std::fs::File::create(root.join(format!("m{i}.log"))).expect("log file");
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", root.join(format!("m{i}")).display()))
                .arg(format!("--listen-client-urls={scheme}://127.0.0.1:{}", clients[i]))
                .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{}", clients[i]))
                .args(&tls_flags)
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", peers[i]))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", peers[i]))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token=ridondato-{unique}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            // Only our flags: an ETCD_* variable in the environment would be read as one.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ETCD_") {
                    cmd.env_remove(k);
                }
            }
            let child = cmd.spawn().expect("start etcd");
            cluster.members.push(Member { client_port: clients[i], child: Some(child) });
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Polls the member until it answers a linearizable read (it has a leader).
    async fn wait_ready(&mut self, i: usize) {
        let probe = EtcdArbiter::connect(EtcdConfig { tls: self.tls.clone(), ..config(vec![self.endpoint(i)], "/ready") }).await.expect("connect");
        let t = Instant::now();
        loop {
            match probe.holder().await {
                Ok(_) => return,
                Err(e) => {
                    if let Some(status) = self.members[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        panic!("etcd m{i} exited ({status}): {}", self.log(i));
                    }
                    assert!(t.elapsed() < Duration::from_secs(30), "etcd m{i} not ready after 30 s: {e}\n{}", self.log(i));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.root.join(format!("m{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i].child.as_ref().expect("running").id()
    }

    /// SIGKILL by PID, and reap it.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the member keeps its sockets (connections are accepted by the kernel) but
    /// never answers, like a frozen or black-holed host.
    fn freeze(&self, i: usize) {
        let ok = Command::new("kill").arg("-STOP").arg(self.pid(i).to_string()).status().expect("kill -STOP");
        assert!(ok.success());
    }

    /// The index of the member that is the raft leader, as the members themselves say.
    async fn leader(&self) -> usize {
        let t = Instant::now();
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                let Ok(mut c) = etcd_client::Client::connect([self.endpoint(i)], None).await else { continue };
                if let Ok(Ok(s)) = tokio::time::timeout(OP, c.status()).await {
                    if s.header().map(|h| h.member_id()) == Some(s.leader()) {
                        return i;
                    }
                }
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no etcd leader found");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn config(endpoints: Vec<String>, prefix: &str) -> EtcdConfig {
    EtcdConfig { endpoints, ttl_s: TTL_S, prefix: prefix.into(), user: None, tls: None, op_timeout: OP }
}

async fn arbiter(endpoints: Vec<String>) -> EtcdArbiter {
    EtcdArbiter::connect(config(endpoints, "/ridondato/test")).await.expect("connect")
}

/// How many leases exist in etcd (a lost acquisition must not leave its lease behind).
async fn lease_count(endpoint: &str) -> usize {
    let mut c = etcd_client::Client::connect([endpoint], None).await.expect("raw client");
    c.leases().await.expect("list leases").leases().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_acquire_wins_the_second_sees_the_holder_and_refresh_keeps_it_past_two_ttls() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let etcd = Cluster::start(&bin, 1).await;
    let (a, b) = (arbiter(etcd.endpoints()).await, arbiter(etcd.endpoints()).await);
    assert_eq!(a.key(), "/ridondato/test/leader");
    assert_eq!(a.holder().await.expect("holder"), None);

    let Acquire::Won { lease_id } = a.acquire(1, 7).await.expect("acquire") else { panic!("the first acquire wins") };
    assert_eq!(a.lease_id(), Some(lease_id));
    assert_eq!(a.lease_ttl(), Some(TTL));
    assert_eq!(b.acquire(2, 3).await.expect("acquire"), Acquire::Held { node: 1, epoch: 7 });
    assert_eq!(b.lease_id(), None);
    assert_eq!(lease_count(&etcd.endpoint(0)).await, 1, "the loser revoked the lease it had granted");
    assert_eq!(b.holder().await.expect("holder"), Some((1, 7)));
    assert!(a.still_leader(1, 7).await.expect("check"));
    assert!(!a.still_leader(1, 6).await.expect("check"), "another epoch is not us");
    assert!(!b.still_leader(1, 7).await.expect("check"), "the same value on someone else's lease is not us");
    let e = b.refresh().await.expect_err("b holds nothing");
    assert!(e.contains("no lease held") && e.contains("/ridondato/test/leader"), "{e}");

    // The holder acquiring again keeps its lease; a new epoch is written into the key.
    assert_eq!(a.acquire(1, 7).await.expect("again"), Acquire::Won { lease_id });
    assert_eq!(a.acquire(1, 8).await.expect("new epoch"), Acquire::Won { lease_id });
    assert_eq!(b.holder().await.expect("holder"), Some((1, 8)));
    assert_eq!(lease_count(&etcd.endpoint(0)).await, 1);

    // Refreshing every 500 ms keeps the key well past 2 × TTL.
    let t = Instant::now();
    let mut refreshes = 0;
    while t.elapsed() < 2 * TTL + Duration::from_secs(1) {
        let ttl = a.refresh().await.expect("refresh");
        assert_eq!(ttl, TTL, "etcd reports the granted TTL after a keep-alive");
        refreshes += 1;
        assert_eq!(b.acquire(2, 3).await.expect("acquire"), Acquire::Held { node: 1, epoch: 8 });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.still_leader(1, 8).await.expect("check"));
    println!("held for {} ms (TTL {} ms) over {refreshes} refreshes", t.elapsed().as_millis(), TTL.as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_the_lease_works_and_anything_less_is_refused_in_time() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let etcd = Cluster::start_with(&bin, 1, true).await;
    let tls = etcd.tls.clone().expect("TLS material");
    let with = |tls: Option<EtcdTls>, endpoints: Vec<String>| EtcdConfig { tls, ..config(endpoints, "/ridondato/tls") };
    let a = EtcdArbiter::connect(with(Some(tls.clone()), etcd.endpoints())).await.expect("connect");
    assert!(matches!(a.acquire(1, 4).await.expect("acquire over TLS"), Acquire::Won { .. }));
    assert_eq!(a.refresh().await.expect("refresh over TLS"), TTL);
    assert_eq!(a.holder().await.expect("holder over TLS"), Some((1, 4)));

    // A client without a certificate, or trusting another CA, is refused by the handshake: an
    // error within the call's bound, never a hang.
    let stranger = Pki::new("another-ca").ca.pem().into_bytes();
    for (what, t) in [("no client certificate", EtcdTls { identity: None, ..tls.clone() }), ("another CA", EtcdTls { ca: stranger, ..tls.clone() })] {
        let b = EtcdArbiter::connect(with(Some(t), etcd.endpoints())).await.expect("connect is lazy");
        let started = Instant::now();
        let e = b.acquire(2, 5).await.expect_err(what);
        assert!(started.elapsed() <= OP + SLACK, "{what}: {:?}", started.elapsed());
        println!("{what}: {e}");
    }
    assert_eq!(a.holder().await.expect("holder"), Some((1, 4)), "the refused clients took nothing");
    let e = EtcdArbiter::connect(with(None, etcd.endpoints())).await.expect_err("https without TLS");
    assert!(e.contains("needs the members' CA"), "{e}");
    let plain = etcd.endpoints().iter().map(|u| u.replace("https://", "http://")).collect();
    let e = EtcdArbiter::connect(with(Some(tls.clone()), plain)).await.expect_err("http with TLS");
    assert!(e.contains("must be https://"), "{e}");
    let e = EtcdArbiter::connect(with(Some(EtcdTls { ca: b"not a certificate".to_vec(), ..tls.clone() }), etcd.endpoints())).await.expect_err("bad CA");
    assert!(e.contains("the CA file holds no PEM certificate"), "{e}");
    let (cert, _) = tls.identity.clone().expect("identity");
    let e = EtcdArbiter::connect(with(Some(EtcdTls { identity: Some((cert, b"junk".to_vec())), ..tls }), etcd.endpoints())).await.expect_err("bad key");
    assert!(e.contains("the client key file holds no usable PEM private key"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_holder_stops_refreshing_the_key_expires_and_the_other_node_takes_over() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let etcd = Cluster::start(&bin, 1).await;
    let (a, b) = (arbiter(etcd.endpoints()).await, arbiter(etcd.endpoints()).await);
    assert!(matches!(a.acquire(1, 1).await.expect("acquire"), Acquire::Won { .. }));
    // The last keep-alive: the lease cannot expire before TTL after this instant.
    let last = Instant::now();
    a.refresh().await.expect("refresh");

    // A lease must really expire here: poll for the condition, with a deadline.
    let gone = loop {
        if b.holder().await.expect("holder").is_none() {
            break last.elapsed();
        }
        assert!(last.elapsed() < TTL + Duration::from_secs(3), "the key outlived its lease by more than 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(gone >= TTL, "the key vanished {} ms after the last keep-alive, before the TTL", gone.as_millis());
    assert!(matches!(b.acquire(2, 2).await.expect("acquire"), Acquire::Won { .. }));
    let takeover = last.elapsed();
    println!(
        "expiry: key gone {} ms after the last keep-alive started (TTL {} ms, +{} ms etcd granularity); the other node won at {} ms",
        gone.as_millis(),
        TTL.as_millis(),
        (gone - TTL).as_millis(),
        takeover.as_millis()
    );

    // The old holder learns it from its next refresh and forgets the lease.
    let e = a.refresh().await.expect_err("the lease is gone");
    assert!(e.contains("expired or was revoked") && e.contains("no longer ours"), "{e}");
    assert_eq!(a.lease_id(), None);
    assert!(!a.still_leader(1, 1).await.expect("check"));
    assert_eq!(a.acquire(1, 1).await.expect("acquire"), Acquire::Held { node: 2, epoch: 2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_lets_the_other_node_acquire_at_once() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let etcd = Cluster::start(&bin, 1).await;
    let (a, b) = (arbiter(etcd.endpoints()).await, arbiter(etcd.endpoints()).await);
    a.release().await.expect("nothing held is fine");
    assert!(matches!(a.acquire(1, 4).await.expect("acquire"), Acquire::Won { .. }));
    assert_eq!(b.acquire(2, 4).await.expect("acquire"), Acquire::Held { node: 1, epoch: 4 });
    let t = Instant::now();
    a.release().await.expect("release");
    assert!(matches!(b.acquire(2, 5).await.expect("acquire"), Acquire::Won { .. }), "no wait for a TTL");
    println!("release → other node won in {} ms", t.elapsed().as_millis());
    assert_eq!(a.lease_id(), None);
    a.release().await.expect("releasing twice is fine");
    assert!(a.refresh().await.is_err());
    assert_eq!(a.holder().await.expect("holder"), Some((2, 5)));
    assert_eq!(lease_count(&etcd.endpoint(0)).await, 1, "only b's lease is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_value_under_the_key_is_an_error_that_names_it() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let etcd = Cluster::start(&bin, 1).await;
    let b = arbiter(etcd.endpoints()).await;
    let mut raw = etcd_client::Client::connect([etcd.endpoint(0)], None).await.expect("raw client");
    raw.put(b.key(), "node=1 epoch=seven", None).await.expect("put");
    let e = b.holder().await.expect_err("malformed");
    assert!(e.contains("\"node=1 epoch=seven\"") && e.contains("/ridondato/test/leader"), "{e}");
    let e = b.acquire(2, 1).await.expect_err("malformed");
    assert!(e.contains("\"node=1 epoch=seven\"") && e.contains("acquire"), "{e}");
    assert_eq!(b.lease_id(), None);
    assert_eq!(lease_count(&etcd.endpoint(0)).await, 0, "the lease granted for the attempt was revoked");
    println!("malformed: {e}");
}

/// Runs each method against a dead or frozen etcd: each must fail within op_timeout, with an
/// error naming the key and the endpoint. Refresh and release only when a lease is held (else
/// they have nothing to send: refresh fails at once, release succeeds).
async fn every_method_fails_in_time(a: &EtcdArbiter, what: &str) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    macro_rules! timed {
        ($name:literal, $call:expr) => {{
            let t = Instant::now();
            let r = $call.await;
            let took = t.elapsed();
            let e = r.expect_err(concat!($name, " must fail"));
            assert!(took <= OP + SLACK, "{what}: {} took {} ms: {e}", $name, took.as_millis());
            assert!(e.contains("/ridondato/test/leader") && e.contains("127.0.0.1:"), "{what}: the error names the key and the endpoint: {e}");
            println!("{what}: {} failed in {} ms: {e}", $name, took.as_millis());
            out.push(($name, took));
        }};
    }
    let held = a.lease_id().is_some();
    timed!("acquire", a.acquire(1, 9));
    timed!("holder", a.holder());
    timed!("still_leader", a.still_leader(1, 9));
    if held {
        timed!("refresh", a.refresh());
        timed!("release", a.release());
        assert!(a.lease_id().is_some(), "a failed refresh or release keeps the lease for a retry");
    }
    println!("{what}: {}", out.iter().map(|(n, d)| format!("{n} {} ms", d.as_millis())).collect::<Vec<_>>().join(", "));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_or_frozen_every_method_fails_within_op_timeout() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;

    // Nothing ever listened there: construction still succeeds (lazy), every call fails.
    let nowhere = free_ports(1)[0];
    let t = Instant::now();
    let a = arbiter(vec![format!("http://127.0.0.1:{nowhere}")]).await;
    assert!(t.elapsed() < Duration::from_millis(100), "connect does no I/O");
    every_method_fails_in_time(&a, "never started").await;

    // Killed while we hold the key.
    let mut etcd = Cluster::start(&bin, 1).await;
    let a = arbiter(etcd.endpoints()).await;
    assert!(matches!(a.acquire(1, 9).await.expect("acquire"), Acquire::Won { .. }));
    etcd.kill(0);
    every_method_fails_in_time(&a, "killed").await;

    // Frozen (SIGSTOP) while we hold the key: connections hang instead of being refused.
    let etcd = Cluster::start(&bin, 1).await;
    let a = arbiter(etcd.endpoints()).await;
    assert!(matches!(a.acquire(1, 9).await.expect("acquire"), Acquire::Won { .. }));
    etcd.freeze(0);
    let took = every_method_fails_in_time(&a, "frozen").await;
    assert!(took.iter().any(|(_, d)| *d >= OP - Duration::from_millis(50)), "a frozen member is given up at the timeout: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_killed_still_serves_two_killed_refresh_fails_in_time() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let mut etcd = Cluster::start(&bin, 3).await;
    let leader = etcd.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The follower we kill first is the one the arbiters try first.
    let mut order = vec![etcd.endpoint(followers[0])];
    order.extend((0..3).filter(|&i| i != followers[0]).map(|i| etcd.endpoint(i)));
    let a = arbiter(order.clone()).await;
    let b = arbiter(order.clone()).await;
    assert!(matches!(a.acquire(1, 1).await.expect("acquire"), Acquire::Won { .. }));
    a.refresh().await.expect("refresh");

    etcd.kill(followers[0]);
    let t = Instant::now();
    let ttl = a.refresh().await.expect("refresh through the remaining members");
    let refresh_ms = t.elapsed().as_millis();
    assert_eq!(ttl, TTL);
    let t = Instant::now();
    assert_eq!(b.acquire(2, 1).await.expect("acquire through the remaining members"), Acquire::Held { node: 1, epoch: 1 });
    let acquire_ms = t.elapsed().as_millis();
    // A third node that never talked to the dead member before.
    let c = arbiter(order).await;
    assert_eq!(c.holder().await.expect("holder"), Some((1, 1)));
    let t = Instant::now();
    for _ in 0..5 {
        a.refresh().await.expect("refresh");
    }
    let five_ms = t.elapsed().as_millis();
    println!("3 members, one follower killed: first refresh {refresh_ms} ms, acquire (Held) {acquire_ms} ms, then 5 refreshes in {five_ms} ms");

    // Two of three gone, the etcd leader left alone: no quorum. etcd renews leases on the
    // leader without a raft round, so refreshes may still succeed until the leader notices the
    // lost quorum and steps down (CheckQuorum, one election timeout: 1 s by default); harmless,
    // since nobody can create the key without a quorum either. From then on every refresh
    // fails, each within op_timeout.
    etcd.kill(followers[1]);
    let killed = Instant::now();
    let mut renewed_without_quorum = Duration::ZERO;
    let first_failure = loop {
        let t = Instant::now();
        let r = a.refresh().await;
        let took = t.elapsed();
        assert!(took <= OP + SLACK, "refresh without quorum took {} ms: {r:?}", took.as_millis());
        match r {
            Ok(_) => renewed_without_quorum = killed.elapsed(),
            Err(e) => break (killed.elapsed(), took, e),
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "refresh kept succeeding 5 s after the quorum was lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (at, took, e) = first_failure;
    println!(
        "3 members, two killed: last successful refresh {} ms after the kill, first failure at {} ms (took {} ms): {e}",
        renewed_without_quorum.as_millis(),
        at.as_millis(),
        took.as_millis()
    );
    for _ in 0..3 {
        let t = Instant::now();
        let e = a.refresh().await.expect_err("no quorum");
        let took = t.elapsed();
        assert!(took <= OP + SLACK, "refresh without quorum took {} ms: {e}", took.as_millis());
        println!("3 members, two killed: refresh failed in {} ms", took.as_millis());
    }
    let t = Instant::now();
    let e = b.acquire(2, 2).await.expect_err("no quorum");
    let took = t.elapsed();
    assert!(took <= OP + SLACK, "acquire without quorum took {} ms: {e}", took.as_millis());
    println!("3 members, two killed: acquire failed in {} ms: {e}", took.as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_killing_the_etcd_leader_keeps_the_key_through_the_election() {
    let Some(bin) = available() else { return };
    let _serial = SERIAL.lock().await;
    let mut etcd = Cluster::start(&bin, 3).await;
    let leader = etcd.leader().await;
    let a = arbiter(etcd.endpoints()).await;
    let b = arbiter(etcd.endpoints()).await;
    assert!(matches!(a.acquire(1, 1).await.expect("acquire"), Acquire::Won { .. }));
    let last = Instant::now();
    a.refresh().await.expect("refresh");

    etcd.kill(leader);
    let killed = Instant::now();
    // Refreshes fail while the remaining two elect a leader, then succeed again; the new leader
    // grants every lease a fresh TTL, so the key survives even an election longer than the TTL.
    let (mut failures, mut recovered) = (0, None);
    while killed.elapsed() < Duration::from_secs(15) {
        match a.refresh().await {
            Ok(_) => {
                recovered = Some(killed.elapsed());
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(!e.contains("expired or was revoked"), "the lease must survive the election: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("refresh works again after the election");
    assert_eq!(b.holder().await.expect("holder"), Some((1, 1)));
    assert!(a.still_leader(1, 1).await.expect("check"));
    println!(
        "3 members, etcd leader killed: refresh works again {} ms later ({failures} failed refreshes, {} ms after the last keep-alive before the kill); the key survived",
        recovered.as_millis(),
        last.elapsed().as_millis()
    );
}

#[tokio::test]
async fn the_arbiter_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let a = EtcdArbiter::connect(config(vec!["http://127.0.0.1:9".into()], "/x")).await.expect("connect");
    send(&a.acquire(1, 1));
    send(&a.refresh());
    send(&a.holder());
    send(&a.still_leader(1, 1));
    send(&a.release());
}
