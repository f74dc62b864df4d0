//! The real `mongodb` 3.x driver against in-process peers on 127.0.0.1.

mod support;

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use support::*;

fn docs(prefix: &str, n: usize, pad: usize) -> Vec<Document> {
    (0..n).map(|i| doc! { "_id": format!("{prefix}{i}"), "i": i as i32, "pad": "x".repeat(pad) }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_finds_primary_writes_majority_and_reads_from_the_secondary() -> R {
    let p = Pair::start("basic", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    let coll = client.database("test").collection::<Document>("c");
    coll.insert_many(docs("d", 10, 10)).await?;
    let back: Vec<Document> = coll.find(doc! {"i": {"$gte": 5}}).sort(doc! {"i": -1}).await?.try_collect().await?;
    assert_eq!(back.iter().map(|d| d.get_i32("i")).collect::<Result<Vec<_>, _>>()?, vec![9, 8, 7, 6, 5]);
    assert_eq!(coll.count_documents(doc! {}).await?, 10);

    let secondary = set_client(p.a_addr, p.b_addr, "&readPreference=secondaryPreferred").await?;
    let scoll = secondary.database("test").collection::<Document>("c");
    wait_for("the secondary to serve 10 documents", 10, || async { (scoll.count_documents(doc! {}).await.ok()? == 10).then_some(()) }).await?;

    let (ca, cb) = (direct(p.a_addr).await?, direct(p.b_addr).await?);
    caught_up(&ca, &cb).await?;
    let sb = status(&cb).await.ok_or("B status")?;
    assert_eq!(sb.get_i32("myState")?, 2);
    assert_eq!(member(&sb, &p.a_host).ok_or("A in B's status")?.get_str("stateStr")?, "PRIMARY");
    assert_eq!(sb.get_str("syncSourceHost")?, p.a_host);
    assert_eq!(sb.get_i64("rollbackCount")?, 0);

    // A write sent to the secondary itself is refused as mongod refuses it.
    let err = cb.database("test").collection::<Document>("c").insert_one(doc! {"x": 1}).await.err().ok_or("write on B accepted")?;
    assert_eq!(code(&err), Some(10107), "{err}");
    // Unknown commands and the peer's own identity.
    let err = admin(&ca, doc! {"noSuchCommand": 1}).await.err().ok_or("unknown command accepted")?;
    assert_eq!(code(&err), Some(59));
    assert_eq!(admin(&ca, doc! {"buildInfo": 1}).await?.get_str("version")?, ridondato_mongo_peer::VERSION);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_insert_with_the_same_txn_number_is_applied_once() -> R {
    let p = Pair::start("retry", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "").await?;
    let db = client.database("test");
    let mut session = client.start_session().await?;
    // Far above any txnNumber the driver itself may have used on this (pooled) session.
    let cmd = doc! { "insert": "r", "documents": [{"_id": 1}, {"_id": 2}], "txnNumber": 1_000_007i64 };
    let first = db.run_command(cmd.clone()).session(&mut session).await?;
    let again = db.run_command(cmd).session(&mut session).await?;
    assert_eq!(first.get_i32("n")?, 2);
    assert_eq!(again.get_i32("n")?, 2);
    assert!(again.get("writeErrors").is_none(), "{again}");
    assert_eq!(db.collection::<Document>("r").count_documents(doc! {}).await?, 2);
    let old = db.run_command(doc! { "insert": "r", "documents": [{"_id": 3}], "txnNumber": 1_000_006i64 }).session(&mut session).await;
    assert_eq!(old.err().as_ref().and_then(code), Some(225));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_reconfig_fails_over_and_the_retryable_write_lands_on_the_new_primary() -> R {
    let mut p = Pair::start("failover", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    let coll = client.database("test").collection::<Document>("c");
    coll.insert_one(doc! {"_id": "before"}).await?;
    // A retryable insert whose acknowledgement we pretend was lost: its retry goes to B later.
    // The session may be one the driver already used for its own retryable writes (its pool
    // hands sessions back out), so the txnNumber is far above any the driver has sent.
    let mut session = client.start_session().await?;
    let once = doc! { "insert": "c", "documents": [{"_id": "once"}], "txnNumber": 1_000_000i64, "writeConcern": {"w": "majority"} };
    client.database("test").run_command(once.clone()).session(&mut session).await?;
    assert_eq!(coll.count_documents(doc! {"_id": "once"}).await?, 1);
    let (ca, cb) = (direct(p.a_addr).await?, direct(p.b_addr).await?);
    caught_up(&ca, &cb).await?;

    // Only the primary takes a plain reconfig.
    let err = admin(&cb, doc! {"replSetReconfig": config(&p.a_host, &p.b_host, 2, 0)}).await.err().ok_or("reconfig on B accepted")?;
    assert_eq!(code(&err), Some(10107), "{err}");

    p.a.take().ok_or("A")?.power_off().await;
    let write = tokio::spawn({
        let coll = coll.clone();
        async move { coll.insert_one(doc! {"_id": "during"}).await }
    });
    // Not a wait for a condition: it gives the insert time to start against the dead primary,
    // so that it is in flight (failing or selecting a server) when B takes over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin(&cb, doc! {"replSetReconfig": config(&p.a_host, &p.b_host, 2, 0), "force": true}).await?;
    write.await??;

    let hello = admin(&cb, doc! {"hello": 1}).await?;
    assert!(hello.get_bool("isWritablePrimary")?, "{hello}");
    assert_eq!(hello.get_array("passives")?, &vec![Bson::from(p.a_host.clone())]);
    let cfg = admin(&cb, doc! {"replSetGetConfig": 1}).await?;
    assert!(cfg.get_document("config")?.get_i32("version")? > 10_000, "a forced config's version jumps");
    let retried = client.database("test").run_command(once).session(&mut session).await?;
    assert_eq!(retried.get_i32("n")?, 1, "{retried}");
    assert!(retried.get("writeErrors").is_none(), "the retry was executed again: {retried}");
    let on_b = cb.database("test").collection::<Document>("c").count_documents(doc! {}).await?;
    assert_eq!(on_b, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_former_primary_rolls_back_its_unreplicated_writes() -> R {
    let mut p = Pair::start("rollback", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    client.database("test").collection::<Document>("c").insert_one(doc! {"_id": "common"}).await?;
    let (ca, cb) = (direct(p.a_addr).await?, direct(p.b_addr).await?);
    caught_up(&ca, &cb).await?;

    p.a().set_partitioned(&p.b_host, true);
    p.b().set_partitioned(&p.a_host, true);
    let w1 = set_client(p.a_addr, p.b_addr, "&w=1").await?;
    w1.database("test").collection::<Document>("c").insert_many(docs("lost", 3, 10)).await?;
    admin(&cb, doc! {"replSetReconfig": config(&p.a_host, &p.b_host, 2, 0), "force": true}).await?;
    wait_for("B primary", 10, || async { admin(&cb, doc! {"hello": 1}).await.ok()?.get_bool("isWritablePrimary").ok()?.then_some(()) }).await?;
    p.a.take().ok_or("A")?.power_off().await;
    cb.database("test").collection::<Document>("c").insert_one(doc! {"_id": "kept"}).await?;
    p.b().set_partitioned(&p.a_host, false);

    p.a = Some(start(&p.a_dir, p.a_addr, 0).await?);
    let ca = direct(p.a_addr).await?;
    wait_for("A in ROLLBACK", 10, || async { (status(&ca).await?.get_i32("myState").ok()? == 9).then_some(()) }).await?;
    let s = wait_for("A back to SECONDARY", 10, || async {
        let s = status(&ca).await?;
        (s.get_i32("myState").ok()? == 2).then_some(s)
    })
    .await?;
    assert_eq!(s.get_i64("rollbackCount")?, 1);
    let last = s.get_document("lastRollback")?;
    assert_eq!(last.get_i64("entries")?, 3);
    let files = last.get_array("files")?;
    assert_eq!(files.len(), 1);
    let file = files[0].as_str().ok_or("file name")?;
    assert!(file.contains("/rollback/test.c/removed."), "{file}");
    let mut bytes = std::fs::read(file)?.into_iter().collect::<Vec<u8>>();
    let mut saved = Vec::new();
    while !bytes.is_empty() {
        let d = Document::from_reader(bytes.as_slice())?;
        let len = mongodb::bson::to_vec(&d)?.len();
        saved.push(d);
        bytes.drain(..len);
    }
    assert_eq!(saved.len(), 3);

    let ids = |c: mongodb::Client| async move {
        let v: Vec<Document> = c.database("test").collection::<Document>("c").find(doc! {}).await?.try_collect().await?;
        let mut ids: Vec<String> = v.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_string)).collect();
        ids.sort();
        Ok::<_, mongodb::error::Error>(ids)
    };
    let want = vec!["common".to_string(), "kept".to_string()];
    wait_for("A to replicate B's writes", 10, || async { (ids(ca.clone()).await.ok()? == want).then_some(()) }).await?;
    assert_eq!(ids(cb.clone()).await?, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_needs_an_electable_secondary_unless_forced() -> R {
    let p = Pair::start("stepdown", 0).await?;
    let (ca, cb) = (direct(p.a_addr).await?, direct(p.b_addr).await?);
    let plain = doc! {"replSetStepDown": 2, "secondaryCatchUpPeriodSecs": 1};
    let err = admin(&ca, plain).await.err().ok_or("step-down without a successor accepted")?;
    assert_eq!(code(&err), Some(262), "{err}");
    assert_eq!(p.a().state(), 1);

    let err = admin(&cb, doc! {"replSetStepUp": 1}).await.err().ok_or("priority-0 step-up accepted")?;
    assert_eq!(code(&err), Some(125), "{err}");
    let err = admin(&ca, doc! {"replSetFreeze": 10}).await.err().ok_or("freezing the primary accepted")?;
    assert_eq!(code(&err), Some(95), "{err}");

    admin(&ca, doc! {"replSetStepDown": 2, "secondaryCatchUpPeriodSecs": 0, "force": true}).await?;
    assert_eq!(p.a().state(), 2);
    // Single electable voter: once the step-down period is over it takes office again.
    wait_for("A primary again", 10, || async { (p.a().state() == 1).then_some(()) }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_member_initial_syncs_with_monotone_progress() -> R {
    let mut p = Pair::start("initsync", 60_000).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    client.database("test").collection::<Document>("big").insert_many(docs("b", 200, 600)).await?;
    client.database("other").collection::<Document>("small").insert_many(docs("s", 20, 10)).await?;
    let ca = direct(p.a_addr).await?;

    p.b.take().ok_or("B")?.power_off().await;
    std::fs::remove_dir_all(&p.b_dir)?;
    p.b = Some(start(&p.b_dir, p.b_addr, 60_000).await?);
    let cb = direct(p.b_addr).await?;

    let mut seen: Vec<f64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "initial sync did not finish: {seen:?}");
        if let Some(s) = status(&cb).await {
            if let Ok(st) = s.get_document("initialSyncStatus") {
                let total = st.get_i64("approxTotalDataSize")? as f64;
                let done = st.get_i64("approxTotalBytesCopied")? as f64;
                if total > 0.0 {
                    seen.push(100.0 * done / total);
                }
            }
            if s.get_i32("myState") == Ok(2) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {seen:?}");
    assert!(seen.iter().any(|p| *p > 0.0 && *p < 100.0), "no intermediate progress seen: {seen:?}");
    assert_eq!(seen.last().copied(), Some(100.0));
    let big = cb.database("test").collection::<Document>("big").count_documents(doc! {}).await?;
    let small = cb.database("other").collection::<Document>("small").count_documents(doc! {}).await?;
    assert_eq!((big, small), (200, 20));
    caught_up(&ca, &cb).await?;
    Ok(())
}

#[test]
fn binary_rejects_a_bad_argument_by_name() -> R {
    let bin = env!("CARGO_BIN_EXE_ridondato-mongo-peer");
    let out = std::process::Command::new(bin).args(["--bind", "not-an-address", "--replSet", "rs0", "--dbpath", "/nonexistent"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bind"), "{out:?}");
    let out = std::process::Command::new(bin).args(["--bind", "127.0.0.1:1", "--bogus", "x"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"), "{out:?}");
    Ok(())
}

/// The binary as a single-node set: serves the driver, stops cleanly on SIGTERM, and keeps its
/// data and config across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_driver_and_keeps_its_data_across_sigterm() -> R {
    let bin = env!("CARGO_BIN_EXE_ridondato-mongo-peer");
    let dir = fresh_dir("bin");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let spawn = || {
        std::process::Command::new(bin)
            .args(["--bind", &addr.to_string(), "--replSet", "rs0", "--dbpath"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    let primary = |c: mongodb::Client| async move { admin(&c, doc! {"hello": 1}).await.ok()?.get_bool("isWritablePrimary").ok()?.then_some(()) };
    let mut child = Child(spawn()?);
    let c = direct(addr).await?;
    wait_for("the binary to answer", 10, || async { admin(&c, doc! {"ping": 1}).await.ok() }).await?;
    admin(&c, doc! {"replSetInitiate": {}}).await?;
    wait_for("single-node primary", 10, || primary(c.clone())).await?;
    c.database("test").collection::<Document>("c").insert_one(doc! {"_id": 1}).await?;
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = child.0.try_wait()? {
            break code;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(code.success(), "{code:?}");

    let _child = Child(spawn()?);
    let c = direct(addr).await?;
    wait_for("primary after restart", 10, || primary(c.clone())).await?;
    let n = c.database("test").collection::<Document>("c").count_documents(doc! {}).await?;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(n, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_deletes_replicate_to_the_secondary() -> R {
    let p = Pair::start("crud", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    let coll = client.database("test").collection::<Document>("u");
    coll.insert_many(docs("u", 6, 1)).await?;
    let r = coll.update_one(doc! {"_id": "u1"}, doc! {"$set": {"tag": "one"}, "$inc": {"i": 10}}).await?;
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let r = coll.update_many(doc! {"i": {"$lt": 3}}, doc! {"$set": {"small": true}}).await?;
    assert_eq!(r.matched_count, 2);
    let r = coll.update_one(doc! {"_id": "new"}, doc! {"$set": {"i": 99}}).upsert(true).await?;
    assert_eq!(r.upserted_id, Some(Bson::from("new")));
    assert_eq!(coll.delete_one(doc! {"_id": "u5"}).await?.deleted_count, 1);
    assert_eq!(coll.delete_many(doc! {"small": true}).await?.deleted_count, 2);
    let one = coll.find_one(doc! {"_id": "u1"}).projection(doc! {"tag": 1}).await?.ok_or("u1")?;
    assert_eq!(one, doc! {"_id": "u1", "tag": "one"});
    let err = coll.insert_one(doc! {"_id": "u3"}).await.err().ok_or("duplicate accepted")?;
    assert_eq!(code(&err), Some(11000));

    let (ca, cb) = (direct(p.a_addr).await?, direct(p.b_addr).await?);
    caught_up(&ca, &cb).await?;
    let on_b: Vec<Document> = cb.database("test").collection::<Document>("u").find(doc! {}).sort(doc! {"_id": 1}).await?.try_collect().await?;
    let on_a: Vec<Document> = coll.find(doc! {}).sort(doc! {"_id": 1}).await?.try_collect().await?;
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.iter().filter_map(|d| d.get_str("_id").ok()).collect::<Vec<_>>(), vec!["new", "u1", "u3", "u4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_wire_secondary_reads_need_secondary_ok_and_unacknowledged_writes_get_no_reply() -> R {
    let p = Pair::start("raw", 0).await?;
    let refused = raw(p.b_addr, doc! {"find": "c", "$db": "test"}, 0, None).await?;
    assert_eq!(refused.get_i32("code")?, 13435, "{refused}");
    assert!(refused.get_document("topologyVersion").is_ok(), "{refused}");
    let allowed = raw(p.b_addr, doc! {"find": "c", "$db": "test", "$readPreference": {"mode": "secondaryPreferred"}}, 0, None).await?;
    assert_eq!(allowed.get_f64("ok")?, 1.0, "{allowed}");

    let unacked = doc! {"insert": "w0", "documents": [{"_id": 1}], "writeConcern": {"w": 0}, "$db": "test"};
    let reply = raw(p.a_addr, unacked, 2, Some(doc! {"find": "w0", "$db": "test"})).await?;
    let first = reply.get_document("cursor")?.get_array("firstBatch")?;
    assert_eq!(first, &vec![Bson::Document(doc! {"_id": 1})], "{reply}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_on_the_primary_adds_a_member_that_initial_syncs() -> R {
    let p = Pair::start("addmember", 0).await?;
    let client = set_client(p.a_addr, p.b_addr, "&w=majority").await?;
    client.database("test").collection::<Document>("c").insert_many(docs("a", 5, 1)).await?;
    let c_dir = fresh_dir("addmember-c");
    let c = start(&c_dir, any_port(), 0).await?;
    let ca = direct(p.a_addr).await?;
    let mut cfg = config(&p.a_host, &p.b_host, 2, 1);
    let members = cfg.get_array_mut("members")?;
    members.push(Bson::Document(doc! {"_id": 2, "host": "127.0.0.1:1", "votes": 1, "priority": 0}));
    // A new voter that does not answer: the quorum check refuses.
    let err = admin(&ca, doc! {"replSetReconfig": cfg.clone()}).await.err().ok_or("reconfig without quorum accepted")?;
    assert_eq!(code(&err), Some(74), "{err}");
    let members = cfg.get_array_mut("members")?;
    members[2] = Bson::Document(doc! {"_id": 2, "host": c.host(), "votes": 0, "priority": 0});
    admin(&ca, doc! {"replSetReconfig": cfg}).await?;
    wait_for("C secondary", 10, || async { (c.state() == 2).then_some(()) }).await?;
    let cc = direct(c.addr()).await?;
    assert_eq!(cc.database("test").collection::<Document>("c").count_documents(doc! {}).await?, 5);
    drop(c);
    let _ = std::fs::remove_dir_all(&c_dir);
    Ok(())
}
