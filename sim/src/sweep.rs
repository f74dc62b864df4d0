//! Random fault schedules from one seed each: faults for a while, then everything heals and the
//! pair must settle (I5). A failing seed is printed with the one command that reproduces it.

use crate::cluster::{Sim, SimConfig};
use crate::fault::{Fault, Ix};
use crate::invariants::settled;
use crate::rng::Rng;
use ridondato_core::{Command, Mode, Node, Role, Target};

/// Faults happen in `[FAULTS_FROM, heal_at)`; `heal_at` is 20–40 s.
const FAULTS_FROM: u64 = 3000;

/// Operations an adapter may fail or hang on. Releasing ones (drop-vip, fence-db, and `*`, which
/// includes them) are left out: a host that cannot drop its VIP or fence its DB can only be
/// stopped by power fencing (STONITH), which a two-node pair without a fencing device lacks.
/// Any operation, `*` included, may be slowed down.
const FAULTY_OPS: [&str; 8] = ["persist", "raise-vip", "arp-probe", "check-witnesses", "promote-db", "replicate-db", "start-services", "garp"];

#[derive(Clone, Debug)]
pub struct Schedule {
    pub cfg: SimConfig,
    pub ops: Vec<(u64, Fault)>,
    pub heal_at: u64,
}

pub fn random_schedule(seed: u64) -> Schedule {
    let mut r = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5);
    let mut cfg = SimConfig { seed, ..SimConfig::default() };
    cfg.witnesses = *r.pick(&[0, 0, 1]);
    // A third of the schedules run the etcd lease arbiter (B11) besides the others.
    cfg.lease = r.chance(33);
    if r.chance(10) {
        cfg.mode = Mode::Cloud;
        cfg.cloud_auto_failover = true;
    }
    let heal_at = r.range(20_000, 40_000);
    let mut ops = vec![(0, Fault::Start(0)), (r.range(0, 3000), Fault::Start(1)), (r.range(1000, 5000), Fault::Writer(true))];
    let n = r.range(2, 12);
    for _ in 0..n {
        let t = r.range(FAULTS_FROM, heal_at - 1);
        let ix: Ix = r.range(0, 1) as usize;
        let op = (*r.pick(&FAULTY_OPS)).to_string();
        let any_op = if r.chance(20) { "*".to_string() } else { op.clone() };
        let f = match r.range(0, 35) {
            0 => Fault::Crash(ix),
            1 => Fault::Start(ix),
            2 => Fault::PowerOff(ix),
            3 => Fault::PowerOn(ix),
            4 => Fault::LinkDown(ix),
            5 => Fault::LinkUp(ix),
            6 => Fault::Cut,
            7 => Fault::CutOneWay(ix, 1 - ix),
            8 => Fault::Split { witness: *r.pick(&[None, Some(0), Some(1)]) },
            9 => Fault::Hold,
            10 => Fault::Release,
            11 => Fault::Loss(r.range(1, 30) as u32),
            12 => Fault::Latency(r.range(1, 80)),
            13 => Fault::Heal,
            14 => Fault::Slow(ix, any_op, r.range(2, 10)),
            15 => Fault::Fail(ix, op),
            16 => Fault::Hang(ix, op),
            17 => Fault::Fix(ix),
            18 => Fault::Drift(ix, r.range(0, 400) as i64 - 200),
            19 => Fault::Cmd(ix, Command::Switchover),
            20 => Fault::Cmd(ix, Command::SetState(Target::Off)),
            21 => Fault::Cmd(ix, Command::SetState(Target::Slave)),
            22 => Fault::Cmd(ix, Command::SetState(Target::Master)),
            23 => Fault::Cmd(ix, Command::Maintenance(r.chance(50))),
            24 => Fault::Cmd(ix, Command::Resync(ridondato_core::ResyncKind::All)),
            25 => Fault::Cmd(ix, Command::Shutdown),
            26 => Fault::StopReplication(ix),
            27 => {
                ops.push((t + r.range(500, 15_000), Fault::DbUp(ix)));
                Fault::DbDown(ix)
            }
            30 => {
                ops.push((t + r.range(500, 15_000), Fault::MongoUp(ix)));
                Fault::MongoDown(ix)
            }
            33 | 34 if cfg.lease => {
                ops.push((t + r.range(500, 10_000), Fault::EtcdUp));
                if r.chance(50) {
                    Fault::EtcdCut(ix)
                } else {
                    Fault::EtcdDown
                }
            }
            29 => {
                // A hung daemon (SIGSTOP) that comes back: its VIP's lease runs out meanwhile.
                ops.push((t + r.range(200, 8000), Fault::Resume(ix)));
                Fault::Pause(ix)
            }
            28 => {
                // The state file lost while the daemon is down.
                let back = t + r.range(100, 5000);
                ops.push((back - 1, Fault::LoseState(ix)));
                ops.push((back, Fault::Start(ix)));
                Fault::Crash(ix)
            }
            _ => {
                // A crash followed by a restart, the most common real event.
                ops.push((t + r.range(100, 5000), Fault::Start(ix)));
                Fault::Crash(ix)
            }
        };
        ops.push((t, f));
    }
    ops.sort_by_key(|(t, _)| *t);
    Schedule { cfg, ops, heal_at }
}

/// What one schedule showed.
#[derive(Clone, Debug)]
pub struct RunStats {
    /// Simulated ms from the final heal until the pair settled.
    pub settle_ms: u64,
    pub sim_ms: u64,
    pub events: u64,
    pub max_dual_ms: u64,
}

/// The liveness bound after a heal (I5): failover timeout plus a stated margin covering a fresh
/// discovery window, one arbiter re-check, one maximal retry back-off, and a switch-over begun
/// before the heal that has to time out and roll back.
pub fn liveness_bound(cfg: &SimConfig) -> u64 {
    let t = cfg.timing;
    t.failover_timeout + t.discovery_window + t.arbiter_recheck + t.retry_max + t.handover_timeout + 2000
}

pub fn run_schedule(s: &Schedule, verbose: bool) -> (Result<RunStats, String>, Sim) {
    let mut sim = Sim::new(s.cfg.clone());
    sim.verbose = verbose;
    for (t, f) in &s.ops {
        sim.schedule(*t, f.clone());
    }
    let h = s.heal_at;
    for f in [
        Fault::Heal,
        Fault::Fix(0),
        Fault::Fix(1),
        Fault::Drift(0, 0),
        Fault::Drift(1, 0),
        Fault::DbUp(0),
        Fault::DbUp(1),
        Fault::MongoUp(0),
        Fault::MongoUp(1),
        Fault::EtcdUp,
    ] {
        sim.schedule(h, f);
    }
    for ix in 0..2 {
        for f in [Fault::LinkUp(ix), Fault::PowerOn(ix), Fault::Resume(ix), Fault::Start(ix)] {
            sim.schedule(h, f);
        }
    }
    sim.run_until(h + 10);
    // The operator ends maintenance and brings back nodes left Off.
    for ix in 0..2 {
        if let Some(n) = sim.nodes[ix].as_ref() {
            let off = n.role() == Role::Off;
            sim.schedule(h + 20, Fault::Cmd(ix, Command::Maintenance(false)));
            if off {
                sim.schedule(h + 20, Fault::Cmd(ix, Command::SetState(Target::Slave)));
            }
        }
    }
    let bound = liveness_bound(&s.cfg);
    let mut settled_at = None;
    let mut t = h + 100;
    while t <= h + bound {
        sim.run_until(t);
        // An operator (or systemd) brings back a daemon that exited after a shutdown command,
        // and asks again for Slave a node still Off (its first request may have found it busy).
        for ix in 0..2 {
            match sim.nodes[ix].as_ref() {
                None => sim.schedule(t, Fault::Start(ix)),
                Some(n) if n.role() == Role::Off && !n.in_transition() && t % 1000 == h % 1000 => {
                    sim.schedule(t, Fault::Cmd(ix, Command::SetState(Target::Slave)));
                }
                Some(_) if t % 1000 == h % 1000 && operator_must_force(&sim, ix) => {
                    sim.schedule(t, Fault::Cmd(ix, Command::ForceMaster));
                }
                Some(_) => {}
            }
        }
        if settled_at.is_none() && settled(&sim.world, &sim.nodes, false).is_ok() {
            settled_at = Some(t);
            break;
        }
        t += 100;
    }
    // SIM_DEBUG=1: what each node says of itself when a schedule does not settle.
    if settled_at.is_none() && std::env::var("SIM_DEBUG").is_ok() {
        for n in sim.nodes.iter().flatten() {
            eprintln!("DEBUG {:?}", n.status());
        }
    }
    let result = match settled_at {
        None => Err(format!(
            "I5: not settled {} ms after the heal: {} [{}]",
            bound,
            settled(&sim.world, &sim.nodes, false).err().unwrap_or_default(),
            // What each node would say for itself: the first thing to look at when it is stuck.
            sim.nodes.iter().flatten().map(|n| format!("{} {} blocker {:?}", n.id(), n.role(), n.status().promotion_blocker)).collect::<Vec<_>>().join("; ")
        )),
        Some(at) => {
            // A node flagged for resync is rebuilt by the operator, then must replicate.
            let m = settled(&sim.world, &sim.nodes, false).unwrap_or(0);
            let flagged = sim.nodes[1 - m].as_ref().is_some_and(|n| n.status().needs_resync);
            let mut r = Ok(at - h);
            if flagged {
                sim.schedule(sim.now + 10, Fault::Cmd(1 - m, Command::Resync(ridondato_core::ResyncKind::All)));
                // A job begun before the heal under slowed adapters may still be running: wait for
                // it (each phase has its own deadline), then for one that starts now.
                let until = sim.now + 60_000;
                sim.run_until(sim.now + 15_000);
                let running =
                    |sim: &Sim| sim.nodes[1 - m].as_ref().is_some_and(|n| n.status().job.is_some_and(|j| j.state == ridondato_core::JobState::Running));
                while running(&sim) && sim.now < until {
                    sim.run_until(sim.now + 1000);
                }
                if sim.nodes[1 - m].as_ref().is_some_and(|n| n.status().needs_resync) {
                    sim.schedule(sim.now + 10, Fault::Cmd(1 - m, Command::Resync(ridondato_core::ResyncKind::All)));
                    sim.run_until(sim.now + 15_000);
                }
                if let Err(e) = settled(&sim.world, &sim.nodes, true) {
                    r = Err(format!("I5: after resync: {e}"));
                } else if sim.nodes[1 - m].as_ref().is_some_and(|n| n.status().needs_resync) {
                    r = Err("I5: resync did not clear needs-resync".into());
                }
            }
            sim.run_until(sim.now + 1000);
            r
        }
    };
    let v = sim.violations();
    let result = if !v.is_empty() { Err(v.join("; ")) } else { result };
    let stats = result.map(|settle_ms| RunStats { settle_ms, sim_ms: sim.now, events: sim.events, max_dual_ms: sim.checker.max_dual_ms });
    (stats, sim)
}

#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    pub runs: u64,
    pub failures: Vec<(u64, String)>,
    pub sim_ms: u64,
    pub events: u64,
    pub max_settle_ms: u64,
    pub max_dual_ms: u64,
    /// The seed that showed `max_dual_ms`.
    pub max_dual_seed: u64,
}

/// Runs seeds `first..first+n` on all cores.
pub fn sweep(first: u64, n: u64, threads: usize) -> SweepReport {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    let next = AtomicU64::new(0);
    let report = Mutex::new(SweepReport::default());
    std::thread::scope(|sc| {
        for _ in 0..threads.max(1) {
            sc.spawn(|| {
                let mut local = SweepReport::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let seed = first + i;
                    let (res, sim) = run_schedule(&random_schedule(seed), false);
                    local.runs += 1;
                    local.sim_ms += sim.now;
                    local.events += sim.events;
                    match res {
                        Ok(s) => {
                            local.max_settle_ms = local.max_settle_ms.max(s.settle_ms);
                            if s.max_dual_ms > local.max_dual_ms {
                                local.max_dual_ms = s.max_dual_ms;
                                local.max_dual_seed = seed;
                            }
                        }
                        Err(e) => local.failures.push((seed, e)),
                    }
                }
                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                r.runs += local.runs;
                r.sim_ms += local.sim_ms;
                r.events += local.events;
                r.max_settle_ms = r.max_settle_ms.max(local.max_settle_ms);
                if local.max_dual_ms > r.max_dual_ms {
                    r.max_dual_ms = local.max_dual_ms;
                    r.max_dual_seed = local.max_dual_seed;
                }
                r.failures.extend(local.failures);
            });
        }
    });
    let mut r = report.into_inner().unwrap_or_else(|p| p.into_inner());
    r.failures.sort();
    r
}

/// Both nodes are Slaves that the promotion policy refuses (both flagged after two lost split
/// brains, say): nothing moves by itself, as designed. An operator then forces the node with
/// the more recent data, accepting the other's extra writes as lost; `ix` is that node.
fn operator_must_force(sim: &Sim, ix: Ix) -> bool {
    let st: Vec<Option<ridondato_core::Status>> = sim.nodes.iter().map(|n| n.as_ref().map(Node::status)).collect();
    let (Some(me), Some(other)) = (&st[ix], &st[1 - ix]) else { return false };
    // Both held back by known gaps (with a database and MongoDB, histories that diverged each
    // way: each node lacks writes of the other): the operator picks one and forces it.
    let stuck =
        |s: &ridondato_core::Status| matches!(s.role, Role::Slave | Role::Booting) && s.transition.is_none() && s.promotion_blocker.is_some() && s.peer.alive;
    let claim = |s: &ridondato_core::Status, i: Ix| (s.db_position, s.mongo.as_ref().map(|m| m.optime), std::cmp::Reverse(i));
    stuck(me) && stuck(other) && claim(me, ix) > claim(other, 1 - ix)
}
