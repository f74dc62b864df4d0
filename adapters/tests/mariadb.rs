//! Real MariaDB: two `mariadbd` instances in temporary datadirs on loopback, GTID replication
//! between them, and the adapter driving promotion, fencing and re-pointing. Needs
//! mariadb-server; under CI=true its absence is a failure.

use ridondato_adapters::mariadb::{MariaDb, MariaDbConfig};
use ridondato_adapters::Db;
use ridondato_core::{NodeId, Position};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mariadbd, killed (by PID) and its datadir removed on drop.
struct Server {
    dir: PathBuf,
    port: u16,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn available() -> bool {
    let ok = Command::new("mariadbd").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "mariadbd is missing (scripts/deps-db.sh installs it)");
        eprintln!("SKIP: mariadbd is not installed");
    }
    ok
}

impl Server {
    fn start(server_id: u32) -> Server {
        let dir = std::env::temp_dir().join(format!("ridondato-maria-{}-{server_id}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db");
        assert!(out.status.success(), "install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root", "--log-bin=binlog", "--gtid-strict-mode=1", "--skip-slave-start", "--log-slave-updates", "--read-only=1"])
            .arg(format!("--server-id={server_id}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("err.log")).expect("log"))
            .spawn()
            .expect("mariadbd");
        let s = Server { dir, port, child };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "mariadbd did not start: {}", std::fs::read_to_string(s.dir.join("err.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn opts(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new().host("127.0.0.1").port(self.port).username("root")
    }

    async fn sql(&self, q: &str) -> Result<(), String> {
        let mut c = MySqlConnection::connect_with(&self.opts()).await.map_err(|e| e.to_string())?;
        c.execute(q).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn count(&self) -> i64 {
        let mut c = MySqlConnection::connect_with(&self.opts()).await.expect("connect");
        sqlx::query("SELECT COUNT(*) FROM app.t").fetch_one(&mut c).await.map(|r| r.get::<i64, _>(0)).unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn adapter(me: &Server, peers: &[(u8, &Server)]) -> MariaDb {
    let peers: BTreeMap<NodeId, (String, u16)> = peers.iter().map(|(id, s)| (NodeId(*id), ("127.0.0.1".to_string(), s.port))).collect();
    MariaDb::new(MariaDbConfig {
        local: me.opts(),
        peers,
        repl_user: "repl".into(),
        repl_password: "replpw".into(),
        app_user: Some("app".into()),
        semi_sync: false,
        apply_timeout: Duration::from_secs(5),
    })
}

/// Users and schema on a fresh server, without binary logging (each server gets its own).
async fn prepare(s: &Server) {
    for q in [
        "SET SESSION sql_log_bin = 0",
        "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpw'",
        "GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO 'repl'@'%'",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'apppw'",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'%'",
    ] {
        s.sql(&format!("SET SESSION sql_log_bin = 0; {q}")).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

async fn app_insert(s: &Server) -> Result<(), String> {
    let opts = s.opts().username("app").password("apppw");
    let mut c = MySqlConnection::connect_with(&opts).await.map_err(|e| e.to_string())?;
    c.execute("INSERT INTO app.t (v) VALUES (1)").await.map(|_| ()).map_err(|e| e.to_string())
}

async fn wait_count(s: &Server, n: i64) {
    let t = Instant::now();
    while s.count().await != n {
        assert!(t.elapsed() < Duration::from_secs(10), "replica has {} rows, expected {n}", s.count().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_fence_promote_repoint_and_detect_errant_transactions() {
    if !available() {
        return;
    }
    let (sa, sb) = (Server::start(1), Server::start(2));
    prepare(&sa).await;
    prepare(&sb).await;
    let (a, b) = (adapter(&sa, &[(2, &sb)]), adapter(&sb, &[(1, &sa)]));

    // a is Master, b replicates from it.
    a.promote(None).await.expect("promote a");
    sa.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.expect("schema");
    b.replicate_from(NodeId(1)).await.expect("b replicates");
    for _ in 0..20 {
        app_insert(&sa).await.expect("write on the Master");
    }
    wait_count(&sb, 20).await;
    let rb = b.report().await.expect("report");
    assert!(rb.replicating && !rb.writable, "{rb:?}");
    assert_eq!(rb.position, a.report().await.expect("report").position, "same GTID position once caught up");
    assert!(app_insert(&sb).await.is_err(), "the read-only Slave refuses the application's writes (S8)");
    assert_eq!(a.check_app_account().await.expect("check"), None);

    // Planned switch-over: fence a, b catches up and promotes, a re-points to b.
    let fenced_at = a.fence().await.expect("fence a");
    assert!(app_insert(&sa).await.is_err(), "a write on the fenced node fails");
    b.catch_up(fenced_at).await.expect("catch up");
    b.promote(Some(fenced_at)).await.expect("promote b");
    a.replicate_from(NodeId(2)).await.expect("a replicates from b");
    for _ in 0..5 {
        app_insert(&sb).await.expect("write on the new Master");
    }
    wait_count(&sa, 25).await;
    assert_eq!(sb.count().await, 25);
    assert_eq!(a.report().await.expect("report").errant, 0);

    // An errant transaction on a (someone wrote with binary logging on the replica): a refuses
    // the stream from b, and the report says so instead of rejoining silently.
    sa.sql("STOP SLAVE").await.expect("stop");
    sa.sql("SET GLOBAL read_only = 0; INSERT INTO app.t (v) VALUES (99); SET GLOBAL read_only = 1").await.expect("errant write");
    for _ in 0..3 {
        app_insert(&sb).await.expect("write on b");
    }
    a.replicate_from(NodeId(2)).await.expect("re-point");
    let t = Instant::now();
    loop {
        let r = a.report().await.expect("report");
        if r.errant > 0 {
            assert!(!r.replicating);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "errant transaction not detected: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_continuous_writes_loses_no_acknowledged_row() {
    if !available() {
        return;
    }
    let (sa, sb) = (Server::start(11), Server::start(12));
    prepare(&sa).await;
    prepare(&sb).await;
    let (a, b) = (adapter(&sa, &[(2, &sb)]), adapter(&sb, &[(1, &sa)]));
    a.promote(None).await.expect("promote a");
    sa.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.expect("schema");
    b.replicate_from(NodeId(1)).await.expect("b replicates");
    wait_count(&sb, 0).await;

    // A writer commits continuously to whichever server takes writes; it counts acknowledgements.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pa, pb) = (sa.opts(), sb.opts());
    let s2 = stop.clone();
    let writer = tokio::spawn(async move {
        let (mut acked, mut longest_gap, mut last_ok) = (Vec::<u64>::new(), Duration::ZERO, Instant::now());
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            for o in [&pa, &pb] {
                let opts = o.clone().username("app").password("apppw");
                if let Ok(mut c) = MySqlConnection::connect_with(&opts).await {
                    if let Ok(r) = c.execute("INSERT INTO app.t (v) VALUES (2)").await {
                        acked.push(r.last_insert_id());
                        longest_gap = longest_gap.max(last_ok.elapsed());
                        last_ok = Instant::now();
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (acked, longest_gap)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fenced_at = a.fence().await.expect("fence");
    b.promote(Some(fenced_at)).await.expect("promote b");
    a.replicate_from(NodeId(2)).await.expect("re-point a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, gap) = writer.await.expect("writer");
    assert!(acked.len() > 20, "the writer made progress: {}", acked.len());
    // Every acknowledged row is on the new Master (a row whose acknowledgement the fence cut
    // off may be there too: that is not a loss).
    let mut c = MySqlConnection::connect_with(&sb.opts()).await.expect("connect");
    let ids: std::collections::BTreeSet<u64> =
        sqlx::query("SELECT id FROM app.t").fetch_all(&mut c).await.expect("ids").iter().map(|r| r.get::<i32, _>(0) as u64).collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|i| !ids.contains(i)).collect();
    assert!(lost.is_empty(), "acknowledged rows missing on the new Master: {lost:?}");
    wait_count(&sa, ids.len() as i64).await;
    eprintln!("switch-over under load: {} rows acknowledged, none lost, longest write gap {} ms", acked.len(), gap.as_millis());
    let _ = Position(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_rebuilds_a_diverged_replica_with_monotone_progress() {
    if !available() {
        return;
    }
    let (sa, sb) = (Server::start(21), Server::start(22));
    prepare(&sa).await;
    prepare(&sb).await;
    let (a, b) = (adapter(&sa, &[(2, &sb)]), adapter(&sb, &[(1, &sa)]));
    a.promote(None).await.expect("promote a");
    sa.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.expect("schema");
    b.replicate_from(NodeId(1)).await.expect("b replicates");
    for _ in 0..50 {
        app_insert(&sa).await.expect("write");
    }
    wait_count(&sb, 50).await;
    // b diverges: a transaction of its own that a does not have, then replication breaks on it.
    sb.sql("STOP SLAVE; SET GLOBAL read_only = 0; INSERT INTO app.t (v) VALUES (7); SET GLOBAL read_only = 1").await.expect("errant");
    for _ in 0..10 {
        app_insert(&sa).await.expect("write");
    }
    b.replicate_from(NodeId(1)).await.expect("re-point");
    let t = Instant::now();
    while b.report().await.expect("report").errant == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "divergence not detected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let s2 = seen.clone();
    let progress: ridondato_adapters::ProgressFn = std::sync::Arc::new(move |d, t| s2.lock().expect("lock").push((d, t)));
    b.copy_from_peer(NodeId(1), progress).await.expect("resync");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.windows(2).all(|w| w[1].0 >= w[0].0), "progress is monotone: {seen:?}");
    let (last_done, last_total) = *seen.last().expect("progress reported");
    assert_eq!(last_done, last_total, "progress ends at 100 %");
    for _ in 0..5 {
        app_insert(&sa).await.expect("write after the resync");
    }
    wait_count(&sb, 65).await;
    let r = b.report().await.expect("report");
    assert!(r.replicating && r.errant == 0 && !r.writable, "a replicating, aligned Slave: {r:?}");
    assert_eq!(r.position, a.report().await.expect("report").position);
}
