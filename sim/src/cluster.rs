//! The fast tier: a pure, single-threaded harness running two core nodes against the modelled
//! world. A virtual clock jumps from event to event; one seeded RNG makes every choice.

use crate::clock::Clock;
use crate::fault::{node_name, Fault, Ix};
use crate::invariants::{Checker, View};
use crate::rng::Rng;
use crate::trace::TraceLine;
use crate::world::{id_of, Finish, World};
use ridondato_core::{Action, Components, Config, Input, Message, Millis, Mode, Node, Op, OpError, OpId, Timing};
use std::collections::BTreeMap;

/// Everything that shapes a run. The seed chooses every latency, loss and (in sweeps) fault.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub mode: Mode,
    pub witnesses: u32,
    pub cloud_auto_failover: bool,
    pub timing: Timing,
    pub components: Components,
    /// The driver's deadline for an adapter operation.
    pub op_deadline: u64,
    pub resync_deadline: u64,
    /// A client write through the front door this often, while the writer is on.
    pub write_every: u64,
    /// The etcd lease arbiter (B11) in the modelled world.
    pub lease: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            mode: Mode::Lan,
            witnesses: 0,
            cloud_auto_failover: false,
            timing: Timing::default(),
            components: Components::ALL,
            op_deadline: 3000,
            resync_deadline: 120_000,
            write_every: 50,
            lease: false,
        }
    }
}

impl SimConfig {
    pub fn node_config(&self, ix: Ix) -> Config {
        let mut c = Config::lan(id_of(ix), id_of(1 - ix));
        c.mode = self.mode;
        c.witnesses = self.witnesses;
        c.cloud_auto_failover = self.cloud_auto_failover;
        c.timing = self.timing;
        c.components = self.components;
        if self.lease {
            use crate::lease_model::{LEASE_OP_MS, LEASE_TTL_MS};
            // The daemon's rule: a refresh older than the TTL less one client timeout and a
            // margin for clock rates no longer counts.
            c.lease = Some(ridondato_core::LeaseTiming { refresh_every: LEASE_TTL_MS / 5, keep_for: LEASE_TTL_MS - LEASE_OP_MS - 200 });
        }
        if self.mode == Mode::Cloud {
            c.components.vip = false;
            c.arp_probe = false;
        }
        c
    }

    /// How long dual holding may last after a blinding fault heals: the peers must hear each
    /// other (a few heartbeats) and the loser release (its first plan step).
    pub fn heal_grace(&self) -> u64 {
        // Or, when heartbeats stay cut, the next conflict probe (plus its 100 ms) finds it.
        (3 * self.timing.heartbeat_interval).max(self.timing.conflict_check_interval + 100) + 500
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Wake {
        ix: Ix,
        inc: u64,
    },
    /// `inc`: the sender's run when it sent the message.
    Deliver {
        to: Ix,
        inc: u64,
        msg: Message,
    },
    OpDone {
        ix: Ix,
        inc: u64,
        id: OpId,
        op: Op,
        deadline: u64,
    },
    OpFail {
        ix: Ix,
        inc: u64,
        id: OpId,
        err: OpError,
    },
    Progress {
        ix: Ix,
        inc: u64,
        job: u64,
        done: u64,
        total: u64,
    },
    Link {
        ix: Ix,
        inc: u64,
        up: bool,
    },
    Fault(Fault),
    Replicate,
    Report,
    Write,
}

const REPLICATE_EVERY: u64 = 20;
const REPORT_EVERY: u64 = 250;
/// How long the VIP adapter takes to see a carrier change: a netlink link notification
/// (measured in the lab, status read through the CLI included: 3-4 ms; the 250-ms poll
/// remains as a fallback).
const LINK_EVENT_DELAY: u64 = 5;
/// systemd `RestartSec=` of the daemon's unit.
pub const RESTART_DELAY: u64 = 1000;

#[derive(Debug)]
pub struct Sim {
    pub cfg: SimConfig,
    pub now: u64,
    pub rng: Rng,
    pub world: World,
    pub nodes: [Option<Node>; 2],
    inc: [u64; 2],
    clocks: [Clock; 2],
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    wake: [Option<u64>; 2],
    ops: BTreeMap<(Ix, u64, OpId), (u64, u64)>,
    held: Vec<(Ix, u64, Message)>,
    pub trace: Vec<TraceLine>,
    /// Also trace world changes (VIP, DB, services) — on for scenarios, off for sweeps.
    pub verbose: bool,
    pub checker: Checker,
    pub replies: Vec<(Ix, Result<String, String>)>,
    next_req: u64,
    pub events: u64,
    /// A paused daemon's inputs, in order, handed over when it resumes.
    paused: [Option<Vec<Input>>; 2],
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let world = World::new(cfg.mode, cfg.witnesses);
        let mut s = Sim {
            rng: Rng::new(cfg.seed),
            checker: Checker::new(cfg.heal_grace()).with_lease(cfg.lease),
            cfg,
            now: 0,
            world,
            nodes: [None, None],
            inc: [0, 0],
            clocks: [Clock::default(); 2],
            queue: BTreeMap::new(),
            seq: 0,
            wake: [None, None],
            ops: BTreeMap::new(),
            held: Vec::new(),
            trace: Vec::new(),
            verbose: true,
            replies: Vec::new(),
            next_req: 1,
            paused: [None, None],
            events: 0,
        };
        s.push(REPLICATE_EVERY, Ev::Replicate);
        s.push(REPORT_EVERY, Ev::Report);
        s
    }

    fn push(&mut self, at: u64, ev: Ev) -> (u64, u64) {
        self.seq += 1;
        let key = (at, self.seq);
        self.queue.insert(key, ev);
        key
    }

    /// Schedules a fault or command at an absolute simulated time.
    pub fn schedule(&mut self, at: u64, f: Fault) {
        self.push(at, Ev::Fault(f));
    }

    fn note(&mut self, who: &'static str, text: String) {
        self.trace.push(TraceLine { t: self.now, who, text });
    }

    /// Runs every event up to and including `until`, then sets the clock there.
    pub fn run_until(&mut self, until: u64) {
        while let Some((&(t, _), _)) = self.queue.first_key_value() {
            if t > until {
                break;
            }
            let Some(((t, _), ev)) = self.queue.pop_first() else { break };
            self.now = t;
            self.world.now = t;
            self.events += 1;
            let before = self.snapshot();
            for ix in self.world.expire_leases() {
                self.note(crate::fault::node_name(ix), "the VIP's lease ran out: the kernel dropped the address".into());
            }
            self.process(ev);
            self.trace_world(before);
            let views = [self.nodes[0].as_ref().map(View::of), self.nodes[1].as_ref().map(View::of)];
            self.checker.check(self.now, &self.world, &views);
        }
        self.now = self.now.max(until);
    }

    fn process(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { ix, inc } => {
                if inc == self.inc[ix] && self.wake[ix] == Some(self.now) {
                    self.wake[ix] = None;
                    self.feed(ix, Input::Tick);
                }
            }
            Ev::Deliver { to, inc, msg } => {
                // The transport's sessions (auth_codec): nothing of a sender's earlier run is
                // accepted once it restarted.
                if inc == self.inc[1 - to] && self.world.hb_path(1 - to, to) {
                    self.feed(to, Input::Peer(msg));
                }
            }
            Ev::OpDone { ix, inc, id, op, deadline } => {
                if inc != self.inc[ix] {
                    return;
                }
                match self.world.finish_op(ix, &op) {
                    Finish::Done(result) => {
                        self.ops.remove(&(ix, inc, id));
                        self.feed(ix, Input::Done { id, result });
                    }
                    Finish::Again(ms) if self.now + ms < deadline => {
                        let key = self.push(self.now + ms, Ev::OpDone { ix, inc, id, op, deadline });
                        self.ops.insert((ix, inc, id), key);
                    }
                    Finish::Again(_) => {
                        self.ops.remove(&(ix, inc, id));
                        self.feed(ix, Input::Done { id, result: Err(OpError::TimedOut) });
                    }
                }
            }
            Ev::OpFail { ix, inc, id, err } => {
                if inc == self.inc[ix] {
                    self.ops.remove(&(ix, inc, id));
                    self.feed(ix, Input::Done { id, result: Err(err) });
                }
            }
            Ev::Progress { ix, inc, job, done, total } => {
                if inc == self.inc[ix] {
                    self.feed(ix, Input::JobProgress { job, progress: ridondato_core::Progress::of(done, total) });
                }
            }
            Ev::Link { ix, inc, up } => {
                if inc == self.inc[ix] {
                    self.feed(ix, Input::LinkObserved { up });
                }
            }
            Ev::Fault(f) => self.apply_fault(f),
            Ev::Replicate => {
                for (ix, count) in self.world.replicate() {
                    self.feed(ix, Input::DbErrant { count, gtids: format!("{count} modelled") });
                }
                self.world.mongo_replicate();
                self.push(self.now + REPLICATE_EVERY, Ev::Replicate);
            }
            Ev::Report => {
                for ix in 0..2 {
                    // The driver's report also says whether the VIP is configured here (it
                    // notices a lease that ran out, or an address removed by hand).
                    if self.cfg.components.vip && self.world.hosts[ix].powered {
                        let held = self.world.hosts[ix].vip;
                        self.feed(ix, Input::VipObserved { held });
                    }
                    if self.cfg.components.db && self.world.hosts[ix].powered {
                        let input = match self.world.db_facts(ix) {
                            Ok(facts) => Input::DbReport(facts),
                            Err(error) => Input::DbUnreachable { error },
                        };
                        self.feed(ix, input);
                    }
                    if self.cfg.components.mongo && self.world.hosts[ix].powered {
                        let r = self.world.mongo_report(ix);
                        self.feed(ix, Input::MongoReport(r));
                    }
                }
                self.push(self.now + REPORT_EVERY, Ev::Report);
            }
            Ev::Write => {
                if self.world.writer {
                    self.world.client_write();
                    self.world.mongo_write();
                    self.push(self.now + self.cfg.write_every, Ev::Write);
                }
            }
        }
    }

    fn apply_fault(&mut self, f: Fault) {
        self.note("--", f.to_string());
        let writer_was = self.world.writer;
        self.world.apply_fault(&f);
        match &f {
            Fault::Start(ix) => self.start(*ix),
            Fault::Pause(ix) if self.nodes[*ix].is_some() && self.paused[*ix].is_none() => {
                self.paused[*ix] = Some(Vec::new());
                self.world.pause(*ix, true);
            }
            Fault::Resume(ix) => {
                if let Some(queued) = self.paused[*ix].take() {
                    self.world.pause(*ix, false);
                    for input in queued {
                        self.feed(*ix, input);
                    }
                    self.feed(*ix, Input::Tick);
                }
            }
            Fault::Crash(ix) => {
                self.kill(*ix);
                // systemd's Restart=always brings the daemon back.
                self.push(self.now + RESTART_DELAY, Ev::Fault(Fault::Start(*ix)));
            }
            Fault::PowerOff(ix) => {
                self.kill(*ix);
                self.world.power_off(*ix);
            }
            Fault::PowerOn(ix) if !self.world.hosts[*ix].powered => {
                self.world.power_on(*ix);
                self.start(*ix);
            }
            Fault::Release | Fault::Heal => self.release_held(),
            Fault::LinkDown(ix) | Fault::LinkUp(ix) => {
                // The VIP adapter watches the carrier through netlink: a few ms later.
                let up = self.world.hosts[*ix].link;
                let inc = self.inc[*ix];
                self.push(self.now + LINK_EVENT_DELAY, Ev::Link { ix: *ix, inc, up });
            }
            Fault::Drift(ix, ppm) => self.clocks[*ix].set_ppm(self.now, *ppm),
            Fault::Cmd(ix, cmd) => {
                let req = self.next_req;
                self.next_req += 1;
                if self.nodes[*ix].is_none() {
                    self.note(node_name(*ix), "command refused: daemon not running".into());
                } else {
                    self.feed(*ix, Input::Command { req, cmd: cmd.clone() });
                }
            }
            Fault::Writer(true) if !writer_was => {
                self.push(self.now + self.cfg.write_every, Ev::Write);
            }
            _ => {}
        }
        self.checker.after_fault(self.now, &self.world, &f);
    }

    fn release_held(&mut self) {
        for (to, inc, msg) in std::mem::take(&mut self.held) {
            let at = self.now + self.rng.range(0, 2);
            self.push(at, Ev::Deliver { to, inc, msg });
        }
    }

    fn start(&mut self, ix: Ix) {
        if self.nodes[ix].is_some() || !self.world.hosts[ix].powered {
            return;
        }
        self.inc[ix] += 1;
        self.world.hosts[ix].daemon = true;
        self.nodes[ix] = Some(Node::new(self.cfg.node_config(ix)));
        let persisted = self.world.hosts[ix].store.clone();
        let fresh = persisted.is_none();
        let run = self.inc[ix];
        self.feed(ix, Input::Start { persisted, run });
        if !self.world.hosts[ix].link {
            self.feed(ix, Input::LinkObserved { up: false });
        }
        if let Some(n) = self.nodes[ix].as_ref() {
            self.checker.on_start(ix, n.epoch(), fresh);
        }
    }

    fn kill(&mut self, ix: Ix) {
        self.paused[ix] = None;
        self.nodes[ix] = None;
        self.inc[ix] += 1;
        self.wake[ix] = None;
        self.world.crash(ix);
    }

    /// Hands one input to a node and carries out what it returns.
    pub fn feed(&mut self, ix: Ix, input: Input) {
        if let Some(q) = self.paused[ix].as_mut() {
            q.push(input);
            return;
        }
        let local = self.clocks[ix].local(self.now);
        let Some(node) = self.nodes[ix].as_mut() else { return };
        let out = node.handle(Millis(local), input);
        for a in out.actions {
            if self.nodes[ix].is_none() {
                break; // it exited: nothing after `Exit` is carried out
            }
            self.act(ix, a);
        }
        if self.nodes[ix].is_none() {
            return; // it exited
        }
        if let Some(w) = out.next_wakeup {
            let g = self.clocks[ix].global(w.0).max(self.now + 1);
            if self.wake[ix].is_none_or(|cur| g < cur || cur <= self.now) {
                self.wake[ix] = Some(g);
                let inc = self.inc[ix];
                self.push(g, Ev::Wake { ix, inc });
            }
        }
    }

    fn act(&mut self, ix: Ix, a: Action) {
        let inc = self.inc[ix];
        match a {
            Action::Send(msg) => {
                let to = 1 - ix;
                if !self.world.hb_path(ix, to) {
                    return;
                }
                if self.world.net.hold {
                    self.held.push((to, inc, msg));
                    return;
                }
                if self.world.net.loss_pct > 0 && self.rng.chance(self.world.net.loss_pct) {
                    return;
                }
                let at = self.now + self.rng.range(0, 2) + self.world.net.latency_ms;
                self.push(at, Ev::Deliver { to, inc, msg });
            }
            Action::Run { id, op } => {
                // Copies take long; restarting replication is as quick as any other operation.
                let long = matches!(op, Op::Resync { phase, .. } if phase != ridondato_core::ResyncPhase::DbReplicate);
                let deadline = if long { self.cfg.resync_deadline } else { self.cfg.op_deadline };
                let latency = self.world.op_latency(ix, &op, &mut self.rng);
                if let (true, Some(l)) = (ridondato_core::is_arp_probe(&op), latency) {
                    self.world.begin_probe(ix, l);
                }
                match latency {
                    Some(l) if l <= deadline => {
                        if let Op::Resync { job, phase } = &op {
                            let total = self.world.progress_total(ix, *phase);
                            for q in 1..=4u64 {
                                let at = self.now + l * q / 5;
                                self.push(at, Ev::Progress { ix, inc, job: *job, done: total * q / 5, total });
                            }
                        }
                        let key = self.push(self.now + l, Ev::OpDone { ix, inc, id, op, deadline: self.now + deadline });
                        self.ops.insert((ix, inc, id), key);
                    }
                    _ => {
                        let key = self.push(self.now + deadline, Ev::OpFail { ix, inc, id, err: OpError::TimedOut });
                        self.ops.insert((ix, inc, id), key);
                    }
                }
            }
            Action::Cancel { id } => {
                if let Some(key) = self.ops.remove(&(ix, inc, id)) {
                    self.queue.remove(&key);
                    self.push(self.now, Ev::OpFail { ix, inc, id, err: OpError::Cancelled });
                }
            }
            Action::Event(e) => self.note(node_name(ix), e.to_string()),
            Action::Reply { result, .. } => {
                let text = match &result {
                    Ok(m) => format!("reply: {m}"),
                    Err(m) => format!("reply: error: {m}"),
                };
                self.note(node_name(ix), text);
                self.replies.push((ix, result));
            }
            Action::Exit => {
                self.note(node_name(ix), "daemon exits".into());
                self.kill(ix);
            }
        }
    }

    fn snapshot(&self) -> [(bool, bool, bool, Option<Ix>); 2] {
        let s = |i: usize| {
            let h = &self.world.hosts[i];
            (h.vip, h.db.writable, h.services, h.db.source)
        };
        [s(0), s(1)]
    }

    fn trace_world(&mut self, before: [(bool, bool, bool, Option<Ix>); 2]) {
        if !self.verbose {
            return;
        }
        let after = self.snapshot();
        for ix in 0..2 {
            let (b, a) = (before[ix], after[ix]);
            let who = node_name(ix);
            if b.0 != a.0 {
                self.note(who, if a.0 { "vip up".into() } else { "vip down".into() });
            }
            if b.1 != a.1 {
                let pos = self.world.hosts[ix].db.position().0;
                self.note(who, if a.1 { format!("db read-write at {pos}") } else { format!("db read-only at {pos}") });
            }
            if b.2 != a.2 {
                self.note(who, if a.2 { "services started".into() } else { "services stopped".into() });
            }
            if b.3 != a.3 {
                let text = match a.3 {
                    Some(s) => format!("db replicates from {}", node_name(s)),
                    None => "db replication stopped".into(),
                };
                self.note(who, text);
            }
        }
    }

    /// All violations found so far (checker and world).
    pub fn violations(&self) -> Vec<String> {
        let mut v = self.checker.violations.clone();
        v.extend(self.world.violations.iter().cloned());
        v
    }
}
