//! Two daemons with `[mongo]` in the network-namespace lab, each beside a member of our
//! MongoDB wire-protocol test peer (`sim/mongo-peer`'s binary standing in for mongod: no
//! MongoDB server can be installed on the build machines). A client in its own namespace
//! writes through the real driver with the replica-set connection string while the pair
//! switches over and then fails over; every acknowledged write must be on the Master after
//! the switch-over. The members require authentication: the daemons use `mongo.password_file`.

mod support;

use mongodb::bson::{doc, Document};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cloud::NsRuntime;
use support::*;

type Acked = Arc<Mutex<Vec<(i64, Instant)>>>;

/// The members require SCRAM-SHA-256 authentication; the daemons read the password from
/// `mongo.password_file`, the test's clients carry it in their URI.
const USER: &str = "ridondato";
const PASSWORD: &str = "lab-mongo-pw";
const CRED: &str = "ridondato:lab-mongo-pw@";

fn peer_bin() -> std::path::PathBuf {
    std::path::Path::new(BIN).with_file_name("ridondato-mongo-peer")
}

async fn hello_writable(addr: String) -> bool {
    let Ok(c) = mongodb::Client::with_uri_str(format!("mongodb://{CRED}{addr}/?directConnection=true&serverSelectionTimeoutMS=1000&authSource=admin")).await
    else {
        return false;
    };
    c.database("admin").run_command(doc! {"hello": 1}).await.is_ok_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false))
}

/// Inserts ids 0.. through the driver until `stop`, recording what was acknowledged.
async fn writer(uri: String, acked: Acked, stop: Arc<AtomicBool>) {
    let Ok(client) = mongodb::Client::with_uri_str(&uri).await else { return };
    let calls = client.database("app").collection::<Document>("calls");
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        if calls.insert_one(doc! {"_id": i}).await.is_ok() {
            acked.lock().map(|mut v| v.push((i, Instant::now()))).ok();
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ids(addr: String) -> Vec<i64> {
    use futures::TryStreamExt;
    let Ok(c) = mongodb::Client::with_uri_str(format!("mongodb://{CRED}{addr}/?directConnection=true&authSource=admin")).await else { return Vec::new() };
    let Ok(cursor) = c.database("app").collection::<Document>("calls").find(doc! {}).await else { return Vec::new() };
    let docs: Vec<Document> = cursor.try_collect().await.unwrap_or_default();
    docs.iter().filter_map(|d| d.get_i64("_id").ok()).collect()
}

#[test]
fn the_replica_set_follows_a_switchover_and_a_failover() {
    if !lab_available() {
        return;
    }
    assert!(peer_bin().exists(), "{} is missing (cargo test --workspace builds it)", peer_bin().display());
    let mut lab = Lab::up("mg");
    let (a_ip, b_ip) = (lab.var("LAB_A").to_string(), lab.var("LAB_B").to_string());
    let (a_m, b_m) = (format!("{a_ip}:27017"), format!("{b_ip}:27017"));
    let pw = lab.work.join("mongo.pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("password file");
    let mut peers = Vec::new();
    for (n, me) in [("a", &a_m), ("b", &b_m)] {
        let dir = lab.work.join(format!("{n}-mongo"));
        std::fs::create_dir_all(&dir).expect("dbpath");
        let bin = peer_bin();
        peers.push(Spawned::in_ns(
            &lab,
            n,
            &[
                bin.to_str().unwrap_or_default(),
                "--bind",
                me,
                "--replSet",
                "rs0",
                "--dbpath",
                dir.to_str().unwrap_or_default(),
                "--user",
                USER,
                "--password-file",
                pw.to_str().unwrap_or_default(),
            ],
        ));
        let peer = if n == "a" { &b_m } else { &a_m };
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        // The daemon authenticates as the operator would set it up: the password in a file.
        cfg.push_str(&format!(
            "\n[mongo]\nuri = \"mongodb://{me}/\"\nreplica_set = \"rs0\"\nmember = \"{me}\"\npeer_member = \"{peer}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
            pw.display()
        ));
        std::fs::write(&path, cfg).expect("config");
    }
    // The set as an operator initiates it once: a's member the only voter.
    let ns_a = NsRuntime::new(&lab.ns("a"));
    let (a2, b2) = (a_m.clone(), b_m.clone());
    let initiated = ns_a.run(move || async move {
        let t = Instant::now();
        loop {
            if let Ok(c) =
                mongodb::Client::with_uri_str(format!("mongodb://{CRED}{a2}/?directConnection=true&serverSelectionTimeoutMS=1000&authSource=admin")).await
            {
                let config = doc! { "_id": "rs0", "version": 1, "members": [
                { "_id": 0, "host": &a2, "votes": 1, "priority": 1 }, { "_id": 1, "host": &b2, "votes": 0, "priority": 0 } ] };
                if c.database("admin").run_command(doc! {"replSetInitiate": config}).await.is_ok() {
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(10) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while !hello_writable(a2.clone()).await {
            if t.elapsed() > Duration::from_secs(15) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    });
    assert!(initiated, "the replica set is initiated and a's member primary");
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)), "a Master: {}", lab.log("a"));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)), "b Slave: {}", lab.log("b"));

    // A client writing through the replica-set connection string, from its own namespace.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let uri =
        format!("mongodb://{CRED}{a_m},{b_m}/?replicaSet=rs0&w=1&retryWrites=true&serverSelectionTimeoutMS=20000&heartbeatFrequencyMS=500&authSource=admin");
    let (acked2, stop2, ns_c) = (acked.clone(), stop.clone(), lab.ns("c"));
    let client = std::thread::spawn(move || NsRuntime::new(&ns_c).run(move || writer(uri, acked2, stop2)));
    wait_for("writes flowing", Duration::from_secs(15), || acked.lock().map(|v| v.len() > 100).unwrap_or(false));

    let (ok, out) = lab.cli("a", &["switchover"]);
    assert!(ok && out.contains("switch-over done"), "{out}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(10)) && lab.wait_role("a", "slave", Duration::from_secs(10)));
    let before = acked.lock().map(|v| v.len()).unwrap_or(0);
    wait_for("writes on b's member", Duration::from_secs(20), || acked.lock().map(|v| v.len() > before + 100).unwrap_or(false));
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();
    let outage = acked.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or_default();
    let ns_b = NsRuntime::new(&lab.ns("b"));
    let b3 = b_m.clone();
    let present: std::collections::BTreeSet<i64> = ns_b.run(move || ids(b3)).into_iter().collect();
    let lost = acked.iter().filter(|(i, _)| !present.contains(i)).count();
    println!("mongo lab switch-over: {} acknowledged writes, {lost} lost, longest gap between acknowledgements {} ms", acked.len(), outage.as_millis());
    assert_eq!(lost, 0, "acknowledged writes lost in a planned switch-over");
    let b4 = b_m.clone();
    assert!(ns_b.run(move || hello_writable(b4)), "b's member is the writable primary");
    // Both daemons report their member: b's the primary, a's a secondary.
    wait_for("the members in the status", Duration::from_secs(5), || {
        lab.status("b").is_some_and(|s| s["mongo"]["state"] == "PRIMARY") && lab.status("a").is_some_and(|s| s["mongo"]["state"] == "SECONDARY")
    });
    let (_, human) = lab.cli("b", &["status"]);
    assert!(human.contains("mongo PRIMARY"), "{human}");

    // Failover: b loses power (its daemon and its member); a takes over and its member with it.
    lab.kill9("b");
    drop(peers.remove(1));
    lab.lab(&["link-down", "b"]);
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)), "a takes over: {}", lab.log("a"));
    let a5 = a_m.clone();
    let t = Instant::now();
    let writable = ns_a.run(move || async move {
        while !hello_writable(a5.clone()).await {
            if t.elapsed() > Duration::from_secs(10) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    });
    assert!(writable, "a's member promoted with the role: {}", lab.log("a"));
    println!("mongo lab failover: a's member writable {} ms after a became Master was seen", t.elapsed().as_millis());
}
