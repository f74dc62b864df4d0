//! `just bench-fs`: file sync against the anchors, in one run, on loopback.
//! (1) change-to-replica latency: a writer makes a small file every 10 ms; an inotify watch on the
//!     replica stamps each one's arrival under its final name. ridondato (adapter → its relay →
//!     the peer's rsync daemon) against lsyncd with its default settings and with `delay = 0`
//!     (lsyncd to a local target, the cheaper path).
//! (2) the cap: one 24 MiB incompressible file at 500 and 5000 KiB/s, ridondato against
//!     `rsync --bwlimit`; the bytes on the wire (ridondato's relay; for rsync, the same relay
//!     set far above the cap, only counting) sampled every 50 ms give the average rate and the
//!     highest 1-second window. (The receiver's file size is no measure: rsync writes it in
//!     256 KiB pieces.)
//! (3) initial sync of 10 000 small files: ridondato's first full pass (cap far above the
//!     machine's speed) against plain rsync to an rsync daemon on loopback, and to a local path.

use ridondato_adapters::fs_sync::shaper::{Relay, Shaper};
use ridondato_adapters::fs_sync::testkit::{self, free_addr};
use ridondato_adapters::fs_sync::watcher::{Change, TreeWatcher};
use ridondato_adapters::FsSync;
use ridondato_core::NodeId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const B: NodeId = NodeId(2);

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    dir.to_path_buf()
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

struct Lsyncd(Child);

impl Lsyncd {
    fn start(base: &Path, src: &Path, dst: &Path, delay: Option<u32>) -> Lsyncd {
        let conf = base.join("lsyncd.conf");
        let delay = delay.map_or(String::new(), |d| format!(", delay = {d}"));
        let text = format!(
            "settings {{ nodaemon = true, logfile = \"{}\", insist = true }}\nsync {{ default.rsync, source = \"{}\", target = \"{}\"{delay} }}\n",
            base.join("lsyncd.log").display(),
            src.display(),
            dst.display()
        );
        std::fs::write(&conf, text).expect("lsyncd conf");
        Lsyncd(Command::new("lsyncd").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("lsyncd (apt install lsyncd)"))
    }
}

impl Drop for Lsyncd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` exists (the sync is up), at most `limit`.
async fn appears(path: &Path, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// (1) One latency run: `n` files, one every `every`, into `src`; arrival on `dst` by inotify.
/// Returns the latencies in ms of those that arrived within `grace` after the last write.
async fn latency(src: &Path, dst: &Path, n: usize, every: Duration, grace: Duration) -> (Vec<f64>, usize) {
    let (mut w, _) = TreeWatcher::new(dst).expect("watch the replica");
    let content = |i: usize| format!("{i:08} {}", "p".repeat(200));
    let written: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let (w2, src2) = (written.clone(), src.to_path_buf());
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for i in 0..n {
            tick.tick().await;
            let name = format!("lat-{i:05}");
            std::fs::write(src2.join(&name), content(i)).expect("write");
            w2.lock().expect("lock").insert(name, Instant::now());
        }
    });
    let mut arrived: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + every * n as u32 + grace;
    while arrived.len() < n && Instant::now() < deadline {
        let Ok(Ok(changes)) = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), w.next()).await else { break };
        let now = Instant::now();
        for c in changes {
            if let Change::Path { rel, .. } = c {
                let name = rel.display().to_string();
                if name.starts_with("lat-") && !arrived.contains_key(&name) && std::fs::metadata(dst.join(&rel)).is_ok_and(|m| m.len() == 209) {
                    arrived.insert(name, now);
                }
            }
        }
    }
    writer.await.expect("writer");
    let written = written.lock().expect("lock");
    let lat = arrived.iter().filter_map(|(k, t)| written.get(k).map(|w| t.saturating_duration_since(*w).as_secs_f64() * 1000.0)).collect();
    (lat, n)
}

fn incompressible(path: &Path, len: usize) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, &buf[..len]).expect("big file");
}

/// (2) Samples a byte counter every 50 ms until `done`; returns the average rate (KiB/s, first
/// byte to last) and the highest rate over any 1-second window.
async fn rate(bytes: impl Fn() -> u64, done: impl Fn() -> bool) -> (f64, f64) {
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let t0 = Instant::now();
    loop {
        samples.push((Instant::now(), bytes()));
        if done() || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.push((Instant::now(), bytes()));
    // From the sample before the first byte to the first sample with the last one.
    let start = samples.iter().position(|x| x.1 > samples[0].1).unwrap_or(1).saturating_sub(1);
    let last = samples.last().map_or(0, |x| x.1);
    let end = samples.iter().position(|x| x.1 == last).unwrap_or(samples.len() - 1);
    let s = &samples[start..=end];
    let secs = s[s.len() - 1].0.duration_since(s[0].0).as_secs_f64();
    let avg = (last - s[0].1) as f64 / 1024.0 / secs.max(1e-9);
    let mut max_window = 0.0f64;
    for (i, a) in s.iter().enumerate() {
        if let Some(b) = s[i..].iter().find(|b| b.0.duration_since(a.0) >= Duration::from_secs(1)) {
            max_window = max_window.max((b.1 - a.1) as f64 / 1024.0 / b.0.duration_since(a.0).as_secs_f64());
        }
    }
    (avg, max_window)
}

fn complete(path: &Path, len: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == len)
}

/// A plain rsync daemon (the anchor's receiver) serving `dst` as module `m`.
fn plain_daemon(base: &Path, dst: &Path) -> (Child, String) {
    let addr = free_addr();
    let conf = base.join("plain-rsyncd.conf");
    std::fs::write(
        &conf,
        format!("address = 127.0.0.1\nport = {}\nuse chroot = no\nuid = root\ngid = root\n[m]\npath = {}\nread only = no\n", addr.port(), dst.display()),
    )
    .expect("conf");
    let child = Command::new("rsync").args(["--daemon", "--no-detach", "--config"]).arg(&conf).spawn().expect("rsync daemon");
    std::thread::sleep(Duration::from_millis(300));
    (child, format!("rsync://{addr}/m/"))
}

fn small_tree(root: &Path, n: usize) {
    for i in 0..n {
        let d = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).expect("mkdir");
        }
        std::fs::write(d.join(format!("f{i:05}")), "s".repeat(500 + (i * 37) % 3500)).expect("write");
    }
}

fn url_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("rsync://").trim_end_matches("/m/").parse().expect("address")
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).status().expect("rsync");
    assert!(st.success(), "{cmd:?}: {st}");
    t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base = fresh(&std::env::temp_dir().join(format!("ridondato-bench-fs-{}", std::process::id())));
    println!("ridondato file sync benchmark (loopback, {} )", std::env::temp_dir().display());

    // (1) latency
    println!("\n(1) change-to-replica latency, 1 small file every 10 ms (100 files/s), 500 files");
    println!("{:<28} {:>9} {:>9} {:>9} {:>9}", "", "arrived", "p50 ms", "p99 ms", "max ms");
    let row = |name: &str, lat: &mut Vec<f64>, n: usize| {
        let max = lat.iter().copied().fold(f64::NAN, f64::max);
        println!("{name:<28} {:>5}/{n:<3} {:>9.1} {:>9.1} {:>9.1}", lat.len(), pct(lat, 0.5), pct(lat, 0.99), max);
    };
    {
        let (src, dst) = (fresh(&base.join("l-src")), fresh(&base.join("l-dst")));
        let (a, _b) = testkit::pair(&base.join("l"), &src, &dst, 100_000, |_| {});
        a.push_start(B).await.expect("push");
        std::fs::write(src.join("ready"), b"1").expect("ready");
        assert!(appears(&dst.join("ready"), Duration::from_secs(10)).await, "ridondato never synced");
        let (mut lat, n) = latency(&src, &dst, 500, Duration::from_millis(10), Duration::from_secs(10)).await;
        row("ridondato (cap 100 MiB/s)", &mut lat, n);
        a.push_stop().await.expect("stop");
    }
    for (name, delay, grace) in [("lsyncd delay=0", Some(0), 10), ("lsyncd default (delay 15 s)", None, 40)] {
        let tag = if delay.is_some() { "z" } else { "d" };
        let (src, dst) = (fresh(&base.join(format!("{tag}-src"))), fresh(&base.join(format!("{tag}-dst"))));
        let _l = Lsyncd::start(&base, &src, &dst, delay);
        // lsyncd's start-up full sync: wait for it, so the run measures changes only.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(src.join("ready"), b"1").expect("ready");
        if !appears(&dst.join("ready"), Duration::from_secs(40)).await {
            println!("{name:<28} did not sync (see {}/lsyncd.log)", base.display());
            continue;
        }
        let (mut lat, n) = latency(&src, &dst, 500, Duration::from_millis(10), Duration::from_secs(grace)).await;
        row(name, &mut lat, n);
    }

    // (2) the cap
    const BIG: usize = 24 << 20;
    println!("\n(2) bandwidth cap, one {} MiB incompressible file; KiB/s on the wire (a counting relay), 1-s windows", BIG >> 20);
    println!("{:<28} {:>8} {:>10} {:>10} {:>11} {:>8}", "", "cap", "average", "avg/cap", "max 1-s", "max/cap");
    for cap in [500u64, 5000] {
        let src = fresh(&base.join(format!("c{cap}-src")));
        incompressible(&src.join("big.bin"), BIG);
        let row = |name: &str, (avg, max): (f64, f64)| {
            println!("{name:<28} {cap:>8} {avg:>10.0} {:>9.1}% {max:>11.0} {:>7.1}%", (avg / cap as f64 - 1.0) * 100.0, (max / cap as f64 - 1.0) * 100.0)
        };
        {
            let (empty, dst) = (fresh(&base.join(format!("c{cap}-empty"))), fresh(&base.join(format!("c{cap}-dst"))));
            let (a, _b) = testkit::pair(&base.join(format!("c{cap}")), &empty, &dst, cap, |_| {});
            a.push_start(B).await.expect("push");
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::rename(src.join("big.bin"), empty.join("big.bin")).expect("move in");
            let target = dst.join("big.bin");
            row("ridondato", rate(|| a.bytes(), || complete(&target, BIG as u64)).await);
            a.push_stop().await.expect("stop");
            std::fs::rename(empty.join("big.bin"), src.join("big.bin")).expect("move back");
        }
        {
            let dst = fresh(&base.join(format!("c{cap}-plain")));
            let (mut d, url) = plain_daemon(&base, &dst);
            // The same kind of relay, far above the cap: it only counts.
            let counter = Shaper::new(u64::MAX / 4);
            let relay = Relay::start(url_addr(&url), counter.clone()).await.expect("relay");
            let mut child = Command::new("rsync")
                .arg("-a")
                .arg(format!("--bwlimit={cap}"))
                .arg(src.join("big.bin"))
                .arg(format!("rsync://{}/m/", relay.addr))
                .spawn()
                .expect("rsync");
            let target = dst.join("big.bin");
            row(&format!("rsync --bwlimit={cap}"), rate(|| counter.bytes.load(Ordering::Relaxed), || complete(&target, BIG as u64)).await);
            let _ = child.wait();
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    // (3) initial sync
    const N: usize = 10_000;
    println!("\n(3) initial sync of {N} small files (0.5-4 KiB, 100 directories), median of 3 interleaved rounds");
    let src = fresh(&base.join("i-src"));
    small_tree(&src, N);
    // Three rounds, the runs interleaved, each into an empty target; the median of each.
    let mut runs: [Vec<f64>; 3] = Default::default();
    for round in 0..3 {
        let dst = fresh(&base.join(format!("i-dst{round}")));
        let (a, _b) = testkit::pair(&base.join(format!("i{round}")), &src, &dst, 10_000_000, |_| {});
        let t = Instant::now();
        a.push_start(B).await.expect("push");
        while a.report().map_or(0, |r| r.rescans) == 0 && t.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runs[0].push(t.elapsed().as_secs_f64());
        a.push_stop().await.expect("stop");
        assert_eq!(count_files(&dst), N, "the first pass copied everything");

        let dst = fresh(&base.join(format!("i-plain-d{round}")));
        let (mut d, url) = plain_daemon(&base, &dst);
        runs[1].push(timed(Command::new("rsync").args(["-aH", "--delete"]).arg(format!("{}/", src.display())).arg(&url)));
        let _ = d.kill();
        let _ = d.wait();

        let dst = fresh(&base.join(format!("i-plain-l{round}")));
        runs[2].push(timed(Command::new("rsync").args(["-aH", "--delete"]).arg(format!("{}/", src.display())).arg(&dst)));
    }
    let names = ["ridondato (first full pass, via relay and daemon)", "plain rsync -aH to an rsync daemon", "plain rsync -aH, local target"];
    let times: Vec<(&str, f64)> = names.iter().zip(runs.iter_mut()).map(|(n, r)| (*n, pct(r, 0.5))).collect();
    let anchor = times[1].1;
    for (name, secs) in &times {
        println!("{name:<52} {secs:>7.2} s  {:>5.2}x the rsync daemon run", secs / anchor);
    }
    let _ = std::fs::remove_dir_all(&base);
}
