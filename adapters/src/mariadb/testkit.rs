//! A harness for tests and benchmarks: real `mariadbd` servers in temporary datadirs on
//! loopback, each killed by PID and removed on drop.

use super::{MariaDb, MariaDbConfig};
use ridondato_core::NodeId;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mariadbd, killed (by PID) and its datadir removed on drop.
#[derive(Debug)]
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    server_id: u32,
    netns: Option<String>,
    /// None once killed.
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

pub fn available() -> bool {
    let ok = Command::new("mariadbd").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "mariadbd is missing (scripts/deps-db.sh installs it)");
        eprintln!("SKIP: mariadbd is not installed");
    }
    ok
}

impl Server {
    /// On loopback, on a free port.
    pub fn start(server_id: u32) -> Server {
        Server::start_in(server_id, None)
    }

    /// Inside a network namespace (`ip netns exec`), on port 3306 of all its addresses.
    pub fn start_in(server_id: u32, netns: Option<&str>) -> Server {
        let dir = std::env::temp_dir().join(format!("ridondato-maria-{}-{server_id}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            // Bootstraps running side by side must not share temporary tables in /tmp.
            .env("TMPDIR", &dir)
            .output()
            .expect("mariadb-install-db");
        assert!(out.status.success(), "install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = if netns.is_some() { 3306 } else { free_port() };
        let mut s = Server { dir, port, server_id, netns: netns.map(str::to_string), child: None };
        s.launch();
        s
    }

    /// Starts mariadbd on this server's data directory and waits for its socket.
    fn launch(&mut self) {
        let bind = if self.netns.is_some() { "0.0.0.0" } else { "127.0.0.1" };
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "mariadbd"]);
                c
            }
            None => Command::new("mariadbd"),
        };
        let dir = &self.dir;
        let child = cmd
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={bind}"))
            .args(["--user=root", "--log-bin=binlog", "--gtid-strict-mode=1", "--skip-slave-start", "--log-slave-updates", "--read-only=1"])
            .arg(format!("--server-id={}", self.server_id))
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("err.log")).expect("log"))
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let t = Instant::now();
        // A killed server leaves its socket file behind: wait until it accepts.
        while std::os::unix::net::UnixStream::connect(dir.join("sock")).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "mariadbd did not start: {}", std::fs::read_to_string(dir.join("err.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again after `kill9`, on the same data (crash recovery included), as a
    /// service manager would; like any fresh start it is read-only and does not replicate.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// As root over the server's Unix socket (reachable from outside its namespace too).
    pub fn opts(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new().socket(self.dir.join("sock")).username("root")
    }

    /// As root over TCP on loopback (what a peer adapter uses in the loopback set-up).
    pub fn tcp_opts(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new().host("127.0.0.1").port(self.port).username("root")
    }

    pub async fn sql(&self, q: &str) -> Result<(), String> {
        let mut c = MySqlConnection::connect_with(&self.opts()).await.map_err(|e| e.to_string())?;
        c.execute(q).await.map(|_| ()).map_err(|e| e.to_string())
    }

    pub async fn count(&self) -> i64 {
        let mut c = MySqlConnection::connect_with(&self.opts()).await.expect("connect");
        sqlx::query("SELECT COUNT(*) FROM app.t").fetch_one(&mut c).await.map(|r| r.get::<i64, _>(0)).unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// Power loss, as far as the database can tell: SIGKILL, no shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn adapter(me: &Server, peers: &[(u8, &Server)]) -> MariaDb {
    adapter_with(me, peers, false)
}

pub fn adapter_with(me: &Server, peers: &[(u8, &Server)], semi_sync: bool) -> MariaDb {
    let peers: BTreeMap<NodeId, (String, u16)> = peers.iter().map(|(id, s)| (NodeId(*id), ("127.0.0.1".to_string(), s.port))).collect();
    MariaDb::new(MariaDbConfig {
        local: me.opts(),
        peers,
        repl_user: "repl".into(),
        repl_password: "replpw".into(),
        peer_admin: ("peeradmin".into(), "peeradminpw".into()),
        app_user: Some("app".into()),
        semi_sync,
        semi_sync_timeout: Duration::from_millis(1000),
        apply_timeout: Duration::from_secs(5),
        backup_dir: Some(me.dir.join("backups")),
    })
}

/// Users and schema on a fresh server, without binary logging (each server gets its own).
pub async fn prepare(s: &Server) {
    for q in [
        "SET SESSION sql_log_bin = 0",
        "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpw'",
        "GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO 'repl'@'%'",
        "CREATE USER 'peeradmin'@'%' IDENTIFIED BY 'peeradminpw'",
        "GRANT ALL PRIVILEGES ON *.* TO 'peeradmin'@'%'",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'apppw'",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'%'",
    ] {
        s.sql(&format!("SET SESSION sql_log_bin = 0; {q}")).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

pub async fn app_insert(s: &Server) -> Result<(), String> {
    let opts = s.tcp_opts().username("app").password("apppw");
    let mut c = MySqlConnection::connect_with(&opts).await.map_err(|e| e.to_string())?;
    c.execute("INSERT INTO app.t (v) VALUES (1)").await.map(|_| ()).map_err(|e| e.to_string())
}

pub async fn wait_count(s: &Server, n: i64) {
    let t = Instant::now();
    while s.count().await != n {
        assert!(t.elapsed() < Duration::from_secs(10), "replica has {} rows, expected {n}", s.count().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two servers (ids `first`, `first + 1`) with their adapters: the first is Master with the
/// `app.t` table, the second replicates from it.
pub async fn pair(first: u32, semi_sync: bool) -> (Server, Server, MariaDb, MariaDb) {
    let (sa, sb) = (Server::start(first), Server::start(first + 1));
    prepare(&sa).await;
    prepare(&sb).await;
    let (a, b) = (adapter_with(&sa, &[(2, &sb)], semi_sync), adapter_with(&sb, &[(1, &sa)], semi_sync));
    use crate::traits::Db;
    a.promote(None).await.expect("promote a");
    sa.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.expect("schema");
    b.replicate_from(NodeId(1)).await.expect("b replicates");
    (sa, sb, a, b)
}
