//! `just bench-cloud`: in cloud mode against moto (two real daemons in the network-namespace
//! lab, moto in the client's namespace), N times each: the public IP moved by `cloud move-ip`
//! (the API call until `DescribeAddresses` reads it as moved), and the whole four-step
//! `cloud-switchover`, with each step's time. moto answers at once: a real AWS reassociation
//! takes about 5-6 s more to take effect in the network, which these figures exclude.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::cloud::CloudLab;

fn pct(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    v.get((v.len().saturating_sub(1)) * p / 100).copied().unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let Some(mut c) = CloudLab::up("bc", false) else {
        eprintln!("the cloud bench needs root, the lab tools and moto (scripts/deps-cloud.sh)");
        std::process::exit(1);
    };
    c.lab.start("a");
    assert!(c.lab.wait_role("a", "master", Duration::from_secs(10)), "a becomes Master");
    c.lab.start("b");
    assert!(c.lab.wait_role("b", "slave", Duration::from_secs(10)), "b becomes Slave");
    let (mut moves, mut totals) = (Vec::new(), Vec::new());
    let mut steps: Vec<Vec<u64>> = vec![Vec::new(); 4];
    // Moves with nobody serving behind them would disturb the pair: move to the Master's own
    // instance and back through the other one while the Master is a, one pair per trial.
    for i in 0..n {
        let (master, slave) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        let sock = c.lab.work.join(format!("{master}.sock"));
        for to in [if master == "a" { "2" } else { "1" }, if master == "a" { "1" } else { "2" }] {
            let t = Instant::now();
            let (ok, out) = support::sh(&[support::BIN, "cloud", "move-ip", to, "--socket", sock.to_str().unwrap_or_default()]);
            assert!(ok, "move-ip: {out}");
            moves.push(t.elapsed().as_millis() as u64);
        }
        let t = Instant::now();
        let (ok, out) = c.switchover(master, &[]);
        assert!(ok, "switch-over {i}: {out}");
        totals.push(t.elapsed().as_millis() as u64);
        for (k, line) in out.lines().filter(|l| l.trim_start().starts_with("done in ")).enumerate().take(4) {
            let ms = line.trim_start().trim_start_matches("done in ").split(' ').next().and_then(|x| x.parse().ok()).unwrap_or(0);
            steps[k].push(ms);
        }
        assert!(c.lab.wait_role(slave, "master", Duration::from_secs(5)) && c.lab.wait_role(master, "slave", Duration::from_secs(5)));
    }
    println!("cloud mode against moto, {n} trials (moto answers at once; AWS adds about 5-6 s for a reassociation to take effect):");
    println!(
        "  cloud move-ip (API call to the association read back): p50 {} ms, max {} ms ({} moves)",
        pct(&mut moves.clone(), 50),
        pct(&mut moves, 100),
        n * 2
    );
    let names = ["1 services off", "2 public IP moved", "3 Slave -> Master", "4 old Master -> Slave"];
    for (k, name) in names.iter().enumerate() {
        println!("  step {name}: p50 {} ms, max {} ms", pct(&mut steps[k].clone(), 50), pct(&mut steps[k], 100));
    }
    println!("  four-step cloud-switchover, whole command: p50 {} ms, max {} ms", pct(&mut totals.clone(), 50), pct(&mut totals, 100));
}
