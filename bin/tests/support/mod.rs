//! The real LAN lab shared by the lab tests and the DB failover benchmark: two `ridondato run`
//! daemons in network namespaces (scripts/lab.sh), a client, real VIPs and real ARP, and two
//! real mariadbd. Each user takes a subset, hence the dead-code allowance.
#![allow(dead_code)]

pub mod cloud;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ridondato");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn sh(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)),
        Err(e) => (false, e.to_string()),
    }
}

/// Whether the lab can run here; under CI a missing piece is a failure.
pub fn lab_available() -> bool {
    let root = sh(&["id", "-u"]).1.trim() == "0";
    let tools = ["ip", "nft", "ping"].iter().all(|t| sh(&["which", t]).0);
    if root && tools {
        return true;
    }
    let why = format!("lab tests need root and ip, nft, ping (root: {root}, tools: {tools})");
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
    eprintln!("SKIP: {why}");
    false
}

/// A lab and its daemons; everything is torn down on drop, even when the test fails.
pub struct Lab {
    pub name: String,
    pub work: PathBuf,
    pub env: std::collections::BTreeMap<String, String>,
    pub daemons: Vec<(String, Child)>,
    /// Set in each daemon's environment (the cloud lab's API credentials).
    pub daemon_env: Vec<(String, String)>,
}

impl Lab {
    pub fn up(tag: &str) -> Lab {
        let name = format!("t{}{tag}", std::process::id() % 10000);
        let script = repo().join("scripts/lab.sh");
        let _ = sh(&["bash", script.to_str().unwrap_or_default(), "down", &name]);
        let (ok, out) = sh(&["bash", script.to_str().unwrap_or_default(), "up", &name]);
        assert!(ok, "lab up: {out}");
        let (_, env_out) = sh(&["bash", script.to_str().unwrap_or_default(), "env", &name]);
        let env = env_out.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let work = std::env::temp_dir().join(format!("ridondato-lab-{name}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let secret = work.join("secret");
        std::fs::write(&secret, b"lab secret 0123456789abcdef\n").expect("secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let lab = Lab { name, work, env, daemons: Vec::new(), daemon_env: Vec::new() };
        for n in ["a", "b"] {
            let (ok, out) = sh(&["bash", repo().join("scripts/lab-node.sh").to_str().unwrap_or_default(), &lab.name, n, lab.work.to_str().unwrap_or_default()]);
            assert!(ok, "config {n}: {out}");
        }
        lab
    }

    pub fn var(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).unwrap_or_default()
    }

    pub fn ns(&self, node: &str) -> String {
        format!("rd{}-{node}", self.name)
    }

    pub fn exec(&self, node: &str, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec"];
        let ns = self.ns(node);
        v.push(&ns);
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn lab(&self, args: &[&str]) {
        let script = repo().join("scripts/lab.sh");
        let mut v = vec!["bash", script.to_str().unwrap_or_default()];
        v.push(args[0]);
        v.push(&self.name);
        v.extend_from_slice(&args[1..]);
        let (ok, out) = sh(&v);
        assert!(ok, "lab {args:?}: {out}");
    }

    pub fn start(&mut self, node: &str) {
        let log = std::fs::File::create(self.work.join(format!("{node}.log"))).expect("log");
        let cfg = self.work.join(format!("{node}.toml"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), BIN, "run", "--config", cfg.to_str().unwrap_or_default()])
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.daemons.push((node.to_string(), child));
    }

    /// SIGKILL, as a crashed daemon: the kernel keeps its addresses.
    pub fn kill9(&mut self, node: &str) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| n == node) {
            let (_, mut c) = self.daemons.remove(i);
            // `ip netns exec` execs the daemon, so this PID is the daemon's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn status(&self, node: &str) -> Option<Value> {
        let sock = self.work.join(format!("{node}.sock"));
        let out = Command::new(BIN).args(["status", "--json", "--socket", sock.to_str().unwrap_or_default()]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn role(&self, node: &str) -> String {
        self.status(node).and_then(|s| s["role"].as_str().map(str::to_lowercase)).unwrap_or_else(|| "down".into())
    }

    pub fn wait_role(&self, node: &str, role: &str, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.role(node) == role {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn holds_vip(&self, node: &str) -> bool {
        self.exec(node, &["ip", "-o", "addr", "show", "dev", "eth0"]).1.contains(&format!("{}/", self.var("LAB_VIP")))
    }

    pub fn mac(&self, node: &str) -> String {
        self.exec(node, &["cat", "/sys/class/net/eth0/address"]).1.trim().to_string()
    }

    /// The client pings the VIP; returns the MAC its neighbour table then holds for it.
    pub fn client_reaches_vip(&self) -> Option<String> {
        let vip = self.var("LAB_VIP").to_string();
        let (ok, _) = self.exec("c", &["ping", "-c1", "-W1", &vip]);
        if !ok {
            return None;
        }
        let neigh = self.exec("c", &["ip", "neigh", "show", &vip]).1;
        neigh.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_string)
    }

    /// The PID of NODE's daemon (`ip netns exec` execs it), if running.
    pub fn pid(&self, node: &str) -> Option<u32> {
        self.daemons.iter().find(|(n, _)| n == node).map(|(_, c)| c.id())
    }

    /// Sends SIG (e.g. "TERM", "STOP") to NODE's daemon.
    pub fn signal(&self, node: &str, sig: &str) {
        let pid = self.pid(node).unwrap_or(0).to_string();
        assert!(sh(&["kill", &format!("-{sig}"), &pid]).0, "kill -{sig} {node}");
    }

    /// Waits up to WITHIN for NODE's daemon to exit; how long it took.
    pub fn wait_exit(&mut self, node: &str, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        let i = self.daemons.iter().position(|(n, _)| n == node)?;
        while t.elapsed() < within {
            if let Ok(Some(_)) = self.daemons[i].1.try_wait() {
                self.daemons.remove(i);
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The status' alarms as text (JSON), "" when the daemon does not answer.
    pub fn alarms(&self, node: &str) -> String {
        self.status(node).map(|s| s["alarms"].to_string()).unwrap_or_default()
    }

    /// The operator CLI against NODE's control socket.
    pub fn cli(&self, node: &str, args: &[&str]) -> (bool, String) {
        let sock = self.work.join(format!("{node}.sock"));
        let mut v = vec![BIN];
        v.extend_from_slice(args);
        v.extend_from_slice(&["--socket", sock.to_str().unwrap_or_default()]);
        sh(&v)
    }

    pub fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.work.join(format!("{node}.log"))).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.daemons {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for (_, c) in &mut self.daemons {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let script = repo().join("scripts/lab.sh");
        let _ = sh(&["bash", script.to_str().unwrap_or_default(), "down", &self.name]);
        if std::thread::panicking() {
            for n in ["a", "b"] {
                eprintln!("--- log of {n}:\n{}", self.log(n));
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Two real mariadbd (one per node namespace) with the app schema on a, both daemons with a
/// default `[db]` section: a Master, b a replicating Slave.
pub fn db_lab(
    tag: &str,
    extra: &str,
) -> (Lab, ridondato_adapters::mariadb::testkit::Server, ridondato_adapters::mariadb::testkit::Server, tokio::runtime::Runtime) {
    use ridondato_adapters::mariadb::testkit::{self, Server};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut lab = Lab::up(tag);
    let (sa, sb) = (Server::start_in(1, Some(&lab.ns("a"))), Server::start_in(2, Some(&lab.ns("b"))));
    rt.block_on(testkit::prepare(&sa));
    rt.block_on(testkit::prepare(&sb));
    let pw = lab.work.join("repl.pw");
    std::fs::write(&pw, "replpw\n").expect("password file");
    let peer_pw = lab.work.join("peeradmin.pw");
    std::fs::write(&peer_pw, "peeradminpw\n").expect("password file");
    for n in ["a", "b"] {
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!(
            "[db]\ndsn = \"mysql://root@127.0.0.1:3306/\"\nrepl_user = \"repl\"\nrepl_password_file = \"{}\"\npeer_admin_user = \"peeradmin\"\npeer_admin_password_file = \"{}\"\napp_user = \"app\"\n",
            pw.display(),
            peer_pw.display()
        ));
        cfg.push_str(extra);
        std::fs::write(&path, cfg).expect("config");
    }
    let db = |lab: &Lab, n: &str, field: &str| lab.status(n).is_some_and(|s| s[field].as_bool() == Some(true));
    let wait = |lab: &Lab, n: &str, field: &str| {
        let t = Instant::now();
        while !db(lab, n, field) {
            assert!(t.elapsed() < Duration::from_secs(10), "{n}: {field} never became true: {:?}", lab.status(n));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)));
    wait(&lab, "a", "db_writable");
    rt.block_on(sa.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")).expect("schema");
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)));
    wait(&lab, "b", "db_replicating");
    (lab, sa, sb, rt)
}

/// Writes `token` to the lab's API token file (mode 600) and gives both nodes an `[api]` section
/// on port 8008 using it.
pub fn with_api(lab: &Lab, token: &str) {
    let file = lab.work.join("api.token");
    std::fs::write(&file, format!("{token}\n")).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for n in ["a", "b"] {
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("\n[api]\nport = 8008\ntoken_file = \"{}\"\n", file.display()));
        std::fs::write(&path, cfg).expect("config");
    }
}

/// A program the test started in one of the lab's namespaces, ended (by its PID) when dropped.
pub struct Spawned(Child);

impl Spawned {
    pub fn in_ns(lab: &Lab, node: &str, args: &[&str]) -> Spawned {
        let ns = lab.ns(node);
        let child = Command::new("ip").args(["netns", "exec", &ns]).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        Spawned(child.unwrap_or_else(|e| panic!("starting {args:?}: {e}")))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls OK every 50 ms; fails the caller with WHAT once WITHIN has passed.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < within, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A power loss of NODE: its daemon, its database server and its link, all at once.
pub fn power_loss(lab: &mut Lab, node: &str, db: &mut ridondato_adapters::mariadb::testkit::Server) {
    lab.kill9(node);
    db.kill9();
    lab.lab(&["link-down", node]);
}

/// Waits until the client has N more acknowledged rows than now.
pub fn wait_more_acks(what: &str, ids: &std::path::Path, n: usize, within: Duration) {
    let before = acked_and_outage(ids).0.len();
    wait_for(what, within, || acked_and_outage(ids).0.len() >= before + n);
}

pub fn db_flag(lab: &Lab, n: &str, field: &str) -> bool {
    lab.status(n).is_some_and(|s| s[field].as_bool() == Some(true))
}

/// A client in the client namespace inserting through the VIP as fast as the mariadb client
/// allows, each attempt bounded as a real client's connect/read timeouts are; the file gets the
/// id of every acknowledged row and the client's clock after it.
pub fn start_writer(lab: &Lab) -> (Writer, PathBuf) {
    let ids = lab.work.join("acked.txt");
    let vip = lab.var("LAB_VIP").to_string();
    let script = format!(
        "while :; do timeout 0.15 mariadb --connect-timeout=1 -h {vip} -u app -papppw -N -e 'INSERT INTO app.t (v) VALUES (1); SELECT LAST_INSERT_ID();' 2>>{}.err && date +%s%3N; done >> {}",
        ids.display(),
        ids.display()
    );
    let writer = Command::new("ip").args(["netns", "exec", &lab.ns("c"), "bash", "-c", &script]).spawn().expect("writer");
    (Writer(writer), ids)
}

/// A helper process of a test (the client loop, a flood), ended on drop, also when the test
/// fails half-way.
pub struct Writer(Child);

impl Writer {
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl From<Child> for Writer {
    fn from(c: Child) -> Writer {
        Writer(c)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Acknowledged ids, and the longest time without an acknowledged write (ms).
pub fn acked_and_outage(ids: &std::path::Path) -> (Vec<u64>, u64) {
    let lines: Vec<u64> = std::fs::read_to_string(ids).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    let acked: Vec<u64> = lines.iter().copied().filter(|v| *v < 1_000_000_000).collect();
    let times: Vec<u64> = lines.iter().copied().filter(|v| *v >= 1_000_000_000).collect();
    (acked, times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
}

pub fn ids_on(rt: &tokio::runtime::Runtime, s: &ridondato_adapters::mariadb::testkit::Server) -> std::collections::BTreeSet<u64> {
    rt.block_on(async {
        use sqlx::{Connection, Row};
        let mut c = sqlx::MySqlConnection::connect_with(&s.opts()).await.expect("connect");
        sqlx::query("SELECT id FROM app.t").fetch_all(&mut c).await.expect("ids").iter().map(|r| r.get::<i32, _>(0) as u64).collect()
    })
}
