//! `just bench-db`: two real mariadbd servers. (1) planned switch-over write outage: a writer
//! commits every 1 ms to whichever server takes writes; the longest time without a successful
//! commit around each switch-over, and whether any acknowledged row is missing afterwards.
//! (2) replication lag under a steady insert load: time from a commit on the Master to the row
//! being visible on the Slave, p50 and p99.

use ridondato_adapters::mariadb::testkit::pair;
use ridondato_adapters::Db;
use ridondato_core::NodeId;
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (sa, sb, da, db) = pair(31, false).await;
    let servers = [&sa, &sb];
    let dbs = [da, db];

    // (1) switch-overs under a continuous writer, back and forth.
    let stop = Arc::new(AtomicBool::new(false));
    let opts = [sa.tcp_opts().username("app").password("apppw"), sb.tcp_opts().username("app").password("apppw")];
    let (s2, o2) = (stop.clone(), opts.clone());
    let writer = tokio::spawn(async move {
        let mut conns: [Option<MySqlConnection>; 2] = [None, None];
        let mut acks: Vec<(u64, Instant)> = Vec::new();
        while !s2.load(Ordering::Relaxed) {
            for i in 0..2 {
                if conns[i].is_none() {
                    conns[i] = MySqlConnection::connect_with(&o2[i]).await.ok();
                }
                let Some(c) = conns[i].as_mut() else { continue };
                match c.execute("INSERT INTO app.t (v) VALUES (1)").await {
                    Ok(r) => {
                        acks.push((r.last_insert_id(), Instant::now()));
                        break;
                    }
                    // A killed session reconnects next time.
                    Err(_) => conns[i] = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        acks
    });
    let mut windows = Vec::new();
    let mut master = 0usize;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (old, new) = (master, 1 - master);
        let t0 = Instant::now();
        let at = dbs[old].fence().await.expect("fence");
        dbs[new].catch_up(at).await.expect("catch up");
        dbs[new].promote(Some(at)).await.expect("promote");
        dbs[old].replicate_from(NodeId(new as u8 + 1)).await.expect("re-point");
        windows.push((t0, Instant::now()));
        master = new;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let acks = writer.await.expect("writer");
    let mut outages: Vec<f64> = windows
        .iter()
        .map(|(s, e)| {
            let before = acks.iter().filter(|(_, t)| t < s).map(|(_, t)| *t).max().unwrap_or(*s);
            let after = acks.iter().filter(|(_, t)| t >= e).map(|(_, t)| *t).min().unwrap_or(*e);
            let inside = acks.iter().filter(|(_, t)| t >= s && t < e).map(|(_, t)| *t);
            let mut pts: Vec<Instant> = std::iter::once(before).chain(inside).chain(std::iter::once(after)).collect();
            pts.sort();
            pts.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0).fold(0.0, f64::max)
        })
        .collect();
    let mut c = MySqlConnection::connect_with(&servers[master].opts()).await.expect("connect");
    let ids: std::collections::BTreeSet<u64> =
        sqlx::query("SELECT id FROM app.t").fetch_all(&mut c).await.expect("ids").iter().map(|r| r.get::<i32, _>(0) as u64).collect();
    let lost = acks.iter().filter(|(id, _)| !ids.contains(id)).count();
    println!(
        "planned switch-over, {} switch-overs, writer every 1 ms: write outage p50 {:.0} ms, max {:.0} ms; {} rows acknowledged, {lost} lost",
        outages.len(),
        pct(&mut outages.clone(), 0.5),
        pct(&mut outages, 1.0),
        acks.len()
    );

    // (2) replication lag under ~500 inserts/s.
    let m = master;
    let mut mc = MySqlConnection::connect_with(&opts[m]).await.expect("connect");
    let mut sc = MySqlConnection::connect_with(&servers[1 - m].opts()).await.expect("connect");
    let mut lags = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let r = mc.execute("INSERT INTO app.t (v) VALUES (3)").await.expect("insert");
        let (id, t0) = (r.last_insert_id(), Instant::now());
        if id % 10 == 0 {
            // Sample every tenth row: poll the Slave until it shows it.
            loop {
                let seen = sqlx::query("SELECT COUNT(*) FROM app.t WHERE id = ?").bind(id).fetch_one(&mut sc).await.map(|r| r.get::<i64, _>(0)).unwrap_or(0);
                if seen > 0 {
                    lags.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "replication lag under a steady insert load ({} samples): p50 {:.2} ms, p99 {:.2} ms",
        lags.len(),
        pct(&mut lags.clone(), 0.5),
        pct(&mut lags, 0.99)
    );
}
