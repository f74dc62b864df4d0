//! The MongoDB adapter with the real `mongodb` driver against two members of our wire-protocol
//! test peer (`sim/mongo-peer`), in this process on 127.0.0.1: no MongoDB server can be
//! installed on the build machines, so this is not a real `mongod` (see the README).

#[path = "../../sim/mongo-peer/tests/support/mod.rs"]
#[allow(dead_code)] // shared with the peer's own tests, which use all of it
mod support;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use ridondato_adapters::mongo::{MongoConfig, MongoMember};
use ridondato_adapters::Mongo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

async fn member(p: &Pair, me: &str) -> R<MongoMember> {
    let (addr, me, peer) = if me == "a" { (p.a_addr, &p.a_host, &p.b_host) } else { (p.b_addr, &p.b_host, &p.a_host) };
    let cfg = MongoConfig {
        uri: format!("mongodb://{addr}/"),
        replica_set: "rs0".into(),
        me: me.clone(),
        peer: peer.clone(),
        timeout: Duration::from_secs(10),
        credential: None,
    };
    Ok(MongoMember::connect(cfg).await?)
}

async fn ids(c: &mongodb::Client) -> R<std::collections::BTreeSet<i64>> {
    let v: Vec<Document> = c.database("app").collection::<Document>("calls").find(doc! {}).await?.try_collect().await?;
    Ok(v.iter().filter_map(|d| d.get_i64("_id").ok()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_promotes_the_slave_by_forced_reconfig_and_the_driver_follows() -> R {
    let mut p = Pair::start("ad-failover", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    let calls = client.database("app").collection::<Document>("calls");
    calls.insert_many((0..20i64).map(|i| doc! {"_id": i})).await?;
    let mb = member(&p, "b").await?;
    assert_eq!(mb.member_report().await?.state, "SECONDARY");
    p.a.take().ok_or("A")?.power_off().await;
    let t = Instant::now();
    mb.promote().await?;
    println!("forced-reconfig promotion: {} ms", t.elapsed().as_millis());
    let r = mb.member_report().await?;
    assert_eq!(r.state, "PRIMARY", "{r:?}");
    calls.insert_one(doc! {"_id": 100i64}).await?;
    let got = ids(&direct(p.b_addr).await?).await?;
    assert_eq!(got.len(), 21, "every majority-acknowledged write and the new one: {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_continuous_writes_loses_no_acknowledged_write() -> R {
    let p = Pair::start("ad-switch", 0).await?;
    let (ma, mb) = (member(&p, "a").await?, member(&p, "b").await?);
    let client = set_client(p.a_addr, p.b_addr, "&w=1&retryWrites=true").await?;
    let acked = Arc::new(Mutex::new(Vec::<(i64, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, calls) = (acked.clone(), stop.clone(), client.database("app").collection::<Document>("calls"));
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                if calls.insert_one(doc! {"_id": i}).await.is_ok() {
                    acked.lock().map(|mut v| v.push((i, Instant::now()))).ok();
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    wait_for("writes flowing", 10, || async { (acked.lock().ok()?.len() > 100).then_some(()) }).await?;
    // The core's hand-over order: the Master fences (demote), the Slave promotes.
    ma.demote().await?;
    mb.promote().await?;
    let until = acked.lock().map(|v| v.len()).unwrap_or(0) + 100;
    wait_for("writes to the new primary", 20, || async { (acked.lock().ok()?.len() > until).then_some(()) }).await?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();
    let outage = acked.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or_default();
    let present = ids(&direct(p.b_addr).await?).await?;
    let lost: Vec<i64> = acked.iter().map(|(i, _)| *i).filter(|i| !present.contains(i)).collect();
    println!("planned switch-over: {} acknowledged writes, {} lost, longest gap between acknowledgements {} ms", acked.len(), lost.len(), outage.as_millis());
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!((ma.member_report().await?.state, mb.member_report().await?.state), ("SECONDARY".to_string(), "PRIMARY".to_string()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_master_fences_at_once_and_stays_fenced() -> R {
    let p = Pair::start("ad-fence", 0).await?;
    let ma = member(&p, "a").await?;
    p.a().set_partitioned(&p.b_host, true);
    p.b().set_partitioned(&p.a_host, true);
    let t = Instant::now();
    ma.demote().await?;
    assert!(t.elapsed() < Duration::from_secs(5), "fencing waited {:?} for an unreachable peer", t.elapsed());
    let ca = direct(p.a_addr).await?;
    let err = ca.database("app").collection::<Document>("calls").insert_one(doc! {"_id": 1i64}).await.err().ok_or("a fenced member took a write")?;
    assert_eq!(code(&err), Some(10107), "{err}");
    // Frozen: the sole voter does not elect itself again behind the core's back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ma.member_report().await?.state, "SECONDARY");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_old_master_reports_its_rollback() -> R {
    let mut p = Pair::start("ad-rollback", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    client.database("app").collection::<Document>("calls").insert_one(doc! {"_id": 0i64}).await?;
    caught_up(&direct(p.a_addr).await?, &direct(p.b_addr).await?).await?;
    // Cut off, the old Master takes writes the Slave never gets; the Slave takes over.
    p.a().set_partitioned(&p.b_host, true);
    p.b().set_partitioned(&p.a_host, true);
    direct(p.a_addr).await?.database("app").collection::<Document>("calls").insert_many((1..4i64).map(|i| doc! {"_id": i})).await?;
    member(&p, "b").await?.promote().await?;
    p.a.take().ok_or("A")?.power_off().await;
    p.b().set_partitioned(&p.a_host, false);
    p.a = Some(start(&p.a_dir, p.a_addr, 0).await?);
    let ma = member(&p, "a").await?;
    let r = wait_for("A's rollback reported", 15, || async { ma.member_report().await.ok().filter(|r| r.rollbacks == 1 && r.state == "SECONDARY") }).await?;
    assert!(r.lag_ms.is_some(), "{r:?}");
    assert_eq!(ids(&direct(p.b_addr).await?).await?.len(), 1, "the cut-off writes are not on the new Master");
    Ok(())
}

/// The Slave's member rebuilt by MongoDB's initial sync: stopped and started through hooks (the
/// peer's binary stands in for mongod), its old data moved aside, progress monotone to 100 %,
/// a replicating secondary with every document at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_rebuilds_the_slaves_member_with_monotone_progress() -> R {
    use ridondato_adapters::mongo::ResyncSetup;
    use ridondato_adapters::services_cmd::{CommandServices, ServiceControl};
    let peer_bin = std::env::current_exe()?.parent().and_then(|d| d.parent()).map(|d| d.join("ridondato-mongo-peer")).ok_or("target dir")?;
    assert!(peer_bin.exists(), "{} is missing: `cargo test --workspace` builds it (or `cargo build -p ridondato-mongo-peer`)", peer_bin.display());
    let (a_dir, work) = (fresh_dir("ad-resync-a"), fresh_dir("ad-resync-b"));
    let b_dir = work.join("data");
    std::fs::create_dir_all(&b_dir)?;
    let a = start(&a_dir, any_port(), 0).await?;
    let b_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let pid = work.join("pid");
    let start_b = format!(
        "{} --bind {b_addr} --replSet rs0 --dbpath {} --initial-sync-bytes-per-sec 400000 >{} 2>&1 & echo $! > {}",
        peer_bin.display(),
        b_dir.display(),
        work.join("log").display(),
        pid.display()
    );
    let stop_b = format!("p=$(cat {}); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.05; done", pid.display());
    let control = CommandServices { control: ServiceControl::Hooks { start: start_b, stop: stop_b.clone() }, timeout: Duration::from_secs(10) };
    ridondato_adapters::Services::start(&control).await?;
    let (a_host, b_host) = (a.host().to_string(), b_addr.to_string());
    let ca = direct(a.addr()).await?;
    admin(&ca, doc! {"replSetInitiate": config(&a_host, &b_host, 1, 1)}).await?;
    wait_for("A primary", 10, || async { admin(&ca, doc! {"hello": 1}).await.ok()?.get_bool("isWritablePrimary").ok()?.then_some(()) }).await?;
    let calls = ca.database("app").collection::<Document>("calls");
    calls.insert_many((0..1500i64).map(|i| doc! {"_id": i, "pad": "x".repeat(1000)})).await?;
    let cb = direct(b_addr).await?;
    caught_up(&ca, &cb).await?;

    let cfg = MongoConfig {
        uri: format!("mongodb://{b_addr}/"),
        replica_set: "rs0".into(),
        me: b_host.clone(),
        peer: a_host.clone(),
        timeout: Duration::from_secs(10),
        credential: None,
    };
    let mb = MongoMember::connect(cfg).await?.with_resync(ResyncSetup { control: control.clone(), data_dir: b_dir.clone(), within: Duration::from_secs(60) });
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let s2 = seen.clone();
    mb.resync(Arc::new(move |p| s2.lock().map(|mut v| v.push((p.done, p.total))).unwrap_or(()))).await?;
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    let pct: Vec<u64> = seen.iter().map(|(d, t)| if *t == 0 { 0 } else { d * 100 / t }).collect();
    println!("mongo resync progress samples (%): {pct:?}");
    assert!(pct.len() >= 3 && pct.windows(2).all(|w| w[0] <= w[1]) && pct.last() == Some(&100), "{pct:?}");
    assert_eq!(mb.member_report().await?.state, "SECONDARY");
    assert_eq!(ids(&cb).await?.len(), 1500, "every document on the rebuilt member");
    let saved = std::fs::read_dir(&work)?.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("data.before-resync-"));
    assert!(saved, "the old data is kept aside");
    let _ = tokio::process::Command::new("sh").args(["-c", &stop_b]).status().await;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&a_dir);
    Ok(())
}

/// `mongo.username` and `mongo.password_file`: the adapter authenticates with SCRAM-SHA-256
/// (the peer checks the proof as mongod does); a wrong password is a clear error, never a
/// silent unauthenticated connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_authenticates_with_the_configured_credential() -> R {
    use ridondato_adapters::mongo::MongoCredential;
    let dir = fresh_dir("ad-auth");
    let mut opts = ridondato_mongo_peer::PeerOptions::new(any_port(), "rs0", &dir);
    opts.users = vec![("ridondato".into(), "s3cret-pass".into())];
    let peer = ridondato_mongo_peer::serve(opts).await?;
    let host = peer.addr().to_string();
    let cfg = |password: Option<&str>| MongoConfig {
        uri: format!("mongodb://{host}/"),
        replica_set: "rs0".into(),
        me: host.clone(),
        peer: "127.0.0.1:1".into(),
        timeout: Duration::from_secs(5),
        credential: password.map(|p| MongoCredential { user: "ridondato".into(), password: p.into(), source: "admin".into() }),
    };
    let good = MongoMember::connect(cfg(Some("s3cret-pass"))).await?;
    // Initiated through the adapter's own authenticated client: the promotion's commands.
    let initiate = good.member_report().await.expect_err("not initiated yet");
    assert!(!initiate.0.contains("uthentication"), "authenticated, only not initiated: {}", initiate.0);
    let admin_client = {
        let mut o = mongodb::options::ClientOptions::parse(format!("mongodb://{host}/?directConnection=true")).await?;
        o.credential = Some(
            mongodb::options::Credential::builder().username("ridondato".to_string()).password("s3cret-pass".to_string()).source("admin".to_string()).build(),
        );
        mongodb::Client::with_options(o)?
    };
    admin(&admin_client, doc! {"replSetInitiate": {}}).await?;
    wait_for("a primary", 10, || async { good.member_report().await.ok().filter(|r| r.state == "PRIMARY") }).await?;
    let wrong = MongoMember::connect(cfg(Some("not-it"))).await?;
    let e = wrong.member_report().await.expect_err("a wrong password");
    assert!(e.0.contains("uthentication"), "the error says why: {}", e.0);
    let none = MongoMember::connect(cfg(None)).await?;
    let e = none.member_report().await.expect_err("no credential");
    assert!(e.0.contains("requires authentication"), "{}", e.0);
    assert!(format!("{:?}", cfg(Some("s3cret-pass")).credential).contains("<hidden>") && !format!("{:?}", cfg(Some("s3cret-pass"))).contains("s3cret"));
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
