//! Real LAN tests: two `ridondato run` daemons in network namespaces (scripts/lab.sh), a client,
//! real VIPs and real ARP. Root, iproute2, nftables and ping are needed; under CI=true their
//! absence fails the test, elsewhere the test says why it skipped.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

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

    // B9: each node journaled its inputs; a core run again from them answers exactly the same,
    // a's killed run included, and b's view becomes a scenario in which b takes over again.
    let replay = |args: &[&str]| {
        let o = Command::new(BIN).arg("replay").args(args).output().expect("replay");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let scn = lab.work.join("incident.scn");
    let (ok, out) = replay(&[lab.work.join("b/journal").to_str().unwrap_or_default(), "--to-scenario", scn.to_str().unwrap_or_default()]);
    assert!(ok && out.contains("every answer identical") && out.contains("b   role slave -> master"), "{out}");
    let (ok, out) = replay(&[lab.work.join("a/journal").to_str().unwrap_or_default()]);
    assert!(ok && out.matches("every answer identical").count() == 2, "both of a's runs: {out}");
    // Where the failover's time went: each operation with its duration, each heartbeat heard.
    let (ok, out) = replay(&[lab.work.join("b/journal").to_str().unwrap_or_default(), "--ops"]);
    let persisted = out.lines().any(|l| l.contains("b   op persist done after") && l.contains("ms: Ok"));
    assert!(ok && persisted && out.contains("b   op arp-probe started") && out.contains("b   heard heartbeat from n1 (Master"), "{out}");
    let text = std::fs::read_to_string(&scn).expect("scenario");
    assert!(text.contains("power-off a") && text.contains("power-on a"), "a's restart as b heard it:\n{text}");
    let o = Command::new(BIN).args(["sim", scn.to_str().unwrap_or_default()]).output().expect("sim");
    let sim = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && sim.contains("b   role slave -> master"), "the incident plays again in the simulator:\n{text}\n{sim}");
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
    // The kernel keeps a's VIP and answers ARP for it until its lease runs out (2 s): b must
    // not raise its own meanwhile, and takes over once the address is gone.
    let t = Instant::now();
    let mut refused_while_held = false;
    while !lab.holds_vip("b") {
        assert!(t.elapsed() < Duration::from_secs(8), "b takes over once a's lease ran out: {:?}", lab.status("b"));
        refused_while_held |= lab.holds_vip("a") && lab.alarms("b").contains("VipAnsweredElsewhere");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(!lab.holds_vip("a"), "both hosts held the VIP");
    assert!(refused_while_held, "b said why it waited while a's address lived");
    eprintln!("killed Master daemon: b holds the VIP after {} ms (lease 2000 ms)", t.elapsed().as_millis());
    // The daemon comes back (systemd would restart it): it follows b.
    lab.start("a");
    let t = Instant::now();
    while lab.role("a") != "slave" {
        assert!(!(lab.holds_vip("a") && lab.holds_vip("b")), "both hosts held the VIP after the restart");
        assert!(t.elapsed() < Duration::from_secs(8), "a follows b after the restart: {:?}", lab.status("a"));
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(lab.role("b"), "master");
}

#[test]
fn a_hung_master_loses_the_vip_by_its_lease_and_the_slave_takes_over() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("z");
    a_master_b_slave(&mut lab);
    let pid = lab.pid("a").unwrap_or(0).to_string();
    assert!(sh(&["kill", "-STOP", &pid]).0);
    // A hung daemon renews nothing: the kernel drops its address, and b takes over.
    let t = Instant::now();
    let mut gone = None;
    while !lab.holds_vip("b") {
        assert!(t.elapsed() < Duration::from_secs(8), "b takes over from a hung Master: {:?}", lab.status("b"));
        if gone.is_none() && !lab.holds_vip("a") {
            gone = Some(t.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let took = t.elapsed().as_millis();
    assert!(!lab.holds_vip("a"), "both hosts held the VIP");
    assert_eq!(lab.client_reaches_vip().as_deref(), Some(lab.mac("b").as_str()), "the client reaches b");
    // The CLI against the hung daemon gives up after its bound and says so.
    let t = Instant::now();
    let (ok, out) = lab.cli("a", &["status"]);
    assert!(!ok && out.contains("did not answer within 5 s") && t.elapsed() < Duration::from_secs(7), "{out} after {:?}", t.elapsed());
    // The daemon wakes up: it finds its address gone and b Master, and follows; never two.
    assert!(sh(&["kill", "-CONT", &pid]).0);
    let t = Instant::now();
    while lab.role("a") != "slave" {
        assert!(!(lab.holds_vip("a") && lab.holds_vip("b")), "both hosts held the VIP after SIGCONT");
        assert!(t.elapsed() < Duration::from_secs(8), "a follows b after SIGCONT: {:?}", lab.status("a"));
        std::thread::sleep(Duration::from_millis(30));
    }
    for _ in 0..20 {
        assert!(!(lab.holds_vip("a") && lab.holds_vip("b")), "both hosts held the VIP after SIGCONT");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.role("b"), "master");
    eprintln!("hung Master (SIGSTOP): its VIP gone after {} ms, b holds it after {took} ms (lease 2000 ms)", gone.unwrap_or(0));
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
    assert!(!ok && out.contains("invalid value 'bogus'") && out.contains("master, slave, off"), "{out}");
}

#[test]
fn forged_and_replayed_frames_are_refused_even_after_the_receiver_restarts() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("r");
    lab.start("b");
    wait_for("b runs", Duration::from_secs(5), || lab.status("b").is_some());
    let dest = format!("{}:7400", lab.var("LAB_B"));
    let secret = lab.work.join("secret");
    let s = secret.to_str().unwrap_or_default();
    let captured = lab.work.join("captured.frame");
    let cap = captured.to_str().unwrap_or_default();
    // A forged frame, from a's address (the transport ignores any other source before parsing).
    let (ok, out) = lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--forge"]);
    assert!(ok, "{out}");
    // Node a's run, played by the tool on a's port: it hears b's run, sends a genuine frame
    // twice (the copy is a replay), and keeps it.
    let bind = format!("{}:7400", lab.var("LAB_A"));
    let (ok, out) =
        lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--bind", &bind, "--repeat", "2", "--save", cap]);
    assert!(ok, "{out}");
    // Counted by reason in the status; the log says the first at once (later ones go into a
    // summary line at most every 10 s).
    let dropped = |lab: &Lab, why: &str| lab.status("b").and_then(|s| s["dropped_datagrams"][why].as_u64()).unwrap_or(0);
    wait_for("the forged and the repeated frame are refused", Duration::from_secs(3), || {
        dropped(&lab, "bad authentication tag") == 1 && dropped(&lab, "replayed or reordered") == 1
    });
    assert!(lab.log("b").contains(&format!("dropped a datagram from {}:7400: bad authentication tag", lab.var("LAB_A"))), "{}", lab.log("b"));
    // A flood of forged frames from a's address: counted, and the log stays a few lines.
    let (ok, out) = lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--forge", "--repeat", "20000"]);
    assert!(ok, "{out}");
    // (A burst overflows the receive buffer: not all of it arrives.)
    wait_for("the flood is counted", Duration::from_secs(10), || dropped(&lab, "bad authentication tag") >= 1_000);
    let lines = lab.log("b").matches("dropped").count();
    assert!(lines <= 3, "{lines} log lines for the flood:\n{}", lab.log("b"));
    // b restarts (a new run); the captured frame, replayed, names b's previous run.
    lab.kill9("b");
    lab.start("b");
    wait_for("b runs again", Duration::from_secs(5), || lab.status("b").is_some());
    let (ok, out) = lab.exec("a", &[BIN, "lab-frame", "--secret", s, "--from", "1", "--to", "2", "--dest", &dest, "--replay", cap]);
    assert!(ok, "{out}");
    wait_for("the frame of b's earlier run is refused", Duration::from_secs(3), || dropped(&lab, "addressed to an earlier run of this node") == 1);
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
    let kill_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    // Power loss: the daemon, the database server and the link, all at once.
    power_loss(&mut lab, "a", &mut sa);
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
    if std::env::var("LAB_DEBUG").is_ok() {
        eprintln!("{}\n{}", lab.log("b"), std::fs::read_to_string(&ids).unwrap_or_default().lines().filter(|l| l.len() > 9).collect::<Vec<_>>().join(" "));
        eprintln!("kill at {}", kill_ms);
    }
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
    power_loss(&mut lab, "a", &mut sa);
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

/// Acknowledged rows of the client missing on S (after the client stopped).
fn lost_on(rt: &tokio::runtime::Runtime, s: &ridondato_adapters::mariadb::testkit::Server, ids: &std::path::Path) -> (usize, Vec<u64>) {
    let (acked, _) = acked_and_outage(ids);
    let present = ids_on(rt, s);
    (acked.len(), acked.into_iter().filter(|i| !present.contains(i)).collect())
}

#[test]
fn a_slave_database_killed_and_restarted_is_alarmed_resumes_and_a_later_power_loss_loses_nothing() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    let (mut lab, mut sa, mut sb, rt) = db_lab("k", "");
    wait_for("semi-sync active", Duration::from_secs(10), || db_flag(&lab, "a", "semi_sync_active"));
    let (mut writer, ids) = start_writer(&lab);
    wait_for("the client writes", Duration::from_secs(10), || acked_and_outage(&ids).0.len() >= 20);
    sb.kill9();
    wait_for("b says its database is down", Duration::from_secs(5), || lab.alarms("b").contains("DbUnreachable"));
    assert!(!db_flag(&lab, "b", "db_replicating"), "no stale 'replicating' on show: {:?}", lab.status("b"));
    wait_for("a says redundancy is lost", Duration::from_secs(8), || lab.alarms("a").contains("RedundancyLost"));
    // A service manager starts it again: read-only, replication not started (skip-slave-start).
    sb.restart();
    wait_for("b replicates again", Duration::from_secs(15), || db_flag(&lab, "b", "db_replicating") && !lab.alarms("b").contains("DbUnreachable"));
    wait_for("semi-sync active again on a", Duration::from_secs(15), || db_flag(&lab, "a", "semi_sync_active") && !lab.alarms("a").contains("RedundancyLost"));
    wait_more_acks("the client writes", &ids, 20, Duration::from_secs(10));
    power_loss(&mut lab, "a", &mut sa);
    wait_for("b takes over with a writable database", Duration::from_secs(10), || db_flag(&lab, "b", "db_writable"));
    wait_more_acks("the client writes on b", &ids, 20, Duration::from_secs(10));
    let _ = writer.kill();
    let _ = writer.wait();
    let (acked, lost) = lost_on(&rt, &sb, &ids);
    assert!(lost.is_empty(), "acknowledged rows missing on the new Master: {} of {acked}: {lost:?}", lost.len());
    eprintln!("slave DB restart then power loss: {acked} rows acknowledged, none lost");
}

#[test]
fn the_masters_database_killed_alone_raises_an_alarm_at_once_and_the_role_moves_to_the_slave() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    let (lab, mut sa, sb, rt) = db_lab("d", "down_handover_ms = 3000\n");
    wait_for("semi-sync active", Duration::from_secs(10), || db_flag(&lab, "a", "semi_sync_active"));
    let (mut writer, ids) = start_writer(&lab);
    wait_for("the client writes", Duration::from_secs(10), || acked_and_outage(&ids).0.len() >= 20);
    // Only mariadbd dies: the daemon, the VIP and the link stay up.
    sa.kill9();
    let t = Instant::now();
    wait_for("a raises db-unreachable", Duration::from_secs(2), || lab.alarms("a").contains("DbUnreachable"));
    let alarm_ms = t.elapsed().as_millis();
    wait_for("the role moves to b", Duration::from_secs(3 + 5), || lab.role("b") == "master" && db_flag(&lab, "b", "db_writable"));
    let moved_ms = t.elapsed().as_millis();
    assert!(lab.holds_vip("b") && !lab.holds_vip("a"), "the VIP moved with the role");
    assert!(lab.log("a").contains("handing the role to the Slave"), "a says why it hands over:\n{}", lab.log("a"));
    wait_more_acks("the client writes on b", &ids, 20, Duration::from_secs(10));
    let _ = writer.kill();
    let _ = writer.wait();
    let (acked, lost) = lost_on(&rt, &sb, &ids);
    assert!(lost.is_empty(), "acknowledged rows missing on b: {} of {acked}: {lost:?}", lost.len());
    eprintln!("master DB killed alone: alarm after {alarm_ms} ms, role on b after {moved_ms} ms (bound 3000 ms), {acked} acknowledged, none lost");
}

#[test]
fn a_returning_masters_errant_transactions_are_counted_exactly_and_saved_before_the_resync() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    // Async replication: a commits what b never receives.
    let (mut lab, sa, sb, rt) = db_lab("e", "semi_sync = false\n");
    const ERRANT: u64 = 7;
    rt.block_on(sb.sql("STOP SLAVE")).expect("stop slave");
    for _ in 0..ERRANT {
        rt.block_on(sa.sql("INSERT INTO app.t (v) VALUES (7)")).expect("insert on a");
    }
    // b hears a's position and knows what it lacks (before its daemon restarts replication).
    let t = Instant::now();
    while lab.status("b").and_then(|s| s["db_lag_tx"].as_u64()).unwrap_or(0) < ERRANT {
        let _ = rt.block_on(sb.sql("STOP SLAVE"));
        assert!(t.elapsed() < Duration::from_secs(5), "b sees the gap: {:?}", lab.status("b"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rt.block_on(sb.sql("STOP SLAVE"));
    // a's daemon dies and its cable is pulled; its database keeps the rows b lacks.
    lab.kill9("a");
    lab.lab(&["link-down", "a"]);
    wait_for("b refuses to promote itself", Duration::from_secs(5), || lab.alarms("b").contains("NotPromotable"));
    let (ok, out) = lab.cli("b", &["set-state", "master", "--accept-data-loss"]);
    assert!(ok, "forced promotion: {out}");
    wait_for("b is Master", Duration::from_secs(10), || lab.role("b") == "master" && db_flag(&lab, "b", "db_writable"));
    // a comes back: it follows b, finds exactly its errant transactions and refuses to replicate.
    lab.lab(&["link-up", "a"]);
    lab.start("a");
    let want = format!("{{\"ErrantTransactions\":{{\"count\":{ERRANT}}}}}");
    wait_for("a counts its errant transactions", Duration::from_secs(15), || lab.alarms("a").contains(&want));
    let s = lab.status("a").unwrap_or_default();
    assert_eq!(s["role"].as_str().map(str::to_lowercase).as_deref(), Some("slave"), "{s:?}");
    assert_eq!(s["needs_resync"].as_bool(), Some(true), "{s:?}");
    assert!(lab.log("a").contains(&format!("errant transactions: {ERRANT} here that the Master lacks (0-1-")), "{}", lab.log("a"));
    // The resync saves them before overwriting anything.
    let (ok, out) = lab.cli("a", &["resync", "db", "--yes"]);
    assert!(ok, "resync: {out}");
    wait_for("a replicates from b", Duration::from_secs(20), || {
        db_flag(&lab, "a", "db_replicating") && !lab.status("a").is_some_and(|s| s["needs_resync"] == true)
    });
    let saved = std::fs::read_dir(lab.work.join("a/db-backups")).expect("backup dir").filter_map(Result::ok).map(|e| e.path()).next().expect("a saved copy");
    let report = std::fs::read_to_string(saved.join("report.txt")).expect("report");
    assert!(report.contains(&format!("errant transactions (here, not on the Master): {ERRANT} (0-1-")), "{report}");
    let dump = std::fs::read_to_string(saved.join("local.sql")).expect("dump");
    assert!(dump.contains("CREATE DATABASE") && dump.matches(",7)").count() as u64 == ERRANT, "the errant rows are in the copy");
    assert_eq!(ids_on(&rt, &sa), ids_on(&rt, &sb), "after the resync a holds exactly b's rows");
}

#[test]
fn a_resync_failing_half_way_leaves_a_flagged_unpromotable_node_and_the_saved_copy() {
    use ridondato_adapters::mariadb::testkit;
    if !lab_available() || !testkit::available() {
        return;
    }
    let (mut lab, mut sa, sb, rt) = db_lab("h", "");
    // Enough data that the copy takes a while: 2^17 rows of 255 bytes.
    let mut q =
        String::from("CREATE TABLE app.big (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(255)); INSERT INTO app.big (pad) VALUES (REPEAT('x', 255));");
    for _ in 0..17 {
        q.push_str("INSERT INTO app.big (pad) SELECT pad FROM app.big;");
    }
    rt.block_on(sa.sql(&q)).expect("data");
    wait_for("b caught up", Duration::from_secs(30), || lab.status("b").is_some_and(|s| s["db_lag_tx"].as_u64() == Some(0) && s["db_replicating"] == true));
    let (ok, out) = lab.cli("b", &["resync", "db", "--yes", "--no-wait"]);
    assert!(ok, "resync: {out}");
    wait_for("the copy is under way", Duration::from_secs(20), || {
        lab.status("b").is_some_and(|s| s["job"]["phase"] == "DbCopy" && s["job"]["done"].as_u64().unwrap_or(0) > 0)
    });
    // Mid-copy, the Master's side goes away for the peer-admin account.
    rt.block_on(async {
        use sqlx::{Connection, Executor, Row};
        let mut c = sqlx::MySqlConnection::connect_with(&sa.opts()).await.expect("connect");
        c.execute("REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'peeradmin'@'%'").await.expect("revoke");
        for r in
            sqlx::query("SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE USER = 'peeradmin'").fetch_all(&mut c).await.expect("sessions")
        {
            let _ = c.execute(format!("KILL CONNECTION {}", r.get::<i64, _>(0)).as_str()).await;
        }
    });
    wait_for("the job fails", Duration::from_secs(30), || lab.alarms("b").contains("ResyncFailed"));
    let s = lab.status("b").unwrap_or_default();
    assert_eq!(s["needs_resync"].as_bool(), Some(true), "still flagged: {s:?}");
    assert!(s["promotion_blocker"].is_string(), "the policy refuses it: {s:?}");
    let saved = std::fs::read_dir(lab.work.join("b/db-backups")).expect("backup dir").filter_map(Result::ok).map(|e| e.path()).next().expect("a saved copy");
    let dump = std::fs::read_to_string(saved.join("local.sql")).expect("dump");
    assert!(dump.contains("CREATE TABLE `big`") && dump.len() > 1 << 20, "b's data is in the copy ({} bytes)", dump.len());
    assert!(saved.join("report.txt").exists());
    // The Master loses power: the half-copied b is not promoted.
    power_loss(&mut lab, "a", &mut sa);
    wait_for("b refuses to promote", Duration::from_secs(5), || lab.alarms("b").contains("NotPromotable"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.role("b"), "slave", "a half-copied node is never promoted automatically");
    drop(sb);
}

/// An unprivileged local user on NODE opening as many connections as it may to every TCP port
/// the node listens on (the file-sync relay on loopback, the rsync daemon on the management IP)
/// and trying the control socket; it holds them until killed. READY gets "<connections>
/// <control socket: opened|refused>" once they are open.
fn flood_as_nobody(lab: &Lab, node: &str, ready: &str) -> support::Writer {
    let sock = lab.work.join(format!("{node}.sock"));
    let script = format!(
        r#"ulimit -n $(ulimit -Hn); n=0
for hp in $(ss -ltnH | awk '{{print $4}}'); do h=${{hp%:*}}; p=${{hp##*:}}; echo "port $hp from $n" >> {ready}.log
  for i in $(seq 4000); do exec {{fd}}<>/dev/tcp/$h/$p 2>>{ready}.log || break; n=$((n+1)); done
done
c=refused; exec {{fd}}<>{} 2>/dev/null && c=opened
echo "$n $c" > {ready}.tmp && mv {ready}.tmp {ready}; exec sleep 120"#,
        sock.display(),
    );
    let _ = std::fs::remove_file(ready);
    let _ = std::fs::remove_file(format!("{ready}.log"));
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns(node), "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c", &script])
        .spawn()
        .expect("flood");
    support::Writer::from(child)
}

#[test]
fn an_unprivileged_local_flood_stops_neither_the_cli_nor_file_sync_nor_a_failover() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("n");
    let work = lab.work.clone();
    let dir = |n: &str| work.join(n).join("files");
    for n in ["a", "b"] {
        std::fs::create_dir_all(dir(n)).expect("files dir");
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("[fs]\npaths = [\"{}\"]\n", dir(n).display()));
        std::fs::write(&path, cfg).expect("config");
    }
    a_master_b_slave(&mut lab);
    // Both nodes flooded by a local user without privileges.
    // (In /tmp: the unprivileged user cannot write to the lab's work directory.)
    let name = lab.name.clone();
    let ready = |n: &str| format!("/tmp/ridondato-flood-{name}-{n}");
    let _fa = flood_as_nobody(&lab, "a", &ready("a"));
    let _fb = flood_as_nobody(&lab, "b", &ready("b"));
    for n in ["a", "b"] {
        let t = Instant::now();
        while !std::path::Path::new(&ready(n)).exists() {
            let log = std::fs::read_to_string(format!("{}.log", ready(n))).unwrap_or_default();
            assert!(t.elapsed() < Duration::from_secs(60), "the flood on {n} did not finish: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let said = std::fs::read_to_string(ready(n)).unwrap_or_default();
        let count: u64 = said.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(0);
        eprintln!("flood on {n}: {said}");
        assert!(count >= 4000 && said.contains("refused"), "the flood opened {count} connections, control socket {said}");
    }
    // The daemons did not take the flood's connections in (each would hold a descriptor), and
    // no rsync process was started for them.
    for n in ["a", "b"] {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", lab.pid(n).unwrap_or(0))).map(|d| d.count()).unwrap_or(usize::MAX);
        assert!(fds < 200, "{n}'s daemon holds {fds} descriptors under the flood");
    }
    let rsyncs = sh(&["pgrep", "-c", "-P", &lab.pid("b").unwrap_or(0).to_string(), "rsync"]).1.trim().parse::<u32>().unwrap_or(0);
    assert!(rsyncs <= 1, "b started {rsyncs} rsync processes for the flood");
    // The CLI answers, file sync still reaches the Slave.
    for n in ["a", "b"] {
        let (ok, out) = lab.cli(n, &["status"]);
        assert!(ok, "{n}'s CLI under the flood: {out}");
    }
    std::fs::write(dir("a").join("during-flood"), b"still synced").expect("write");
    assert!(wait_content(&dir("b").join("during-flood"), b"still synced", Duration::from_secs(5)), "file sync under the flood");
    // The Master loses power: the flooded Slave takes over (persisting its epoch, raising the VIP).
    lab.kill9("a");
    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(5)), "b takes over under the flood: {:?}", lab.status("b"));
    assert!(lab.holds_vip("b"));
    assert!(!lab.log("b").contains("accept failed"), "no accept loop ran out of descriptors:\n{}", lab.log("b"));
    for n in ["a", "b"] {
        let _ = std::fs::remove_file(ready(n));
        let _ = std::fs::remove_file(format!("{}.log", ready(n)));
    }
}

#[test]
fn stopping_is_bounded_and_never_hands_over_to_a_leaving_or_frozen_peer() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("q");
    a_master_b_slave(&mut lab);
    // Every operator command is in the log with its caller.
    let (ok, out) = lab.cli("a", &["maintenance", "off"]);
    assert!(ok, "{out}");
    assert!(lab.log("a").contains("operator command from uid 0 pid "), "audited:\n{}", lab.log("a"));
    // The Slave stops, and 200 ms later the Master: no 10-s hand-over to a peer that left.
    lab.signal("b", "TERM");
    std::thread::sleep(Duration::from_millis(200));
    lab.signal("a", "TERM");
    let took = lab.wait_exit("a", Duration::from_secs(5)).expect("the Master stops without waiting for a peer that left");
    assert!(lab.wait_exit("b", Duration::from_secs(5)).is_some());
    assert!(!lab.holds_vip("a"), "the VIP went with it");
    eprintln!("Master stopped {} ms after SIGTERM, its Slave gone 200 ms before", took.as_millis());
    // Again, with a Slave that freezes just as the Master is told to stop: the hand-over
    // starts (the Slave was heard a moment ago) and cannot finish; a second signal ends it.
    a_master_b_slave(&mut lab);
    lab.signal("b", "STOP");
    lab.signal("a", "TERM");
    std::thread::sleep(Duration::from_millis(800));
    lab.signal("a", "TERM");
    let took = lab.wait_exit("a", Duration::from_secs(3)).expect("a second signal stops it at once");
    assert!(lab.log("a").contains("second signal: stopping now"), "it was the second signal:\n{}", lab.log("a"));
    assert!(!lab.holds_vip("a"), "the VIP was dropped before exiting");
    lab.signal("b", "CONT");
    eprintln!("second SIGTERM: stopped {} ms later", took.as_millis());
}

/// The Master learns of a pulled cable from the kernel's link notification, not at the next
/// 250-ms poll: it lets go of the VIP at once, and the Slave (whose link is fine) takes over.
#[test]
fn a_pulled_cable_is_seen_from_the_kernels_link_event() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("l");
    a_master_b_slave(&mut lab);
    let mut took = Vec::new();
    for _ in 0..3 {
        lab.lab(&["link-down", "a"]);
        let t = Instant::now();
        wait_for("a sees its link down", Duration::from_secs(2), || lab.alarms("a").contains("LinkDown"));
        took.push(t.elapsed().as_millis());
        lab.lab(&["link-up", "a"]);
        wait_for("a sees its link back", Duration::from_secs(3), || !lab.alarms("a").contains("LinkDown"));
    }
    took.sort_unstable();
    eprintln!("link-down seen after {took:?} ms (status polled through the CLI)");
    assert!(took[1] < 60, "the median is far under the 250-ms poll: {took:?}");
}

/// An IPv6-only VIP is probed too (duplicate address detection): the Slave does not raise it
/// while the killed Master's kernel still holds it, and takes over once its lease ran out.
#[test]
fn an_ipv6_only_vip_is_probed_before_a_takeover() {
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("w");
    let octet = lab.var("LAB_NET").rsplit('.').next().unwrap_or("1").to_string();
    let vip6 = format!("fd00:198:18:{octet}::100");
    for n in ["a", "b"] {
        let path = lab.work.join(format!("{n}.toml"));
        let cfg = std::fs::read_to_string(&path).expect("config");
        // The IPv4 VIP replaced by an IPv6 one.
        let head = cfg.split("[[shared_ip]]").next().unwrap_or_default().to_string();
        let tail = cfg.split("[[shared_ip]]").nth(1).map(|t| t.split_once("\n[").map(|(_, r)| format!("\n[{r}")).unwrap_or_default()).unwrap_or_default();
        let v6 = format!("[[shared_ip]]\ninterface = \"eth0\"\naddress = \"{vip6}\"\nprefix = 64\nprimary = true\n");
        std::fs::write(&path, format!("{head}{v6}{tail}")).expect("config");
    }
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)), "{}", lab.log("a"));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)), "{}", lab.log("b"));
    let holds6 = |lab: &Lab, n: &str| lab.exec(n, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).1.contains(&format!("{vip6}/"));
    assert!(holds6(&lab, "a"));
    lab.kill9("a");
    let t = Instant::now();
    let mut waited = false;
    while !holds6(&lab, "b") {
        assert!(t.elapsed() < Duration::from_secs(8), "b takes over once a's lease ran out: {}", lab.log("b"));
        waited |= holds6(&lab, "a") && lab.alarms("b").contains("VipAnsweredElsewhere");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(!holds6(&lab, "a"), "both hosts held the IPv6 VIP");
    assert!(waited, "b saw a's kernel answer for the IPv6 VIP and waited:\n{}", lab.log("b"));
    eprintln!("IPv6-only VIP: b holds it {} ms after a's daemon was killed", t.elapsed().as_millis());
}
