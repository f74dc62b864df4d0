//! Declarative scenario files: settings, timed operations and expectations, then `----` and the
//! expected timeline. `REWRITE=1` regenerates the timeline on purpose.
//!
//! ```text
//! # master crash (S3)
//! seed 7
//! set witnesses=1
//! at 0 start a
//! at 2s start b
//! at 5s power-off a
//! expect 6s b role=master vip=yes
//! run 8s
//! ----
//! (timeline)
//! ```

use crate::cluster::{Sim, SimConfig};
use crate::fault::{node_name, Fault, Ix};
use crate::invariants::settled;
use crate::trace::{render, TraceLine};
use ridondato_core::{JobState, Mode};

#[derive(Clone, Debug)]
enum Item {
    Op(Fault),
    Expect(Option<Ix>, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub cfg: SimConfig,
    items: Vec<(u64, Item)>,
    end: u64,
    pub expected: Option<String>,
    /// The file text above `----`, kept verbatim for rewrites.
    pub head: String,
}

#[derive(Debug)]
pub struct Outcome {
    pub timeline: String,
    /// Expectations not met and invariants broken.
    pub failures: Vec<String>,
    pub max_dual_ms: u64,
}

/// `1500`, `1500ms`, `1.5s`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a time (examples: 1500, 1500ms, 1.5s)");
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map_err(|_| bad());
    }
    if let Some(sec) = s.strip_suffix('s') {
        let v: f64 = sec.parse().map_err(|_| bad())?;
        if !(0.0..1e9).contains(&v) {
            return Err(bad());
        }
        return Ok((v * 1000.0).round() as u64);
    }
    s.parse().map_err(|_| bad())
}

fn apply_setting(cfg: &mut SimConfig, key: &str, val: &str) -> Result<(), String> {
    let ms = || parse_time(val);
    let t = &mut cfg.timing;
    match key {
        "witnesses" => cfg.witnesses = val.parse().map_err(|_| format!("witnesses: `{val}` is not a number"))?,
        "mode" => {
            cfg.mode = match val {
                "lan" => Mode::Lan,
                "cloud" => Mode::Cloud,
                _ => return Err(format!("mode: `{val}` (expected lan or cloud)")),
            }
        }
        "cloud_auto_failover" => cfg.cloud_auto_failover = val == "on",
        "heartbeat" => t.heartbeat_interval = ms()?,
        "failover" => t.failover_timeout = ms()?,
        "isolation" => t.isolation_timeout = ms()?,
        "discovery" => t.discovery_window = ms()?,
        "handover_timeout" => t.handover_timeout = ms()?,
        "maintenance_isolation" => t.maintenance_isolation_timeout = ms()?,
        "write_every" => cfg.write_every = ms()?,
        "mongo" => cfg.components.mongo = val == "on",
        "lease" => cfg.lease = val == "on",
        _ => return Err(format!("unknown setting `{key}`")),
    }
    Ok(())
}

impl Scenario {
    pub fn parse(name: &str, text: &str) -> Result<Scenario, String> {
        let (head, expected) = match text.split_once("\n----\n") {
            Some((h, e)) => (h.to_string(), Some(e.to_string())),
            None => (text.trim_end_matches('\n').to_string(), None),
        };
        let mut cfg = SimConfig::default();
        let mut items = Vec::new();
        let mut end = 0;
        for (no, raw) in head.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |e: String| format!("{name}:{}: {e}", no + 1);
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            match word {
                "seed" => cfg.seed = rest.trim().parse().map_err(|_| err(format!("bad seed `{rest}`")))?,
                "set" => {
                    for kv in rest.split_whitespace() {
                        let (k, v) = kv.split_once('=').ok_or_else(|| err(format!("`{kv}`: expected key=value")))?;
                        apply_setting(&mut cfg, k, v).map_err(err)?;
                    }
                }
                "at" => {
                    let (t, op) = rest.split_once(' ').ok_or_else(|| err("expected `at TIME OPERATION`".into()))?;
                    let t = parse_time(t).map_err(err)?;
                    items.push((t, Item::Op(op.parse().map_err(err)?)));
                    end = end.max(t);
                }
                "expect" => {
                    let mut w = rest.split_whitespace();
                    let t = parse_time(w.next().unwrap_or("")).map_err(err)?;
                    let who = w.next().ok_or_else(|| err("expected `expect TIME NODE key=value...`".into()))?;
                    let ix = match who {
                        "a" => Some(0),
                        "b" => Some(1),
                        "cluster" => None,
                        _ => return Err(err(format!("unknown node `{who}`"))),
                    };
                    let mut checks = Vec::new();
                    for kv in w {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        checks.push((k.to_string(), v.to_string()));
                    }
                    items.push((t, Item::Expect(ix, checks)));
                    end = end.max(t);
                }
                "run" => end = end.max(parse_time(rest.trim()).map_err(err)?),
                _ => return Err(err(format!("unknown directive `{word}`"))),
            }
        }
        // Stable: equal times keep file order.
        items.sort_by_key(|(t, _)| *t);
        Ok(Scenario { name: name.to_string(), cfg, items, end, expected, head })
    }

    pub fn run(&self) -> Outcome {
        let mut sim = Sim::new(self.cfg.clone());
        let mut failures = Vec::new();
        for (t, item) in &self.items {
            match item {
                Item::Op(f) => sim.schedule(*t, f.clone()),
                Item::Expect(ix, checks) => {
                    sim.run_until(*t);
                    let text = match check(&sim, *ix, checks) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => {
                            failures.push(format!("at {}: expect {}: {e}", fmt_t(*t), desc(*ix, checks)));
                            format!("FAILED: {e}")
                        }
                    };
                    sim.trace.push(TraceLine { t: *t, who: "--", text: format!("expect {}: {text}", desc(*ix, checks)) });
                }
            }
        }
        sim.run_until(self.end);
        let violations = sim.violations();
        let verdict = if violations.is_empty() {
            format!("verdict: invariants held (longest dual holding in a heal grace: {} ms)", sim.checker.max_dual_ms)
        } else {
            format!("verdict: VIOLATED {}", violations.join("; "))
        };
        failures.extend(violations);
        sim.trace.push(TraceLine { t: sim.now, who: "--", text: verdict });
        Outcome { timeline: render(&sim.trace), failures, max_dual_ms: sim.checker.max_dual_ms }
    }

    /// The file with its timeline replaced.
    pub fn rewritten(&self, timeline: &str) -> String {
        format!("{}\n----\n{}", self.head.trim_end_matches('\n'), timeline)
    }
}

fn fmt_t(t: u64) -> String {
    format!("{}.{:03}s", t / 1000, t % 1000)
}

fn desc(ix: Option<Ix>, checks: &[(String, String)]) -> String {
    let who = ix.map_or("cluster", node_name);
    let kv: Vec<String> = checks.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
    format!("{who} {}", kv.join(" "))
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "on" | "true" | "rw")
}

fn check(sim: &Sim, ix: Option<Ix>, checks: &[(String, String)]) -> Result<(), String> {
    let Some(ix) = ix else {
        for (k, v) in checks {
            match k.as_str() {
                "settled" => {
                    settled(&sim.world, &sim.nodes, true)?;
                }
                "lost-writes" => {
                    let m = (0..2).find(|&i| sim.world.hosts[i].db.writable).unwrap_or(0);
                    let log = &sim.world.hosts[m].db.log;
                    let lost = sim.world.acked.iter().filter(|(t, _)| !log.contains(t)).count();
                    if lost.to_string() != *v {
                        return Err(format!("{lost} acknowledged writes missing on {} (of {})", node_name(m), sim.world.acked.len()));
                    }
                }
                _ => return Err(format!("unknown cluster check `{k}`")),
            }
        }
        return Ok(());
    };
    let h = &sim.world.hosts[ix];
    let node = sim.nodes[ix].as_ref();
    let st = node.map(|n| n.status());
    for (k, v) in checks {
        let got: String = match k.as_str() {
            "role" => st.as_ref().map_or("down".into(), |s| s.role.as_str().to_string()),
            "vip" => if h.vip { "yes" } else { "no" }.into(),
            "db" => if h.db.writable { "rw" } else { "ro" }.into(),
            "services" => if h.services { "yes" } else { "no" }.into(),
            "epoch" => st.as_ref().map_or("-".into(), |s| s.epoch.to_string()),
            "replicating" => if h.db.source.is_some() { "yes" } else { "no" }.into(),
            "needs-resync" => if st.as_ref().is_some_and(|s| s.needs_resync) { "yes" } else { "no" }.into(),
            "maintenance" => if st.as_ref().is_some_and(|s| s.maintenance.on) { "on" } else { "off" }.into(),
            "cloud-ip" => if sim.world.eip == Some(ix) { "yes" } else { "no" }.into(),
            "job" => st.as_ref().and_then(|s| s.job.clone()).map_or("none".into(), |j| match j.state {
                JobState::Running => format!("running@{}%", j.percent()),
                JobState::Done => "done".into(),
                JobState::Failed => "failed".into(),
                JobState::Cancelled => "cancelled".into(),
            }),
            "alarm" => {
                let alarms: Vec<String> = st.as_ref().map(|s| s.alarms.iter().map(|a| a.to_string()).collect()).unwrap_or_default();
                if alarms.iter().any(|a| a == v) {
                    continue;
                }
                return Err(format!("alarm {v} not raised (alarms: [{}])", alarms.join(", ")));
            }
            "no-alarm" => {
                let alarms: Vec<String> = st.as_ref().map(|s| s.alarms.iter().map(|a| a.to_string()).collect()).unwrap_or_default();
                if alarms.iter().any(|a| a == v) {
                    return Err(format!("alarm {v} is raised"));
                }
                continue;
            }
            _ => return Err(format!("unknown check `{k}`")),
        };
        let want = if matches!(k.as_str(), "vip" | "services" | "replicating" | "needs-resync" | "cloud-ip") {
            if yes(v) {
                "yes".to_string()
            } else {
                "no".to_string()
            }
        } else {
            v.clone()
        };
        let ok = if k == "job" && want == "running" { got.starts_with("running") } else { got == want };
        if !ok {
            return Err(format!("{k} is {got}, expected {v}"));
        }
    }
    Ok(())
}
