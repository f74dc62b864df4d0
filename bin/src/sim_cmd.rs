//! `ridondato sim`: run scenario files (timeline and verdict) or a seed sweep.

use crate::args::SimArgs;
use ridondato_sim::sweep::{random_schedule, run_schedule, sweep};
use ridondato_sim::trace::render;
use ridondato_sim::Scenario;
use std::time::Instant;

pub fn run(a: &SimArgs) -> Result<(), String> {
    if a.bench {
        return bench();
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    match (a.sweep, a.files.is_empty()) {
        (Some(n), true) if a.tier2 => run_tier2(n, a.seed.unwrap_or(1)),
        (Some(n), true) => run_sweep(n, a.seed.unwrap_or(1), threads, a.trace),
        (None, false) => run_files(&a.files, a.seed),
        _ => Err("give scenario FILEs, or --sweep N, or --bench (see `ridondato sim --help`)".into()),
    }
}

/// The same random schedules through the real driver under turmoil (operator commands left out:
/// this tier does not drive the control channel), checking the safety invariants.
fn run_tier2(n: u64, first: u64) -> Result<(), String> {
    let start = Instant::now();
    let mut failures = Vec::new();
    for seed in first..first + n {
        let s = random_schedule(seed);
        let ops: Vec<_> = s.ops.into_iter().filter(|(_, f)| !matches!(f, ridondato_sim::Fault::Cmd(..))).collect();
        let r = ridondato_sim::turmoil_tier::run(&s.cfg, &ops, s.heal_at)?;
        if !r.violations.is_empty() {
            failures.push((seed, r.violations.join("; ")));
        }
    }
    println!("tier 2: {n} schedules (seeds {first}..{}) in {:.1} s", first + n - 1, start.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!("PASS: every safety invariant held");
        return Ok(());
    }
    for (seed, e) in &failures {
        println!("FAIL seed {seed}: {e}");
    }
    Err(format!("{} of {n} schedules failed", failures.len()))
}

/// Speed of both tiers: simulated seconds per wall second and schedules per second.
fn bench() -> Result<(), String> {
    println!("{:<40} {:>10} {:>14} {:>16}", "tier", "schedules", "schedules/s", "sim-s per wall-s");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for t in [1, threads] {
        let start = Instant::now();
        let r = sweep(500_000, 2000, t);
        let wall = start.elapsed().as_secs_f64();
        let label = format!("1: pure harness, {t} thread(s)");
        println!("{label:<40} {:>10} {:>14.0} {:>16.0}", r.runs, r.runs as f64 / wall, r.sim_ms as f64 / 1000.0 / wall);
    }
    let start = Instant::now();
    let (mut sim_ms, mut runs) = (0u64, 0u64);
    for seed in 500_000..500_010u64 {
        let s = random_schedule(seed);
        let ops: Vec<_> = s.ops.into_iter().filter(|(_, f)| !matches!(f, ridondato_sim::Fault::Cmd(..))).collect();
        let r = ridondato_sim::turmoil_tier::run(&s.cfg, &ops, s.heal_at)?;
        sim_ms += r.sim_ms;
        runs += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    println!("{:<40} {:>10} {:>14.1} {:>16.0}", "2: real driver under turmoil, 1 thread", runs, runs as f64 / wall, sim_ms as f64 / 1000.0 / wall);
    Ok(())
}

fn run_files(files: &[String], seed: Option<u64>) -> Result<(), String> {
    let mut failed = 0;
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        let mut sc = Scenario::parse(f, &text)?;
        if let Some(s) = seed {
            sc.cfg.seed = s;
        }
        let out = sc.run();
        println!("== {f} (seed {})", sc.cfg.seed);
        print!("{}", out.timeline);
        if out.failures.is_empty() {
            println!("PASS {f}\n");
        } else {
            failed += 1;
            for e in &out.failures {
                println!("  FAIL: {e}");
            }
            println!("FAIL {f}\n");
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} scenarios failed", files.len()));
    }
    Ok(())
}

fn run_sweep(n: u64, first: u64, threads: usize, show_trace: bool) -> Result<(), String> {
    if n == 1 {
        // Reproducing one seed: show everything.
        let sched = random_schedule(first);
        println!("seed {first}: {} operations, heal at {} ms", sched.ops.len(), sched.heal_at);
        for (t, f) in &sched.ops {
            println!("  at {t}ms {f}");
        }
        let (res, sim) = run_schedule(&sched, true);
        print!("{}", render(&sim.trace));
        return match res {
            Ok(s) => {
                println!("PASS seed {first}: settled {} ms after the heal", s.settle_ms);
                Ok(())
            }
            Err(e) => Err(format!("seed {first} FAILED: {e}")),
        };
    }
    let start = Instant::now();
    let r = sweep(first, n, threads);
    let wall = start.elapsed().as_secs_f64();
    println!(
        "sweep: {} schedules (seeds {first}..{}) on {threads} threads in {wall:.1} s: {:.0} schedules/s, {:.0}x real time, {} events",
        r.runs,
        first + n - 1,
        r.runs as f64 / wall,
        r.sim_ms as f64 / 1000.0 / wall,
        r.events
    );
    println!("slowest settle after heal: {} ms; longest dual holding in a grace window: {} ms (seed {})", r.max_settle_ms, r.max_dual_ms, r.max_dual_seed);
    if r.failures.is_empty() {
        println!("PASS: every invariant held on every schedule");
        return Ok(());
    }
    for (seed, e) in r.failures.iter().take(10) {
        println!("FAIL seed {seed}: {e}\n  reproduce: ridondato sim --sweep 1 --seed {seed}");
    }
    if show_trace {
        let (_, sim) = run_schedule(&random_schedule(r.failures[0].0), true);
        print!("{}", render(&sim.trace));
    }
    Err(format!("{} of {} schedules failed", r.failures.len(), r.runs))
}
