//! `just bench-api`: the HTTP API's targets, measured in the network-namespace lab from the
//! client's namespace, against real daemons:
//! - `GET /health` latency (a new TCP connection per check, as a load balancer does), first
//!   quiet, then while the node's heartbeat port takes a flood of 20 000 junk datagrams/s;
//! - the System Monitor's first contentful paint in Debian's chromium (through chromedriver);
//! - the daemon's resident memory with and without `[api]` (the Master, after the same settle
//!   time; with the API after the checks, an event stream and the page were served).
//!
//! No anchor runs beside it: Patroni's REST API, the field's model for these endpoints, needs
//! PostgreSQL and a DCS to start at all.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::cloud::NsRuntime;
use support::*;

const TOKEN: &str = "bench-api-token-0123456789abcdef";

fn pct(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    v.get((v.len().saturating_sub(1)) * p / 100).copied().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A pair up and settled; the Master's RSS in KiB.
fn pair(lab: &mut Lab) -> u64 {
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(10)), "a becomes Master");
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(10)), "b becomes Slave");
    // The same settle time in both runs: the allocator's steady state, not a condition to wait on.
    std::thread::sleep(Duration::from_secs(3));
    rss_kib(lab.pid("a").unwrap_or(0))
}

/// `n` health checks, one new connection each, 5 ms apart: latencies in microseconds.
async fn checks(addr: std::net::SocketAddr, n: usize) -> Vec<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").await.expect("send");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        out.push(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

/// Junk datagrams to `to` at `rate` per second until `stop`; how many were sent.
async fn flood(to: std::net::SocketAddr, rate: u64, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("udp");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let junk = [0x5au8; 120];
    let mut sent = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        for _ in 0..rate / 100 {
            if sock.send_to(&junk, to).await.is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// The page's first contentful paint (ms), loaded `n` times in chromium.
async fn paints(url: String, n: usize) -> Result<Vec<u64>, String> {
    // Two TLS providers are compiled into the workspace: fantoccini needs the process default.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }));
    let c = fantoccini::ClientBuilder::rustls()
        .map_err(|e| e.to_string())?
        .capabilities(caps)
        .connect("http://127.0.0.1:9515")
        .await
        .map_err(|e| format!("chromedriver: {e}"))?;
    let mut out = Vec::new();
    for _ in 0..n {
        c.goto(&url).await.map_err(|e| e.to_string())?;
        let script = "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? Math.round(p.startTime) : -1";
        let t = Instant::now();
        loop {
            let v = c.execute(script, vec![]).await.map_err(|e| e.to_string())?.as_i64().unwrap_or(-1);
            if v >= 0 {
                out.push(v as u64);
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err("no first contentful paint within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = c.close().await;
    Ok(out)
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    if !lab_available() {
        eprintln!("the API bench needs root and the lab's tools (scripts/deps-lan.sh)");
        std::process::exit(1);
    }
    let rss_without = {
        let mut lab = Lab::up("bq");
        pair(&mut lab)
    };
    let mut lab = Lab::up("ba");
    with_api(&lab, TOKEN);
    let rss_idle = pair(&mut lab);
    let a: std::net::IpAddr = lab.var("LAB_A").parse().expect("LAB_A");
    let api = std::net::SocketAddr::new(a, 8008);
    let heartbeat = std::net::SocketAddr::new(a, 7400);
    let ns = lab.ns("c");

    let client = NsRuntime::new(&ns);
    let mut quiet = client.run(move || checks(api, n));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, ns2) = (stop.clone(), ns.clone());
    let flooder = std::thread::spawn(move || {
        let rt = NsRuntime::new(&ns2);
        let t = Instant::now();
        let sent = rt.run(move || flood(heartbeat, 20_000, stop2));
        (sent, t.elapsed())
    });
    let mut flooded = client.run(move || checks(api, n));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, took) = flooder.join().expect("flood");

    let tools = ["chromium", "chromedriver"].iter().all(|t| sh(&["which", t]).0);
    let paint = if tools {
        let _driver = Spawned::in_ns(&lab, "c", &["chromedriver", "--port=9515"]);
        wait_for("chromedriver", Duration::from_secs(10), || lab.exec("c", &["curl", "-s", "http://127.0.0.1:9515/status"]).1.contains("ready"));
        let url = format!("http://{a}:8008/");
        client.run(move || paints(url, 10))
    } else {
        Err("chromium and chromium-driver are missing (scripts/deps-web.sh)".into())
    };
    let rss_served = rss_kib(lab.pid("a").unwrap_or(0));

    println!("HTTP API, lab client to node a (the Master), {n} checks each, a new connection per check:");
    let line = |v: &mut Vec<u64>| {
        format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", pct(v, 50) as f64 / 1000.0, pct(v, 99) as f64 / 1000.0, pct(v, 100) as f64 / 1000.0)
    };
    println!("  GET /health, quiet:                          {}", line(&mut quiet));
    println!(
        "  GET /health, heartbeat port flooded:         {}  ({} junk datagrams in {:.1} s = {:.0}/s)",
        line(&mut flooded),
        sent,
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );
    match paint {
        Ok(mut p) => println!(
            "  System Monitor first contentful paint:       p50 {} ms, max {} ms ({} loads, chromium headless)",
            pct(&mut p, 50),
            pct(&mut p, 100),
            p.len()
        ),
        Err(e) => println!("  System Monitor first contentful paint:       not measured: {e}"),
    }
    println!(
        "  daemon RSS (Master): without [api] {:.1} MiB, with [api] idle {:.1} MiB (+{:.1}), after the checks and the page {:.1} MiB (+{:.1})",
        rss_without as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss_idle as f64 - rss_without as f64) / 1024.0,
        rss_served as f64 / 1024.0,
        (rss_served as f64 - rss_without as f64) / 1024.0
    );
    println!("  targets: health p99 < 5 ms under the flood, first paint < 300 ms, the API adds <= 2 MB RSS");
}
