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
    let cfg =
        MongoConfig { uri: format!("mongodb://{addr}/"), replica_set: "rs0".into(), me: me.clone(), peer: peer.clone(), timeout: Duration::from_secs(10) };
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
    assert_eq!(mb.report().await?.state, "SECONDARY");
    p.a.take().ok_or("A")?.power_off().await;
    let t = Instant::now();
    mb.promote().await?;
    println!("forced-reconfig promotion: {} ms", t.elapsed().as_millis());
    let r = mb.report().await?;
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
    assert_eq!((ma.report().await?.state, mb.report().await?.state), ("SECONDARY".to_string(), "PRIMARY".to_string()));
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
    assert_eq!(ma.report().await?.state, "SECONDARY");
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
    let r = wait_for("A's rollback reported", 15, || async { ma.report().await.ok().filter(|r| r.rollbacks == 1 && r.state == "SECONDARY") }).await?;
    assert!(r.lag_ms.is_some(), "{r:?}");
    assert_eq!(ids(&direct(p.b_addr).await?).await?.len(), 1, "the cut-off writes are not on the new Master");
    Ok(())
}
