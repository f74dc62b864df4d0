//! Real LAN tests: two `ridondato run` daemons in network namespaces (scripts/lab.sh), a client,
//! real VIPs and real ARP. Root, iproute2, nftables and ping are needed; under CI=true their
//! absence fails the test, elsewhere the test says why it skipped.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ridondato");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)),
        Err(e) => (false, e.to_string()),
    }
}

/// Whether the lab can run here; under CI a missing piece is a failure.
fn lab_available() -> bool {
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
struct Lab {
    name: String,
    work: PathBuf,
    env: std::collections::BTreeMap<String, String>,
    daemons: Vec<(String, Child)>,
}

impl Lab {
    fn up(tag: &str) -> Lab {
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
        let lab = Lab { name, work, env, daemons: Vec::new() };
        for n in ["a", "b"] {
            let (ok, out) = sh(&["bash", repo().join("scripts/lab-node.sh").to_str().unwrap_or_default(), &lab.name, n, lab.work.to_str().unwrap_or_default()]);
            assert!(ok, "config {n}: {out}");
        }
        lab
    }

    fn var(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).unwrap_or_default()
    }

    fn ns(&self, node: &str) -> String {
        format!("rd{}-{node}", self.name)
    }

    fn exec(&self, node: &str, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec"];
        let ns = self.ns(node);
        v.push(&ns);
        v.extend_from_slice(args);
        sh(&v)
    }

    fn lab(&self, args: &[&str]) {
        let script = repo().join("scripts/lab.sh");
        let mut v = vec!["bash", script.to_str().unwrap_or_default()];
        v.push(args[0]);
        v.push(&self.name);
        v.extend_from_slice(&args[1..]);
        let (ok, out) = sh(&v);
        assert!(ok, "lab {args:?}: {out}");
    }

    fn start(&mut self, node: &str) {
        let log = std::fs::File::create(self.work.join(format!("{node}.log"))).expect("log");
        let cfg = self.work.join(format!("{node}.toml"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), BIN, "run", "--config", cfg.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.daemons.push((node.to_string(), child));
    }

    /// SIGKILL, as a crashed daemon: the kernel keeps its addresses.
    fn kill9(&mut self, node: &str) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| n == node) {
            let (_, mut c) = self.daemons.remove(i);
            // `ip netns exec` execs the daemon, so this PID is the daemon's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn status(&self, node: &str) -> Option<Value> {
        let sock = self.work.join(format!("{node}.sock"));
        let out = Command::new(BIN).args(["status", "--json", "--socket", sock.to_str().unwrap_or_default()]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn role(&self, node: &str) -> String {
        self.status(node).and_then(|s| s["role"].as_str().map(str::to_lowercase)).unwrap_or_else(|| "down".into())
    }

    fn wait_role(&self, node: &str, role: &str, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.role(node) == role {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn holds_vip(&self, node: &str) -> bool {
        self.exec(node, &["ip", "-o", "addr", "show", "dev", "eth0"]).1.contains(&format!("{}/", self.var("LAB_VIP")))
    }

    fn mac(&self, node: &str) -> String {
        self.exec(node, &["cat", "/sys/class/net/eth0/address"]).1.trim().to_string()
    }

    /// The client pings the VIP; returns the MAC its neighbour table then holds for it.
    fn client_reaches_vip(&self) -> Option<String> {
        let vip = self.var("LAB_VIP").to_string();
        let (ok, _) = self.exec("c", &["ping", "-c1", "-W1", &vip]);
        if !ok {
            return None;
        }
        let neigh = self.exec("c", &["ip", "neigh", "show", &vip]).1;
        neigh.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_string)
    }

    fn log(&self, node: &str) -> String {
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

fn a_master_b_slave(lab: &mut Lab) {
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)), "a alone becomes Master (S10)");
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)), "b, started second, becomes Slave (S10)");
    assert_eq!(lab.role("a"), "master");
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
}

#[test]
fn startup_power_loss_failover_garp_and_no_preemption() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("f");
    a_master_b_slave(&mut lab);
    assert_eq!(lab.client_reaches_vip().as_deref(), Some(lab.mac("a").as_str()), "the client reaches the VIP on a");
    assert!(lab.work.join("a/services-running").exists() && !lab.work.join("b/services-running").exists(), "services only on the Master");

    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(3)), "b takes over when a's link dies (S3)");
    assert!(lab.holds_vip("b"));
    // The client reaches the VIP on b without waiting for its ARP entry to expire: GARP.
    assert_eq!(lab.client_reaches_vip().as_deref(), Some(lab.mac("b").as_str()), "GARP moved the client to b");
    assert!(lab.wait_role("a", "slave", Duration::from_secs(2)), "a lets go of the VIP on carrier loss");
    assert!(!lab.holds_vip("a"));

    // The dead node reboots while still cut off, then its cable comes back (S12).
    lab.kill9("a");
    lab.start("a");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(lab.role("a"), "master", "a node without carrier takes nothing");
    lab.lab(&["link-up", "a"]);
    assert!(lab.wait_role("a", "slave", Duration::from_secs(3)), "the rebooted node hears the Master and stays Slave (S12)");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.role("b"), "master", "no preemption");
    assert!(!lab.holds_vip("a") && lab.holds_vip("b"));
}

#[test]
fn an_ipv6_shared_ip_moves_with_an_unsolicited_neighbour_advertisement() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("6");
    let octet = lab.var("LAB_NET").rsplit('.').next().unwrap_or("1").to_string();
    let vip6 = format!("fd00:198:18:{octet}::100");
    for n in ["a", "b"] {
        let extra = format!("[[shared_ip]]\ninterface = \"eth0\"\naddress = \"{vip6}\"\nprefix = 64\n");
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&extra);
        std::fs::write(&path, cfg).expect("config");
    }
    let client6 = format!("fd00:198:18:{octet}::10/64");
    let (ok, out) = lab.exec("c", &["ip", "-6", "addr", "add", &client6, "dev", "eth0", "nodad"]);
    assert!(ok, "{out}");
    a_master_b_slave(&mut lab);
    let (ok, out) = lab.exec("c", &["ping", "-6", "-c1", "-W1", &vip6]);
    assert!(ok, "the client reaches the IPv6 VIP on a: {out}");
    let neigh = |lab: &Lab| lab.exec("c", &["ip", "-6", "neigh", "show", &vip6]).1;
    assert!(neigh(&lab).contains(&lab.mac("a")), "{}", neigh(&lab));
    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(300));
    // No ping in between: only b's unsolicited NA can have moved the client's entry.
    assert!(neigh(&lab).contains(&lab.mac("b")), "the NA moved the client to b: {}", neigh(&lab));
}

#[test]
fn a_killed_master_daemon_never_leaves_two_hosts_answering() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("k");
    a_master_b_slave(&mut lab);
    lab.kill9("a");
    // The kernel keeps a's VIP and keeps answering ARP: b must see that and not raise its own.
    let t = Instant::now();
    let mut both = 0;
    while t.elapsed() < Duration::from_secs(3) {
        if lab.holds_vip("a") && lab.holds_vip("b") {
            both += 1;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(both, 0, "both hosts held the VIP");
    assert_eq!(lab.role("b"), "slave");
    let alarms = lab.status("b").map(|s| s["alarms"].to_string()).unwrap_or_default();
    assert!(alarms.contains("VipAnsweredElsewhere"), "b says why it does not take over: {alarms}");
    // The daemon comes back (systemd would restart it): it lets go, and one Master results.
    lab.start("a");
    let t = Instant::now();
    let mut settled = false;
    while t.elapsed() < Duration::from_secs(8) {
        assert!(!(lab.holds_vip("a") && lab.holds_vip("b")), "both hosts held the VIP after the restart");
        let roles = (lab.role("a"), lab.role("b"));
        if (roles.0 == "master") != (roles.1 == "master") && (roles.0 == "slave" || roles.1 == "slave") {
            settled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(settled, "one Master and one Slave after the restart: {:?}", (lab.role("a"), lab.role("b")));
}

#[test]
fn a_cut_heartbeat_path_while_the_vip_answers_causes_no_failover_and_switchover_works() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("c");
    a_master_b_slave(&mut lab);
    lab.lab(&["drop-udp", "b", "7400", "both"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.role("a"), "master");
    assert_eq!(lab.role("b"), "slave", "no failover while a still answers for the VIP");
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
    lab.lab(&["heal", "b"]);
    std::thread::sleep(Duration::from_millis(500));

    // Planned switch-over through the CLI (B4/B5), then back.
    let sock = lab.work.join("a.sock");
    let (ok, out) = sh(&[BIN, "switchover", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(ok, "switchover: {out}");
    assert!(out.contains("switch-over done"), "{out}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(2)));
    assert!(lab.wait_role("a", "slave", Duration::from_secs(2)));
    assert!(lab.holds_vip("b") && !lab.holds_vip("a"));
    // Past the old Master's GARP repeats (1.1 s, 2.2 s after its last burst, here the one it sent
    // when the heartbeat path healed): it must not announce the VIP it no longer holds.
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(lab.client_reaches_vip().as_deref(), Some(lab.mac("b").as_str()), "the client stays with the new Master");
    let log_a = lab.log("a");
    let after = log_a.split("planned switch-over").nth(1).unwrap_or_default();
    assert!(log_a.contains("announced"), "a announced the VIP while Master:\n{log_a}");
    assert!(!after.contains("announced"), "a announced the VIP after handing it over:\n{after}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(1)));
    let (ok, out) = sh(&[BIN, "set-state", "bogus", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(!ok && out.contains("usage: ridondato set-state master [--accept-data-loss] | slave | off"), "{out}");
}

#[test]
fn forged_and_replayed_frames_are_refused() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("r");
    lab.start("b");
    std::thread::sleep(Duration::from_secs(1));
    let dest = format!("{}:7400", lab.var("LAB_B"));
    let secret = lab.work.join("secret");
    let s = secret.to_str().unwrap_or_default();
    // From a's address (the transport ignores any other source before parsing).
    let (ok, out) = lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--forge"]);
    assert!(ok, "{out}");
    let (ok, out) = lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--repeat", "2"]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let log = lab.log("b");
    assert!(log.contains("dropped a datagram: bad authentication tag"), "forged frame refused:\n{log}");
    assert!(log.contains("dropped a datagram: replayed or reordered"), "replayed frame refused:\n{log}");
    assert_eq!(log.matches("dropped a datagram").count(), 2, "exactly the forged and the repeated copy:\n{log}");
}

/// Two real mariadbd (one per node namespace) with the app schema on a, both daemons with a
/// default `[db]` section: a Master, b a replicating Slave.
fn db_lab(
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

fn db_flag(lab: &Lab, n: &str, field: &str) -> bool {
    lab.status(n).is_some_and(|s| s[field].as_bool() == Some(true))
}

/// A client in the client namespace inserting through the VIP as fast as the mariadb client
/// allows, each attempt bounded as a real client's connect/read timeouts are; the file gets the
/// id of every acknowledged row and the client's clock after it.
fn start_writer(lab: &Lab) -> (Child, PathBuf) {
    let ids = lab.work.join("acked.txt");
    let vip = lab.var("LAB_VIP").to_string();
    let script = format!(
        "while :; do timeout 0.15 mariadb --connect-timeout=1 -h {vip} -u app -papppw -N -e 'INSERT INTO app.t (v) VALUES (1); SELECT LAST_INSERT_ID();' 2>>{}.err && date +%s%3N; done >> {}",
        ids.display(),
        ids.display()
    );
    let writer = Command::new("ip").args(["netns", "exec", &lab.ns("c"), "bash", "-c", &script]).spawn().expect("writer");
    (writer, ids)
}

/// Acknowledged ids, and the longest time without an acknowledged write (ms).
fn acked_and_outage(ids: &std::path::Path) -> (Vec<u64>, u64) {
    let lines: Vec<u64> = std::fs::read_to_string(ids).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    let acked: Vec<u64> = lines.iter().copied().filter(|v| *v < 1_000_000_000).collect();
    let times: Vec<u64> = lines.iter().copied().filter(|v| *v >= 1_000_000_000).collect();
    (acked, times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
}

fn ids_on(rt: &tokio::runtime::Runtime, s: &ridondato_adapters::mariadb::testkit::Server) -> std::collections::BTreeSet<u64> {
    rt.block_on(async {
        use sqlx::{Connection, Row};
        let mut c = sqlx::MySqlConnection::connect_with(&s.opts()).await.expect("connect");
        sqlx::query("SELECT id FROM app.t").fetch_all(&mut c).await.expect("ids").iter().map(|r| r.get::<i32, _>(0) as u64).collect()
    })
}

#[test]
fn a_master_power_loss_under_writes_at_the_default_config_loses_no_acknowledged_row() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    let (mut lab, mut sa, sb, rt) = db_lab("p", "");
    let t = Instant::now();
    while !db_flag(&lab, "a", "semi_sync_active") {
        assert!(t.elapsed() < Duration::from_secs(10), "semi-sync is on by default and becomes active: {:?}", lab.status("a"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut writer, ids) = start_writer(&lab);
    std::thread::sleep(Duration::from_millis(1500));
    // Power loss: the daemon, the database server and the link, all at once.
    lab.kill9("a");
    sa.kill9();
    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(5)), "b takes over: {:?}", lab.status("b"));
    let t = Instant::now();
    while !db_flag(&lab, "b", "db_writable") {
        assert!(t.elapsed() < Duration::from_secs(10), "b's database opens: {:?}", lab.status("b"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2000));
    let _ = writer.kill();
    let _ = writer.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (acked, outage) = acked_and_outage(&ids);
    let present = ids_on(&rt, &sb);
    let lost: Vec<u64> = acked.iter().copied().filter(|i| !present.contains(i)).collect();
    assert!(acked.len() > 10, "the client wrote through the VIP: {} rows", acked.len());
    assert!(lost.is_empty(), "acknowledged rows missing on the new Master: {} of {}: {lost:?}", lost.len(), acked.len());
    assert!(lab.log("b").contains("promoted at position"), "the promotion reports what it held");
    eprintln!("power loss through the VIP (semi-sync default): {} rows acknowledged, none lost; write outage {outage} ms", acked.len());
}

#[test]
fn a_slave_with_stopped_replication_refuses_to_promote_and_the_override_works() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    // Asynchronous replication (semi-sync off): with semi-sync, what a stopped replica lacks was
    // never acknowledged to a client and the takeover is lossless (the power-loss test).
    let (mut lab, mut sa, sb, rt) = db_lab("r", "semi_sync = false\n");
    // Someone stops replication on b and keeps it stopped (the daemon restarts it: stop again).
    let (mut writer, _) = start_writer(&lab);
    let stop = |sb: &testkit::Server| rt.block_on(sb.sql("STOP SLAVE")).expect("stop slave");
    let t = Instant::now();
    loop {
        stop(&sb);
        let s = lab.status("b").unwrap_or_default();
        if s["db_lag_tx"].as_u64().unwrap_or(0) > 20 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "b falls behind: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.kill();
    let _ = writer.wait();
    stop(&sb);
    lab.kill9("a");
    sa.kill9();
    lab.lab(&["link-down", "a"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.role("b"), "slave", "a Slave known to miss transactions is not promoted automatically");
    let s = lab.status("b").unwrap_or_default();
    let alarms = s["alarms"].to_string();
    assert!(alarms.contains("NotPromotable") && alarms.contains("known missing"), "{alarms}");
    assert!(lab.log("b").contains("--accept-data-loss"), "the log says how to override");
    let sock = lab.work.join("b.sock");
    let (ok, out) = sh(&[BIN, "set-state", "master", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(!ok && out.contains("promotion policy"), "a plain set-state master is refused with the reason: {out}");
    let (ok, out) = sh(&[BIN, "set-state", "master", "--accept-data-loss", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(ok, "the override: {out}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(5)));
    let log = lab.log("b");
    assert!(log.contains("forced a promotion") && log.contains("transactions may be missing"), "the forced promotion is logged with what it may lose");
    drop(sb);
}

#[test]
fn a_planned_switchover_with_mariadb_through_the_vip_loses_no_acknowledged_row() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    let (lab, sa, sb, rt) = db_lab("d", "");
    let (mut writer, ids) = start_writer(&lab);
    std::thread::sleep(Duration::from_millis(1500));
    let sock = lab.work.join("a.sock");
    let (ok, out) = sh(&[BIN, "switchover", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(ok, "switchover: {out}");
    std::thread::sleep(Duration::from_millis(5000));
    let _ = writer.kill();
    let _ = writer.wait();
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(lab.role("b"), "master");
    assert!(db_flag(&lab, "b", "db_writable") && !db_flag(&lab, "a", "db_writable"));
    let (acked, outage) = acked_and_outage(&ids);
    let present = ids_on(&rt, &sb);
    let b_binlog = rt.block_on(async {
        use sqlx::{Connection, Row};
        let mut c = sqlx::MySqlConnection::connect_with(&sb.opts()).await.expect("connect");
        sqlx::query("SELECT CAST(@@GLOBAL.gtid_binlog_pos AS CHAR)").fetch_one(&mut c).await.expect("pos").get::<String, _>(0)
    });
    let lost: Vec<u64> = acked.iter().copied().filter(|i| !present.contains(i)).collect();
    assert!(acked.len() > 10, "the client wrote through the VIP: {} rows", acked.len());
    assert!(lost.is_empty(), "acknowledged rows missing on the new Master: {lost:?}");
    assert!(b_binlog.contains("0-2-"), "the client kept writing on b after the switch-over: {b_binlog}; status b {:?}", lab.status("b"));
    eprintln!("switch-over through the VIP: {} rows acknowledged, none lost; longest time without a commit {outage} ms", acked.len());
    drop(lab);
    drop((sa, sb));
}

/// Waits until `path` holds `want`.
fn wait_content(path: &std::path::Path, want: &[u8], within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if std::fs::read(path).is_ok_and(|c| c == want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn files_follow_the_master_across_a_switchover_and_a_failover() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("s");
    let work = lab.work.clone();
    let dir = |n: &str| work.join(n).join("files");
    for n in ["a", "b"] {
        std::fs::create_dir_all(dir(n)).expect("files dir");
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("[fs]\npaths = [\"{}\"]\nexclude = [\"*.tmp\"]\n", dir(n).display()));
        std::fs::write(&path, cfg).expect("config");
    }
    std::fs::write(dir("a").join("before"), b"on a before the cluster started").expect("write");
    a_master_b_slave(&mut lab);
    assert!(wait_content(&dir("b").join("before"), b"on a before the cluster started", Duration::from_secs(5)), "the Master's first full pass");
    std::fs::write(dir("a").join("recording.wav"), b"RIFF from a").expect("write");
    assert!(wait_content(&dir("b").join("recording.wav"), b"RIFF from a", Duration::from_secs(3)), "a change reaches the Slave");
    // The status is refreshed every 250 ms: the report catches up with the transfer.
    let fs = || lab.status("a").map(|s| s["fs"].clone()).unwrap_or_default();
    let drained = |f: &Value| f["bytes"].as_u64().unwrap_or(0) > 0 && f["backlog"] == 0 && f["last_error"].is_null() && f["rescans"].as_u64() >= Some(1);
    let t = Instant::now();
    while !drained(&fs()) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(drained(&fs()), "the Master reports its file sync: {}", fs());

    // Planned switch-over: b pushes now, and a refuses pushes no more.
    let sock = lab.work.join("a.sock");
    let (ok, out) = sh(&[BIN, "switchover", "--socket", sock.to_str().unwrap_or_default()]);
    assert!(ok, "switchover: {out}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(3)) && lab.wait_role("a", "slave", Duration::from_secs(3)));
    std::fs::write(dir("b").join("after-switchover"), b"from b").expect("write");
    assert!(wait_content(&dir("a").join("after-switchover"), b"from b", Duration::from_secs(3)), "the new Master's change reaches a");

    // Failover: b's cable pulled; a takes over and writes; b comes back as Slave and catches up.
    lab.lab(&["link-down", "b"]);
    assert!(lab.wait_role("a", "master", Duration::from_secs(3)), "a takes over");
    std::fs::write(dir("a").join("during-outage"), b"written while b was away").expect("write");
    lab.lab(&["link-up", "b"]);
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)), "b returns as Slave");
    assert!(wait_content(&dir("b").join("during-outage"), b"written while b was away", Duration::from_secs(10)), "b catches up");
    let human = || {
        String::from_utf8_lossy(&Command::new(BIN).args(["status", "--socket", sock.to_str().unwrap_or_default()]).output().expect("status").stdout).to_string()
    };
    let t = Instant::now();
    while !human().contains("fs backlog 0") && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(human().contains("fs backlog 0"), "the operator sees the file sync drained:\n{}", human());

    // Forced FS resync on the Slave (S11): what it lost or gained behind the sync's back is put
    // right from the Master, with the job's progress in files.
    std::fs::remove_file(dir("b").join("recording.wav")).expect("lose a file on the Slave");
    std::fs::write(dir("b").join("stray"), b"only on the Slave").expect("write");
    let sock_b = lab.work.join("b.sock");
    let (ok, out) = sh(&[BIN, "resync", "fs", "--socket", sock_b.to_str().unwrap_or_default()]);
    assert!(ok && out.contains("resync fs done"), "resync: {out}");
    assert!(wait_content(&dir("b").join("recording.wav"), b"RIFF from a", Duration::from_secs(1)), "the lost file is back");
    assert!(!dir("b").join("stray").exists(), "the stray file is gone");
    let job = lab.status("b").map(|s| s["job"].clone()).unwrap_or_default();
    assert_eq!(job["state"], "Done", "{job}");
    assert!(job["files"][1].as_u64().unwrap_or(0) >= 4 && job["files"][0] == job["files"][1], "files counted: {job}");
}
