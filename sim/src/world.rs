//! The modelled outside world of a simulated pair: a LAN that knows who answers ARP for the VIP,
//! a replicated database, file sync, a cloud IP association, services and the state stores.
//!
//! It lives outside the nodes (and outside turmoil's host closures), so a crashed or rebooted
//! node finds its disk, and its host's addresses, as a real machine would.

use crate::fault::{node_name, Ix};
use crate::rng::Rng;
use ridondato_core::{ArbiterKind, Done, Mode, NodeId, Op, OpError, PersistedState, Position, ResyncPhase, Verdict};
use std::collections::BTreeMap;

/// How an adapter misbehaves (injected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterFault {
    Slow(u64),
    Fail,
    Hang,
}

#[derive(Clone, Debug, Default)]
pub struct DbModel {
    /// Transaction ids in commit order; the position is the length.
    pub log: Vec<u64>,
    pub writable: bool,
    pub source: Option<Ix>,
    /// Errant transactions found when replication last compared histories.
    pub errant: u64,
    /// The database server is down (killed, crashed): reports and operations fail.
    pub down: bool,
    /// Replication configured but stopped (STOP SLAVE by hand, a restarted server).
    pub stopped: bool,
}

impl DbModel {
    pub fn position(&self) -> Position {
        Position(self.log.len() as u64)
    }
}

#[derive(Clone, Debug)]
pub struct Host {
    pub powered: bool,
    pub link: bool,
    pub daemon: bool,
    pub vip: bool,
    pub services: bool,
    pub fs_push: Option<Ix>,
    pub mongo: crate::mongo_model::MongoModel,
    pub db: DbModel,
    /// The node's state store: survives crashes and power loss.
    pub store: Option<PersistedState>,
    pub faults: BTreeMap<String, AdapterFault>,
    pub garps: u64,
    /// The last ARP probe this host sent for the VIP: [start, end] in simulated ms. Two probes
    /// that overlap see each other (RFC 5227 §2.1.1: a probe from another host for the same
    /// address is a conflict), so simultaneous takeovers both back off.
    pub probing: Option<(u64, u64)>,
    /// When the kernel drops this host's VIP by itself: set when the daemon that renewed its
    /// lease dies, cleared when a live daemon adds or drops it (it renews while it runs).
    pub vip_expires: Option<u64>,
    /// The daemon is stopped (SIGSTOP): alive but deciding nothing until resumed.
    pub paused: bool,
}

/// The kernel-enforced lease of the shared IPs (the daemon's default `timing.vip_lease_ms`),
/// plus the kernel's expiry check, which runs on whole seconds (measured: up to ~1 s late).
pub const VIP_LEASE_MS: u64 = 2000;
pub const VIP_EXPIRY_LATE_MS: u64 = 1000;

impl Host {
    fn new() -> Host {
        Host {
            powered: true,
            link: true,
            daemon: false,
            vip: false,
            services: false,
            fs_push: None,
            mongo: crate::mongo_model::MongoModel::default(),
            db: DbModel::default(),
            store: None,
            faults: BTreeMap::new(),
            garps: 0,
            probing: None,
            vip_expires: None,
            paused: false,
        }
    }
}

/// Node-to-node network faults (heartbeat path) and LAN splits.
#[derive(Clone, Debug, Default)]
pub struct Net {
    pub cut: bool,
    pub oneway: Option<(Ix, Ix)>,
    /// LAN split; the witness is on the side of this node (None: unreachable to both).
    pub split: Option<Option<Ix>>,
    pub hold: bool,
    pub loss_pct: u32,
    pub latency_ms: u64,
}

/// The result of an operation once its latency has passed.
#[derive(Debug)]
pub enum Finish {
    Done(Result<Done, OpError>),
    /// Not yet (the DB still applies what it received): ask again after this many ms.
    Again(u64),
}

#[derive(Clone, Debug)]
pub struct World {
    /// How many times each host's daemon started (its run identifier, tier 2).
    pub runs: [u64; 2],
    pub mode: Mode,
    pub witnesses: u32,
    pub hosts: [Host; 2],
    pub net: Net,
    pub writer: bool,
    next_txn: u64,
    /// Writes the client saw committed, in order, with the host that committed them.
    pub acked: Vec<(u64, Ix)>,
    /// For each of `acked`: committed under semi-sync (the replica had it before the ack).
    pub acked_semi: Vec<bool>,
    /// MongoDB writes the client saw acknowledged.
    pub mongo_acked: Vec<crate::mongo_model::MongoAck>,
    pub(crate) next_mongo: u64,
    /// Where in `acked` each host's current stretch as the writable one began.
    writable_from: [usize; 2],
    /// Each host's last finished stretch as the writable one (`acked` indices), closed by a fence.
    last_stretch: [(usize, usize); 2],
    pub eip: Option<Ix>,
    /// Broken safety properties found while applying effects (I3, I4).
    pub violations: Vec<String>,
    /// Simulated time, kept up to date by the harness (probe overlap needs it).
    pub now: u64,
    /// The etcd lease arbiter, when the schedule configures one.
    pub lease: crate::lease_model::LeaseModel,
}

pub fn ix_of(id: NodeId) -> Ix {
    usize::from(id.0).saturating_sub(1).min(1)
}

pub fn id_of(ix: Ix) -> NodeId {
    NodeId(ix as u8 + 1)
}

fn other(ix: Ix) -> Ix {
    1 - ix
}

impl World {
    pub fn new(mode: Mode, witnesses: u32) -> World {
        World {
            runs: [0, 0],
            mode,
            witnesses,
            hosts: [Host::new(), Host::new()],
            net: Net::default(),
            writer: false,
            next_txn: 1,
            mongo_acked: Vec::new(),
            next_mongo: 1,
            lease: crate::lease_model::LeaseModel::default(),
            acked: Vec::new(),
            acked_semi: Vec::new(),
            writable_from: [0, 0],
            last_stretch: [(0, 0); 2],
            eip: None,
            violations: Vec::new(),
            now: 0,
        }
    }

    /// Records an ARP probe starting now and lasting `latency` ms.
    pub fn begin_probe(&mut self, ix: Ix, latency: u64) {
        self.hosts[ix].probing = Some((self.now, self.now + latency));
    }

    fn up(&self, ix: Ix) -> bool {
        self.hosts[ix].powered && self.hosts[ix].link
    }

    /// Both hosts on the same working LAN segment (ARP and replication cross).
    pub fn same_domain(&self) -> bool {
        self.up(0) && self.up(1) && self.net.split.is_none()
    }

    /// Can a heartbeat from `from` reach `to` (before loss)?
    pub fn hb_path(&self, from: Ix, to: Ix) -> bool {
        self.same_domain() && !self.net.cut && self.net.oneway != Some((from, to))
    }

    /// Does this host answer ARP for the VIP on the LAN?
    pub fn answers_arp(&self, ix: Ix) -> bool {
        self.up(ix) && self.hosts[ix].vip
    }

    /// Is this host the one clients reach (VIP on the LAN, or the cloud association)?
    pub fn front_door(&self, ix: Ix) -> bool {
        match self.mode {
            Mode::Lan => self.answers_arp(ix),
            Mode::Cloud => self.hosts[ix].powered && self.eip == Some(ix),
        }
    }

    pub fn witness_reachable(&self, ix: Ix) -> bool {
        self.up(ix) && self.net.split.is_none_or(|w| w == Some(ix))
    }

    /// Latency of an operation, or `None` if it hangs.
    pub fn op_latency(&self, ix: Ix, op: &Op, rng: &mut Rng) -> Option<u64> {
        let base = match op {
            Op::Persist(_) => rng.range(1, 5),
            Op::RaiseVip | Op::DropVip | Op::Garp => rng.range(1, 3),
            Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. } | Op::MayKeep { arbiter: ArbiterKind::ArpProbe, .. } => rng.range(60, 100),
            Op::MayTake { arbiter: ArbiterKind::Witnesses, .. } | Op::MayKeep { arbiter: ArbiterKind::Witnesses, .. } => {
                if self.witness_reachable(ix) {
                    rng.range(2, 20)
                } else {
                    200 // the check's own timeout
                }
            }
            Op::PromoteDb { .. } | Op::FenceDb | Op::CatchUpDb { .. } => rng.range(5, 30),
            Op::ReplicateDb { .. } => rng.range(5, 15),
            Op::PromoteMongo | Op::DemoteMongo => rng.range(10, 40),
            Op::FsPushStart { .. } | Op::FsPushStop => rng.range(1, 10),
            Op::MoveCloudIp { .. } => rng.range(300, 1500),
            // A take asks who holds the IP, and the peer's instance only when it is not ours.
            Op::MayKeep { arbiter: ArbiterKind::CloudApi, .. } => rng.range(50, 300),
            Op::MayTake { arbiter: ArbiterKind::CloudApi, .. } if self.eip == Some(ix) => rng.range(50, 300),
            Op::MayTake { arbiter: ArbiterKind::CloudApi, .. } => rng.range(50, 300) + rng.range(50, 300),
            Op::StartServices | Op::StopServices => rng.range(50, 200),
            Op::MayTake { arbiter: ArbiterKind::EtcdLease, .. } | Op::MayKeep { arbiter: ArbiterKind::EtcdLease, .. } | Op::Release { .. } => {
                if self.lease_reachable(ix) {
                    rng.range(2, 15)
                } else {
                    crate::lease_model::LEASE_OP_MS
                }
            }
            Op::Resync { phase, .. } => match phase {
                ResyncPhase::DbCopy => 1500 + 2 * self.hosts[other(ix)].db.log.len() as u64,
                ResyncPhase::DbReplicate => rng.range(10, 30),
                ResyncPhase::MongoCopy => 800,
                ResyncPhase::FsCopy => 1200,
            },
        };
        let f = self.hosts[ix].faults.get(op.name()).or_else(|| self.hosts[ix].faults.get("*"));
        match f {
            Some(AdapterFault::Hang) => None,
            Some(AdapterFault::Slow(k)) => Some(base.saturating_mul(*k)),
            _ => Some(base),
        }
    }

    /// Progress total a resync phase reports (bytes in the model).
    pub fn progress_total(&self, ix: Ix, phase: ResyncPhase) -> u64 {
        match phase {
            ResyncPhase::DbCopy => 4096 * (1 + self.hosts[other(ix)].db.log.len() as u64),
            ResyncPhase::FsCopy => 20 * 1024 * 1024,
            _ => 100,
        }
    }

    /// Applies the effect of `op` on host `ix` at its completion and returns its result.
    /// `started` is when it was asked for (bounded waits count from there).
    pub fn finish_op(&mut self, ix: Ix, op: &Op) -> Finish {
        if !self.hosts[ix].powered {
            return Finish::Done(Err(OpError::Failed("host is down".into())));
        }
        if let Some(AdapterFault::Fail) = self.hosts[ix].faults.get(op.name()).or_else(|| self.hosts[ix].faults.get("*")) {
            return Finish::Done(Err(OpError::Failed("injected failure".into())));
        }
        let peer = other(ix);
        let db_op = matches!(op, Op::CatchUpDb { .. } | Op::PromoteDb { .. } | Op::FenceDb | Op::ReplicateDb { .. });
        if db_op && self.hosts[ix].db.down {
            return Finish::Done(Err(OpError::Failed("modelled: the database server is down".into())));
        }
        let done = match op {
            Op::Persist(s) => {
                let before = self.hosts[ix].store.as_ref().map_or(0, |p| p.epoch);
                if s.epoch < before {
                    self.violations.push(format!("I3: {} persisted epoch {} below {}", node_name(ix), s.epoch, before));
                }
                self.hosts[ix].store = Some(s.clone());
                Done::Ok
            }
            Op::RaiseVip => {
                self.hosts[ix].vip = true;
                self.hosts[ix].vip_expires = None;
                Done::Ok
            }
            Op::DropVip => {
                self.hosts[ix].vip = false;
                self.hosts[ix].vip_expires = None;
                Done::Ok
            }
            Op::Garp => {
                self.hosts[ix].garps += 1;
                Done::Ok
            }
            Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. } | Op::MayKeep { arbiter: ArbiterKind::ArpProbe, .. } => {
                if !self.up(ix) {
                    // No carrier: the probe cannot be sent, and silence would prove nothing.
                    return Finish::Done(Err(OpError::Failed("the interface is down".into())));
                }
                let mine = self.hosts[ix].probing.unwrap_or((self.now, self.now));
                // A host that holds the address defends it: another's probe is no conflict to it.
                let overlap = !self.hosts[ix].vip && self.hosts[peer].probing.is_some_and(|(s, e)| s <= mine.1 && mine.0 <= e);
                let answered = (self.answers_arp(peer) || overlap) && self.same_domain();
                Done::Verdict(Verdict::Arp { answered })
            }
            Op::MayTake { arbiter: ArbiterKind::Witnesses, .. } | Op::MayKeep { arbiter: ArbiterKind::Witnesses, .. } => {
                Done::Verdict(Verdict::Witnesses { reachable: if self.witness_reachable(ix) { self.witnesses } else { 0 } })
            }
            Op::CatchUpDb { position } => {
                if self.hosts[ix].db.position() < *position {
                    return Finish::Again(20);
                }
                Done::Ok
            }
            Op::PromoteDb { wait_for } => {
                if let Some(w) = wait_for {
                    if self.hosts[ix].db.position() < *w {
                        return Finish::Again(20);
                    }
                }
                // Before opening writes, the adapter asks the peer's database over the LAN: while
                // it answers and is writable (an old Master slow to fence itself), wait. It never
                // fences the peer itself: it cannot know whose claim is the newer one.
                if self.same_domain() && self.hosts[peer].powered && !self.hosts[peer].db.down && self.hosts[peer].db.writable {
                    return Finish::Again(20);
                }
                if !self.hosts[ix].db.writable {
                    self.writable_from[ix] = self.acked.len();
                }
                self.hosts[ix].db.writable = true;
                self.hosts[ix].db.source = None;
                // I8: a write acknowledged under semi-sync is on the replica: no promotion, planned
                // or not, may lose it (what async replication may lose is reported instead).
                let have: std::collections::HashSet<u64> = self.hosts[ix].db.log.iter().copied().collect();
                let lost = self.acked.iter().zip(&self.acked_semi).find(|((t, by), semi)| **semi && *by == peer && !have.contains(t));
                if let Some(((lost, _), _)) = lost {
                    self.violations.push(format!("I8: write #{lost} acknowledged under semi-sync missing on the new Master {}", node_name(ix)));
                }
                if wait_for.is_some() {
                    // A hand-over: everything the old Master acknowledged in its stretch as
                    // Master must be here (I4). Writes lost to an earlier, unplanned failover
                    // (asynchronous replication) are not this switch-over's doing.
                    let log = &self.hosts[ix].db.log;
                    let (from, to) = self.last_stretch[peer];
                    if let Some((lost, _)) = self.acked[from..to].iter().find(|(t, by)| *by == peer && !log.contains(t)) {
                        self.violations.push(format!("I4: acknowledged write #{lost} missing on the new Master {}", node_name(ix)));
                    }
                }
                Done::Ok
            }
            Op::FenceDb => {
                if self.hosts[ix].db.writable {
                    self.last_stretch[ix] = (self.writable_from[ix], self.acked.len());
                }
                self.hosts[ix].db.writable = false;
                Done::Fenced { position: self.hosts[ix].db.position() }
            }
            Op::ReplicateDb { from } => {
                self.hosts[ix].db.stopped = false;
                self.hosts[ix].db.writable = false;
                self.hosts[ix].db.source = Some(ix_of(*from));
                Done::Ok
            }
            Op::PromoteMongo => match self.mongo_promote(ix) {
                Ok(()) => Done::Ok,
                Err(e) => return Finish::Done(Err(OpError::Failed(e))),
            },
            Op::DemoteMongo => match self.mongo_demote(ix) {
                Ok(()) => Done::Ok,
                Err(e) => return Finish::Done(Err(OpError::Failed(e))),
            },
            Op::FsPushStart { to } => {
                self.hosts[ix].fs_push = Some(ix_of(*to));
                Done::Ok
            }
            Op::FsPushStop => {
                self.hosts[ix].fs_push = None;
                Done::Ok
            }
            Op::MoveCloudIp { to } => {
                self.eip = Some(ix_of(*to));
                Done::Ok
            }
            Op::MayTake { arbiter: ArbiterKind::CloudApi, .. } => {
                let holder = self.eip.map(id_of);
                let peer_running = (holder != Some(id_of(ix))).then(|| self.hosts[peer].powered);
                Done::Verdict(Verdict::Cloud { holder, peer_running })
            }
            Op::MayKeep { arbiter: ArbiterKind::CloudApi, .. } => Done::Verdict(Verdict::Cloud { holder: self.eip.map(id_of), peer_running: None }),
            Op::StartServices => {
                self.hosts[ix].services = true;
                Done::Ok
            }
            Op::StopServices => {
                self.hosts[ix].services = false;
                Done::Ok
            }
            Op::Resync { phase, .. } => return Finish::Done(self.finish_resync(ix, *phase)),
            Op::MayTake { arbiter: ArbiterKind::EtcdLease, epoch } | Op::MayKeep { arbiter: ArbiterKind::EtcdLease, epoch } => {
                match self.lease_take(ix, *epoch) {
                    Ok(holder) => Done::Verdict(Verdict::Lease { holder }),
                    Err(e) => return Finish::Done(Err(OpError::Failed(e))),
                }
            }
            Op::Release { .. } => match self.lease_release(ix) {
                Ok(()) => Done::Ok,
                Err(e) => return Finish::Done(Err(OpError::Failed(e))),
            },
        };
        Finish::Done(Ok(done))
    }

    fn finish_resync(&mut self, ix: Ix, phase: ResyncPhase) -> Result<Done, OpError> {
        let peer = other(ix);
        if !self.same_domain() || !self.hosts[peer].powered {
            return Err(OpError::Failed(format!("{} unreachable", node_name(peer))));
        }
        match phase {
            ResyncPhase::DbCopy => {
                let log = self.hosts[peer].db.log.clone();
                let db = &mut self.hosts[ix].db;
                db.log = log;
                db.writable = false;
                db.source = None;
                db.errant = 0;
            }
            ResyncPhase::DbReplicate => self.hosts[ix].db.source = Some(peer),
            ResyncPhase::MongoCopy => self.mongo_copy(ix),
            ResyncPhase::FsCopy => {}
        }
        Ok(Done::Ok)
    }

    /// Replication catches up; returns hosts that just found errant transactions.
    pub fn replicate(&mut self) -> Vec<(Ix, u64)> {
        let mut errant = Vec::new();
        for ix in 0..2 {
            let Some(src) = self.hosts[ix].db.source else { continue };
            if !self.replicates_from(ix, src) {
                continue;
            }
            let theirs = &self.hosts[src].db.log;
            let mine = &self.hosts[ix].db.log;
            let common = mine.iter().zip(theirs.iter()).take_while(|(a, b)| a == b).count();
            if common == mine.len() {
                if theirs.len() > mine.len() {
                    let add = theirs[mine.len()..].to_vec();
                    self.hosts[ix].db.log.extend(add);
                }
            } else {
                // Transactions the source lacks: replication stops (gtid_strict_mode).
                let count = (mine.len() - common) as u64;
                self.hosts[ix].db.source = None;
                self.hosts[ix].db.errant = count;
                errant.push((ix, count));
            }
        }
        errant
    }

    /// What host `ix`'s database says of itself (its adapter's report), or why it cannot.
    pub fn db_facts(&self, ix: Ix) -> Result<ridondato_core::DbFacts, String> {
        use ridondato_core::{DbFacts, Replication};
        let db = &self.hosts[ix].db;
        if db.down {
            return Err("modelled: the database server is down".into());
        }
        let replication = match (db.source, db.stopped) {
            (None, _) => Replication::NotReplica,
            (Some(_), true) => Replication::Stopped,
            (Some(src), false) if self.hosts[src].powered && !self.hosts[src].db.down && self.same_domain() => Replication::Running,
            (Some(_), false) => Replication::Connecting,
        };
        let other = 1 - ix;
        let replicas = u32::from(self.replicates_from(other, ix));
        Ok(DbFacts {
            position: db.position(),
            received: db.position(),
            writable: db.writable,
            lag_ms: db.source.map(|_| 0),
            replication,
            semi_sync: db.writable && replicas > 0,
            replicas,
            misconfigured: Vec::new(),
        })
    }

    /// `r`'s database receives `src`'s transactions right now (semi-sync acknowledges them).
    pub fn replicates_from(&self, r: Ix, src: Ix) -> bool {
        let d = &self.hosts[r].db;
        r != src && d.source == Some(src) && !d.stopped && !d.down && self.hosts[r].powered && !self.hosts[src].db.down && self.same_domain()
    }

    /// One client write through the front door; acknowledged only if committed.
    pub fn client_write(&mut self) {
        let Some(ix) = (0..2).find(|&i| self.front_door(i) && self.hosts[i].db.writable) else { return };
        if self.hosts[ix].db.down {
            return;
        }
        let t = self.next_txn;
        self.next_txn += 1;
        // Semi-sync (the default): while the replica receives, a commit is acknowledged only
        // once the replica has it. The replica is caught up whenever it receives (modelled
        // replication is immediate), so it simply gets the transaction too.
        let other = 1 - ix;
        let semi = self.replicates_from(other, ix) && self.hosts[other].db.log.len() == self.hosts[ix].db.log.len();
        self.hosts[ix].db.log.push(t);
        if semi {
            self.hosts[other].db.log.push(t);
        }
        self.acked.push((t, ix));
        self.acked_semi.push(semi);
    }

    /// The daemon dies. The application units are `PartOf=` the daemon's unit, so systemd stops
    /// them too; addresses and the database stay as they were until a daemon comes back.
    /// Applies what a fault does to the world itself (links, network, adapters, writer, cloud
    /// IP); both tiers call this, then do their own part (processes, message queues, clocks).
    pub fn apply_fault(&mut self, f: &crate::fault::Fault) {
        use crate::fault::Fault;
        match f {
            Fault::LinkDown(ix) => self.hosts[*ix].link = false,
            Fault::LinkUp(ix) => self.hosts[*ix].link = self.hosts[*ix].powered,
            Fault::Cut => self.net.cut = true,
            Fault::CutOneWay(a, b) => self.net.oneway = Some((*a, *b)),
            Fault::Split { witness } => self.net.split = Some(*witness),
            Fault::Hold => self.net.hold = true,
            Fault::Release => self.net.hold = false,
            Fault::Loss(p) => self.net.loss_pct = (*p).min(100),
            Fault::Latency(ms) => self.net.latency_ms = *ms,
            Fault::Heal => self.net = Net::default(),
            Fault::Slow(ix, op, k) => {
                self.hosts[*ix].faults.insert(op.clone(), AdapterFault::Slow((*k).max(1)));
            }
            Fault::Fail(ix, op) => {
                self.hosts[*ix].faults.insert(op.clone(), AdapterFault::Fail);
            }
            Fault::Hang(ix, op) => {
                self.hosts[*ix].faults.insert(op.clone(), AdapterFault::Hang);
            }
            Fault::Fix(ix) => self.hosts[*ix].faults.clear(),
            Fault::Writer(on) => self.writer = *on,
            Fault::CloudMove(ix) => self.eip = Some(*ix),
            Fault::DbDown(ix) => {
                let db = &mut self.hosts[*ix].db;
                db.down = true;
                if db.writable {
                    db.writable = false;
                    self.last_stretch[*ix] = (self.writable_from[*ix], self.acked.len());
                }
            }
            Fault::DbUp(ix) => {
                let db = &mut self.hosts[*ix].db;
                if db.down {
                    // Restarted by systemd: read_only=1 and --skip-slave-start, as configured.
                    db.down = false;
                    db.stopped = db.source.is_some();
                }
            }
            Fault::MongoDown(ix) => self.hosts[*ix].mongo.down = true,
            Fault::EtcdCut(ix) => self.lease.cut[*ix] = true,
            Fault::EtcdDown => self.lease.down = true,
            Fault::EtcdUp => self.lease = crate::lease_model::LeaseModel { holder: self.lease.holder, ..Default::default() },
            Fault::MongoUp(ix) => self.mongo_restart(*ix),
            Fault::StopReplication(ix) => self.hosts[*ix].db.stopped = self.hosts[*ix].db.source.is_some(),
            Fault::LoseState(ix) => self.hosts[*ix].store = None,
            Fault::Start(_)
            | Fault::Crash(_)
            | Fault::Pause(_)
            | Fault::Resume(_)
            | Fault::PowerOff(_)
            | Fault::PowerOn(_)
            | Fault::Drift(..)
            | Fault::Cmd(..) => {}
        }
    }

    pub fn crash(&mut self, ix: Ix) {
        self.hosts[ix].daemon = false;
        self.hosts[ix].paused = false;
        self.hosts[ix].services = false;
        // Its last renewal was up to a quarter of the lease ago; the worst case for the
        // others is a renewal at the moment of death, and a late kernel check.
        if self.hosts[ix].vip {
            self.hosts[ix].vip_expires = Some(self.now + VIP_LEASE_MS + VIP_EXPIRY_LATE_MS);
        }
    }

    /// The daemon stops renewing (paused) or renews again (resumed). A resumed daemon renews
    /// only an address still there.
    pub fn pause(&mut self, ix: Ix, paused: bool) {
        let h = &mut self.hosts[ix];
        h.paused = paused;
        match (paused, h.vip) {
            (true, true) => h.vip_expires = Some(self.now + VIP_LEASE_MS + VIP_EXPIRY_LATE_MS),
            (false, _) => h.vip_expires = None,
            _ => {}
        }
    }

    /// The kernel drops addresses whose lease ran out. Returns the hosts that lost one.
    pub fn expire_leases(&mut self) -> Vec<Ix> {
        let now = self.now;
        let mut out = Vec::new();
        for (ix, h) in self.hosts.iter_mut().enumerate() {
            if h.vip && h.vip_expires.is_some_and(|t| t <= now) {
                h.vip = false;
                h.vip_expires = None;
                out.push(ix);
            }
        }
        out
    }

    pub fn power_off(&mut self, ix: Ix) {
        let h = &mut self.hosts[ix];
        h.powered = false;
        h.link = false;
        h.daemon = false;
        h.paused = false;
        h.vip = false;
        h.vip_expires = None;
        h.services = false;
        h.fs_push = None;
        // Modelled as restarting a secondary: a real sole voter may elect itself again, but
        // holds no VIP (clients cannot reach it) until its daemon demotes it at start-up or it
        // sees the survivor's newer configuration and rolls back.
        h.mongo.primary = false;
        // The DB restarts read-only (read_only=1 in its configuration) and not replicating.
        h.db.writable = false;
        h.db.source = None;
    }

    pub fn power_on(&mut self, ix: Ix) {
        let h = &mut self.hosts[ix];
        h.powered = true;
        h.link = true;
    }
}
