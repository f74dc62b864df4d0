//! `ridondato replay JOURNAL...` (B9): runs a core again from a node's input journal, checks that
//! it answers every input with the very actions it answered on the node, and prints the run's
//! timeline in the scenario format. `--to-scenario FILE` writes a scenario that plays the
//! incident again in the simulator, reconstructed from what this node saw (its peer's silences
//! and restarts, its own link, database and MongoDB, the operators' commands). `--ops` adds
//! every operation with its duration and every message heard, to the millisecond.

use crate::client::Failure;
use ridondato_adapters::journal::{self, Record, Segment};
use ridondato_core::{Action, Input, Message, Mode, Node};
use ridondato_sim::fault::Fault;
use ridondato_sim::trace::{render, TraceLine};
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub fn run(paths: &[PathBuf], to_scenario: Option<&Path>, ops: bool) -> Result<(), Failure> {
    let runs = journal::runs(paths).map_err(Failure::Refused)?;
    if runs.is_empty() {
        return Err(Failure::Usage("no journal segments (*.rdj) there".into()));
    }
    let mut problems = Vec::new();
    let mut last_replayed = None;
    for segs in &runs {
        let h = &segs[0].header;
        for s in segs {
            if let Some((n, why)) = &s.torn {
                println!("{}: a torn tail of {n} bytes skipped ({why})", s.path.display());
            }
        }
        match replay(segs, ops) {
            Ok((inputs, timeline)) => {
                println!(
                    "run {:016x} of node {} (segments {}): {inputs} inputs, every answer identical to the journaled one",
                    h.run,
                    h.config.node,
                    segs.len()
                );
                print!("{}", render(&timeline));
                last_replayed = Some(segs);
            }
            Err(e) => {
                println!("run {:016x} of node {}: {e}", h.run, h.config.node);
                problems.push(e);
            }
        }
    }
    if let (Some(out), Some(segs)) = (to_scenario, last_replayed) {
        let text = scenario(segs);
        std::fs::write(out, text).map_err(|e| Failure::Refused(format!("{}: {e}", out.display())))?;
        println!("scenario written to {} (run it: ridondato sim {})", out.display(), out.display());
    }
    match problems.len() {
        0 => Ok(()),
        n => Err(Failure::Refused(format!("{n} run(s) not replayed identically"))),
    }
}

fn who(node: u8) -> &'static str {
    match node {
        1 => "a",
        2 => "b",
        _ => "n?",
    }
}

fn records(segs: &[Segment]) -> impl Iterator<Item = &Record> {
    segs.iter().flat_map(|s| s.records.iter())
}

/// Feeds every record to a fresh core; the first answer that differs ends it. With `ops`, the
/// timeline also shows each operation's start and end and each message heard.
fn replay(segs: &[Segment], ops: bool) -> Result<(usize, Vec<TraceLine>), String> {
    let h = &segs[0].header;
    if h.segment != 0 {
        return Err(format!("begins at segment {}: the run's start was rotated away (raise node.journal_max_mb), nothing to replay from", h.segment));
    }
    if let Some(w) = segs.windows(2).find(|w| w[1].header.segment != w[0].header.segment + 1) {
        return Err(format!("segment {} is missing", w[0].header.segment + 1));
    }
    let me = who(h.config.node.0);
    let mut node = Node::new(h.config.clone());
    let mut timeline = Vec::new();
    let mut running = std::collections::HashMap::new();
    let mut n = 0;
    for r in records(segs) {
        n += 1;
        match &r.input {
            Input::Start { .. } => timeline.push(TraceLine { t: r.now.0, who: "--", text: Fault::Start(ix(me)).to_string() }),
            Input::Command { cmd, .. } => timeline.push(TraceLine { t: r.now.0, who: "--", text: Fault::Cmd(ix(me), cmd.clone()).to_string() }),
            Input::Done { id, result } if ops => {
                if let Some((name, since)) = running.remove(id) {
                    let how = result.as_ref().map_or_else(|e| format!("failed: {e}"), |d| format!("{d:?}"));
                    timeline.push(TraceLine { t: r.now.0, who: me, text: format!("op {name} done after {} ms: {how}", r.now.0 - since) });
                }
            }
            Input::Peer(m) if ops => timeline.push(TraceLine { t: r.now.0, who: me, text: format!("heard {}", heard(m)) }),
            _ => {}
        }
        let out = node.handle(r.now, r.input.clone());
        if journal::digest(&out.actions) != r.digest {
            return Err(format!("input {n} at {} ms ({:?}): the core answers differently from the journal: {:?}", r.now.0, r.input, out.actions));
        }
        for a in out.actions {
            let text = match a {
                Action::Run { id, op } if ops => {
                    running.insert(id, (op.name(), r.now.0));
                    format!("op {} started", op.name())
                }
                Action::Event(e) => e.to_string(),
                Action::Reply { result: Ok(m), .. } => format!("reply: {m}"),
                Action::Reply { result: Err(m), .. } => format!("reply: error: {m}"),
                Action::Exit => "daemon exits".into(),
                _ => continue,
            };
            timeline.push(TraceLine { t: r.now.0, who: me, text });
        }
    }
    Ok((n, timeline))
}

fn heard(m: &Message) -> String {
    match m {
        Message::Heartbeat(h) => format!("heartbeat from {} ({:?}, epoch {})", h.from, h.role, h.epoch),
        other => format!("{other:?}").split([' ', '{', '(']).next().unwrap_or("a message").to_string(),
    }
}

fn ix(who: &str) -> usize {
    usize::from(who == "b")
}

/// The incident as a scenario: this node's start, commands, link, database and MongoDB as it
/// saw them, and its peer's comings and goings as heard (a silence ended by a new run of the
/// peer is a power loss; one ended by the same run is a network cut).
fn scenario(segs: &[Segment]) -> String {
    let h = &segs[0].header;
    let c = &h.config;
    let (me, peer) = (ix(who(c.node.0)), ix(who(c.peer.0)));
    let t = c.timing;
    let mut s = String::new();
    let _ = writeln!(s, "# Reconstructed by `ridondato replay --to-scenario` from node {}'s journal (run {:016x}).", c.node, h.run);
    let _ = writeln!(s, "# Only what that node saw: its peer's silences, its own link, database and MongoDB, commands.");
    let _ = writeln!(s, "seed 1");
    let mode = if c.mode == Mode::Cloud { "cloud" } else { "lan" };
    let _ = writeln!(
        s,
        "set mode={mode} witnesses={} heartbeat={}ms failover={}ms isolation={}ms discovery={}ms handover_timeout={}ms mongo={}",
        c.witnesses,
        t.heartbeat_interval,
        t.failover_timeout,
        t.isolation_timeout,
        t.discovery_window,
        t.handover_timeout,
        if c.components.mongo { "on" } else { "off" }
    );
    let mut ops: Vec<(u64, Fault)> = Vec::new();
    let (mut heard, mut peer_run, mut last_hb) = (false, None, 0u64);
    let (mut db_down, mut mongo_down, mut link_up, mut peer_was_master) = (false, false, None, false);
    let mut end = 0;
    for r in records(segs) {
        let now = r.now.0;
        end = now;
        match &r.input {
            Input::Start { .. } => ops.push((now, Fault::Start(me))),
            Input::Command { cmd, .. } => ops.push((now, Fault::Cmd(me, cmd.clone()))),
            // Reported every interval: only the changes are events.
            Input::LinkObserved { up } if link_up != Some(*up) => {
                ops.extend(link_up.map(|_| (now, if *up { Fault::LinkUp(me) } else { Fault::LinkDown(me) })));
                link_up = Some(*up);
            }
            Input::DbUnreachable { .. } if !db_down => {
                db_down = true;
                ops.push((now, Fault::DbDown(me)));
            }
            Input::DbReport(_) if db_down => {
                db_down = false;
                ops.push((now, Fault::DbUp(me)));
            }
            Input::MongoReport(m) if m.error.is_some() != mongo_down => {
                mongo_down = m.error.is_some();
                ops.push((now, if mongo_down { Fault::MongoDown(me) } else { Fault::MongoUp(me) }));
            }
            Input::Peer(Message::Heartbeat(hb)) => {
                let silent = heard && now.saturating_sub(last_hb) > t.failover_timeout;
                if !heard {
                    // Heard first: started then, or long before if it was Master already (then it
                    // starts first in the scenario, and everything this node saw comes after its
                    // discovery window).
                    peer_was_master = hb.role == ridondato_core::Role::Master;
                    ops.push((if peer_was_master { 0 } else { now.saturating_sub(t.heartbeat_interval) }, Fault::Start(peer)));
                } else if silent && peer_run != Some(hb.run) {
                    ops.push((last_hb + 1, Fault::PowerOff(peer)));
                    ops.push((now.saturating_sub(t.heartbeat_interval), Fault::PowerOn(peer)));
                } else if silent {
                    ops.push((last_hb + 1, Fault::Cut));
                    ops.push((now.saturating_sub(1), Fault::Heal));
                }
                heard = true;
                peer_run = Some(hb.run);
                last_hb = now;
            }
            _ => {}
        }
    }
    if heard && end.saturating_sub(last_hb) > t.failover_timeout {
        // Silent at the end: gone, as far as this node knows.
        ops.push((last_hb + 1, Fault::PowerOff(peer)));
    }
    let shift = if peer_was_master { t.discovery_window + 1000 } else { 0 };
    for (at, f) in ops.iter_mut() {
        if *f != Fault::Start(peer) || !peer_was_master {
            *at += shift;
        }
    }
    let end = end + shift;
    ops.sort_by_key(|(t, _)| *t);
    if c.components.db {
        let first = ops.first().map_or(0, |(t, _)| *t);
        let _ = writeln!(s, "at {}ms writer on", first + 1);
    }
    for (t, f) in ops {
        let _ = writeln!(s, "at {t}ms {f}");
    }
    let _ = writeln!(s, "run {}ms", end + 2000);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_adapters::journal::{Header, JournalWriter};
    use ridondato_core::{Config, Millis, NodeId};

    /// A journal of a lone node's first 3 s, written as the driver writes it.
    fn journal(tag: &str) -> (PathBuf, Vec<Segment>) {
        let d = std::env::temp_dir().join(format!("ridondato-replay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut cfg = Config::lan(NodeId(1), NodeId(2));
        cfg.components = ridondato_core::Components { vip: true, db: false, mongo: false, fs: false, services: false };
        let mut w = JournalWriter::open(&d, 1 << 20, 9, 1_700_000_000, cfg.clone()).expect("open");
        let mut node = Node::new(cfg);
        let mut pending = Vec::new();
        for i in 0..30u64 {
            let input = if i == 0 {
                Input::Start { persisted: None, run: 9 }
            } else if let Some((id, op)) = pending.pop() {
                // The ARP probe finds the VIP free; every other operation succeeds.
                let done = match op {
                    ridondato_core::Op::MayTake { .. } => ridondato_core::Done::Verdict(ridondato_core::Verdict::Arp { answered: false }),
                    _ => ridondato_core::Done::Ok,
                };
                Input::Done { id, result: Ok(done) }
            } else {
                Input::Tick
            };
            let now = Millis(i * 100);
            let out = node.handle(now, input.clone());
            w.record(now, &input, &out.actions);
            pending.extend(out.actions.iter().filter_map(|a| if let Action::Run { id, op } = a { Some((*id, op.clone())) } else { None }));
        }
        let runs = journal::runs(std::slice::from_ref(&d)).expect("read");
        (d, runs.into_iter().next().expect("a run"))
    }

    #[test]
    fn a_journal_replays_identically_and_a_changed_answer_is_caught() {
        let (d, mut segs) = journal("ok");
        let (n, timeline) = replay(&segs, false).expect("identical");
        assert_eq!(n, 30);
        assert!(render(&timeline).contains("a   role booting -> master"), "{}", render(&timeline));
        // With the operations: each start, and each end with its duration and result.
        let (_, detailed) = replay(&segs, true).expect("identical");
        let text = render(&detailed);
        assert!(text.contains("a   op arp-probe started") && text.contains("a   op arp-probe done after 100 ms: Verdict(Arp { answered: false })"), "{text}");
        assert!(!render(&timeline).contains("op arp-probe"), "only when asked");
        // One journaled answer that the core does not give: named with its input.
        segs[0].records[12].digest ^= 1;
        let e = replay(&segs, false).expect_err("differs");
        assert!(e.starts_with("input 13 at 1200 ms") && e.contains("answers differently"), "{e}");
        segs[0].header = Header { segment: 3, ..segs[0].header.clone() };
        assert!(replay(&segs, false).expect_err("no start").contains("rotated away"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_scenario_starts_this_node_and_plays_in_the_simulator() {
        let (d, segs) = journal("scn");
        let text = scenario(&segs);
        assert!(text.contains("at 0ms start a") && text.contains("run 4900ms"), "{text}");
        let sc = ridondato_sim::Scenario::parse("replayed.scn", &text).expect("parses");
        let out = sc.run();
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert!(out.timeline.contains("a   role booting -> master"), "{}", out.timeline);
        let _ = std::fs::remove_dir_all(&d);
    }
}
