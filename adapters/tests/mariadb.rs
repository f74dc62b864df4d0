//! Real MariaDB: two `mariadbd` instances in temporary datadirs on loopback, GTID replication
//! between them, and the adapter driving promotion, fencing and re-pointing. Needs
//! mariadb-server; under CI=true its absence is a failure.

use ridondato_adapters::mariadb::testkit::{app_insert, available, pair, wait_count};
use ridondato_adapters::Db;
use ridondato_core::{NodeId, Replication};
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_fence_promote_repoint_and_detect_errant_transactions() {
    if !available() {
        return;
    }
    // a is Master with the app schema, b replicates from it.
    let (sa, sb, a, b) = pair(1, false).await;
    for _ in 0..20 {
        app_insert(&sa).await.expect("write on the Master");
    }
    wait_count(&sb, 20).await;
    let rb = b.report().await.expect("report").facts;
    assert!(rb.replication == Replication::Running && !rb.writable, "{rb:?}");
    assert_eq!(rb.position, a.report().await.expect("report").facts.position, "same GTID position once caught up");
    assert_eq!(a.report().await.expect("report").facts.replicas, 1, "the Master sees its replica");
    assert!(app_insert(&sb).await.is_err(), "the read-only Slave refuses the application's writes (S8)");
    assert_eq!(a.check_app_account().await.expect("check"), None);
    // Prerequisites: these servers run without sync_binlog = 1 (a warning, not fatal); a fatal
    // setting changed at run time is found by the next check and carried in every report.
    use ridondato_adapters::mariadb::prereq;
    let found = prereq::check(&a, NodeId(2)).await.expect("check");
    assert!(found.iter().all(|f| !f.fatal) && found.iter().any(|f| f.setting == "sync_binlog"), "{found:?}");
    assert!(a.report().await.expect("report").facts.misconfigured.is_empty());
    sa.sql("SET GLOBAL gtid_strict_mode = 0").await.expect("set");
    let found = prereq::check(&a, NodeId(2)).await.expect("check");
    assert!(found.iter().any(|f| f.fatal && f.setting == "gtid_strict_mode" && f.to_string().contains("wanted ON")), "{found:?}");
    let m = a.report().await.expect("report").facts.misconfigured;
    assert!(m.len() == 1 && m[0].starts_with("gtid_strict_mode is OFF, wanted ON"), "{m:?}");
    sa.sql("SET GLOBAL gtid_strict_mode = 1").await.expect("set");
    prereq::check(&a, NodeId(2)).await.expect("check");
    assert!(a.report().await.expect("report").facts.misconfigured.is_empty(), "cleared once fixed");
    // An account with ALL PRIVILEGES holds READ ONLY ADMIN in 10.11 and writes through read_only.
    sa.sql("SET SESSION sql_log_bin = 0; CREATE USER 'boss'@'%' IDENTIFIED BY 'x'; GRANT ALL PRIVILEGES ON *.* TO 'boss'@'%'").await.expect("boss");
    let boss = ridondato_adapters::mariadb::MariaDb::new(ridondato_adapters::mariadb::MariaDbConfig {
        local: sa.tcp_opts(),
        peers: Default::default(),
        repl_user: "repl".into(),
        repl_password: "replpw".into(),
        peer_admin: ("peeradmin".into(), "peeradminpw".into()),
        app_user: Some("boss".into()),
        semi_sync: false,
        semi_sync_timeout: Duration::from_secs(1),
        apply_timeout: Duration::from_secs(1),
        backup_dir: None,
    });
    let warning = boss.check_app_account().await.expect("check").expect("a warning");
    assert!(warning.contains("boss") && warning.contains("errant"), "{warning}");

    let refused = b.promote(None).await.expect_err("a promotion beside a writable peer");
    assert!(refused.0.contains("still takes writes"), "{refused}");
    assert_eq!(b.report().await.expect("report").facts.replication, Replication::Running, "a refused promotion leaves replication alone");

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
    assert_eq!(a.report().await.expect("report").errant, None);

    // A replica stopped by hand says so; stopped on an error it says which.
    sa.sql("STOP SLAVE").await.expect("stop");
    assert_eq!(a.report().await.expect("report").facts.replication, Replication::Stopped);

    // Three errant transactions on a (someone wrote with binary logging on the replica): a
    // refuses the stream from b, and the report counts them exactly instead of rejoining.
    sa.sql("SET GLOBAL read_only = 0; INSERT INTO app.t (v) VALUES (97); INSERT INTO app.t (v) VALUES (98); INSERT INTO app.t (v) VALUES (99); SET GLOBAL read_only = 1")
        .await
        .expect("errant writes");
    for _ in 0..3 {
        app_insert(&sb).await.expect("write on b");
    }
    a.replicate_from(NodeId(2)).await.expect("re-point");
    let t = Instant::now();
    loop {
        let r = a.report().await.expect("report");
        if let Some((n, ranges)) = &r.errant {
            assert_eq!(*n, 3, "exactly three errant transactions: {ranges}");
            assert!(ranges.starts_with("0-1-") && ranges.contains(".."), "their GTID range: {ranges}");
            // The errant set is known from the GTID positions alone, before the IO thread has
            // connected and been refused: the replication state catches up a moment later.
            if matches!(&r.facts.replication, Replication::Broken(e) if e.contains("1236")) {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "errant transaction or the refused stream not detected: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_continuous_writes_loses_no_acknowledged_row() {
    if !available() {
        return;
    }
    // a is Master with the app schema, b replicates from it.
    let (sa, sb, a, b) = pair(11, false).await;
    wait_count(&sb, 0).await;

    // A writer commits continuously to whichever server takes writes; it counts acknowledgements.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pa, pb) = (sa.tcp_opts(), sb.tcp_opts());
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_rebuilds_a_diverged_replica_with_monotone_progress() {
    if !available() {
        return;
    }
    // a is Master with the app schema, b replicates from it.
    let (sa, sb, a, b) = pair(21, false).await;
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
    while b.report().await.expect("report").errant.is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "divergence not detected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let s2 = seen.clone();
    let progress: ridondato_adapters::ProgressFn = std::sync::Arc::new(move |p: ridondato_core::Progress| s2.lock().expect("lock").push((p.done, p.total)));
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
    assert!(r.facts.replication == Replication::Running && r.errant.is_none() && !r.facts.writable, "a replicating, aligned Slave: {r:?}");
    assert_eq!(r.facts.position, a.report().await.expect("report").facts.position);
    // What the resync overwrote was saved first: the errant row and a report counting it.
    let saved: Vec<_> = std::fs::read_dir(sb.dir.join("backups")).expect("backup dir").filter_map(Result::ok).map(|e| e.path()).collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let report = std::fs::read_to_string(saved[0].join("report.txt")).expect("report");
    assert!(report.contains("errant transactions (here, not on the Master): 1 (0-22-53)"), "exactly one, named: {report}");
    let dump = std::fs::read_to_string(saved[0].join("local.sql")).expect("dump");
    assert!(dump.contains(",7)"), "the errant row (v = 7, every other row has 1) is in the saved dump: {}", &dump[dump.len().saturating_sub(1500)..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_semi_sync_active_a_master_crash_loses_no_acknowledged_row() {
    if !available() {
        return;
    }
    // a is Master with the app schema, b replicates from it.
    let (mut sa, sb, a, b) = pair(41, true).await;
    let t = Instant::now();
    while !a.report().await.expect("report").facts.semi_sync {
        assert!(t.elapsed() < Duration::from_secs(10), "semi-sync never became active");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut acked = 0;
    for _ in 0..100 {
        app_insert(&sa).await.expect("write");
        acked += 1;
    }
    // The Master dies at once; every acknowledged row had reached the Slave's relay log.
    sa.kill9();
    b.promote(None).await.expect("promote b after the crash");
    assert_eq!(sb.count().await, acked, "no acknowledged row lost with semi-sync active");
    assert!(b.report().await.expect("report").facts.writable);
}
