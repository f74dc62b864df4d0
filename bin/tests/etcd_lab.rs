//! The etcd lease arbiter (B11) with two daemons in the network-namespace lab and real etcd
//! members (Debian's etcd-server) in the client's namespace: a failover through the lease, an
//! etcd member lost, a Master cut off from etcd and from its peer, and etcd down altogether.

mod support;

use std::time::{Duration, Instant};
use support::cloud::NsRuntime;
use support::*;

/// The default `ttl_s`: the failover figures this lab prints are those an operator gets.
const TTL_S: u64 = 5;
const PREFIX: &str = "/ridondato/lab";

fn etcd_bin() -> Option<String> {
    let found = ["/usr/bin/etcd", "/usr/local/bin/etcd"].into_iter().find(|p| std::path::Path::new(p).is_file());
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "etcd is missing (scripts/deps-etcd.sh installs it)");
        eprintln!("notice: etcd not found: the etcd lab is skipped (scripts/deps-etcd.sh installs it)");
    }
    found.map(str::to_string)
}

/// `members` etcd processes on the client's address (ports 23790 + 2i, peers 23791 + 2i).
fn start_etcd(lab: &Lab, bin: &str, members: usize) -> (Vec<Option<Spawned>>, Vec<String>) {
    let ip = lab.var("LAB_CLIENT").to_string();
    let initial: Vec<String> = (0..members).map(|i| format!("m{i}=http://{ip}:{}", 23791 + 2 * i)).collect();
    let mut procs = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..members {
        let dir = lab.work.join(format!("etcd-{i}"));
        let client = format!("http://{ip}:{}", 23790 + 2 * i);
        let peer = format!("http://{ip}:{}", 23791 + 2 * i);
        let args = [
            bin.to_string(),
            format!("--name=m{i}"),
            format!("--data-dir={}", dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new".into(),
            "--initial-cluster-token=ridondato-lab".into(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        procs.push(Some(Spawned::in_ns(lab, "c", &refs)));
        endpoints.push(client);
    }
    (procs, endpoints)
}

fn with_arbiter(lab: &Lab, endpoints: &[String]) {
    let list = endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    for n in ["a", "b"] {
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("\n[arbiter]\nkind = \"etcd\"\nendpoints = [{list}]\nttl_s = {TTL_S}\nprefix = \"{PREFIX}\"\nop_timeout_ms = 1000\n"));
        std::fs::write(&path, cfg).expect("config");
    }
}

/// Who holds the leader key, read from etcd inside the client's namespace.
fn holder(rt: &NsRuntime, endpoints: &[String]) -> Option<(u8, u64)> {
    use ridondato_adapters::arbiter_etcd::{EtcdArbiter, EtcdConfig};
    let cfg =
        EtcdConfig { endpoints: endpoints.to_vec(), ttl_s: TTL_S as i64, prefix: PREFIX.into(), user: None, tls: None, op_timeout: Duration::from_secs(1) };
    rt.run(move || async move { EtcdArbiter::connect(cfg).await.ok()?.holder().await.ok()? })
}

fn pair(lab: &mut Lab) {
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(8)), "a Master through the lease: {}", lab.log("a"));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)), "b Slave: {}", lab.log("b"));
}

#[test]
fn a_failover_goes_through_the_lease_and_a_lost_etcd_member_changes_nothing() {
    let Some(bin) = etcd_bin() else { return };
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("el");
    let (mut etcd, endpoints) = start_etcd(&lab, &bin, 3);
    let rt = NsRuntime::new(&lab.ns("c"));
    wait_for("the etcd cluster answers", Duration::from_secs(20), || {
        let e = endpoints.clone();
        rt.run(move || async move {
            use ridondato_adapters::arbiter_etcd::{EtcdArbiter, EtcdConfig};
            let cfg = EtcdConfig { endpoints: e, ttl_s: 3, prefix: "/probe".into(), user: None, tls: None, op_timeout: Duration::from_secs(1) };
            match EtcdArbiter::connect(cfg).await {
                Ok(a) => a.holder().await.is_ok(),
                Err(_) => false,
            }
        })
    });
    with_arbiter(&lab, &endpoints);
    pair(&mut lab);
    assert_eq!(holder(&rt, &endpoints).map(|h| h.0), Some(1), "a holds the leader key");

    // One member of three dies: the quorum stays, the Master keeps refreshing.
    drop(etcd[2].take());
    std::thread::sleep(Duration::from_secs(2 * TTL_S));
    assert_eq!(lab.role("a"), "master");
    assert!(!lab.alarms("a").contains("LeaseStale"), "refreshes go on with two members of three: {}", lab.alarms("a"));

    // Power loss of the Master: b takes over once a's lease has expired in etcd.
    let t = Instant::now();
    lab.kill9("a");
    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(4 * TTL_S)), "b takes over through the lease: {}", lab.log("b"));
    let took = t.elapsed();
    assert!(lab.holds_vip("b"));
    assert_eq!(holder(&rt, &endpoints).map(|h| h.0), Some(2), "b holds the leader key");
    eprintln!("etcd lab: power loss of the Master -> b Master in {} ms (lease TTL {TTL_S} s, 3 members, one dead)", took.as_millis());
}

#[test]
fn a_master_cut_from_etcd_and_its_peer_steps_down_before_the_slave_takes_over() {
    let Some(bin) = etcd_bin() else { return };
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("ec");
    let (_etcd, endpoints) = start_etcd(&lab, &bin, 1);
    with_arbiter(&lab, &endpoints);
    pair(&mut lab);
    // a loses its peer (heartbeats dropped) and etcd (its client port dropped) at once.
    lab.lab(&["drop-udp", "a", "7400"]);
    let ns = lab.ns("a");
    let (ok, out) = sh(&["ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "rdlab", "output", "tcp", "dport", "23790", "drop"]);
    assert!(ok, "{out}");
    let t = Instant::now();
    let (mut a_down, mut b_up, mut both) = (None, None, 0);
    while t.elapsed() < Duration::from_secs(5 * TTL_S) && b_up.is_none() {
        let (va, vb) = (lab.holds_vip("a"), lab.holds_vip("b"));
        both += usize::from(va && vb);
        if a_down.is_none() && !va {
            a_down = Some(t.elapsed());
        }
        if vb && lab.role("b") == "master" {
            b_up = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(both, 0, "never both holding the VIP");
    let (a_down, b_up) = (a_down.expect("a let go of the VIP"), b_up.expect("b took over"));
    assert!(a_down < Duration::from_secs(TTL_S), "a stepped down before its lease could expire for b: {a_down:?}");
    assert!(lab.log("a").contains("etcd lease could not be refreshed"), "{}", lab.log("a"));
    eprintln!("etcd lab: Master cut from etcd and peer: VIP dropped after {} ms, b Master after {} ms (TTL {TTL_S} s)", a_down.as_millis(), b_up.as_millis());
}

#[test]
fn etcd_down_altogether_does_not_stop_a_master_its_slave_hears() {
    let Some(bin) = etcd_bin() else { return };
    if !lab_available() {
        return;
    }
    let mut lab = Lab::up("ed");
    let (mut etcd, endpoints) = start_etcd(&lab, &bin, 1);
    with_arbiter(&lab, &endpoints);
    pair(&mut lab);
    drop(etcd[0].take());
    wait_for("a says its lease is stale", Duration::from_secs(2 * TTL_S), || lab.alarms("a").contains("LeaseStale"));
    std::thread::sleep(Duration::from_secs(2 * TTL_S));
    assert_eq!(lab.role("a"), "master", "the documented choice: a Master its Slave hears keeps the role");
    assert_eq!(lab.role("b"), "slave");
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
}
