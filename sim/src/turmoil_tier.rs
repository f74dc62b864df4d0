//! The second tier: the real async driver (`ridondato_adapters::Driver`) over turmoil's
//! simulated UDP, with backends that act on the same modelled world as the fast tier.
//!
//! The world lives outside the host closures, so `crash` and `bounce` keep disks, addresses and
//! databases as a real machine would. Turmoil's `std::time` is real: everything here uses tokio
//! time, which turmoil drives.

use crate::cluster::{SimConfig, RESTART_DELAY};
use crate::fault::{node_name, Fault, Ix};
use crate::invariants::{Checker, View};
use crate::rng::Rng;
use crate::world::{Finish, World};
use async_trait::async_trait;
use ridondato_adapters::arbiters::Arbiters;
use ridondato_adapters::{
    AdapterError, AdapterResult, Arbiter, Backends, CloudIp, Db, DbReport, Driver, DriverConfig, DriverHandle, FsSync, JsonCodec, Mongo, ProgressFn, Services,
    StateStore, Transport, Vip,
};
use ridondato_core::{ArbiterKind, Done, Node, NodeId, Op, PersistedState, Position, ResyncPhase, Role, Status, Verdict};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PORT: u16 = 7400;

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// All backends of one simulated host: each call becomes an operation on the world, taking the
/// world's latency in (turmoil-driven) tokio time, hanging when the world says it hangs.
#[derive(Debug)]
struct SimBackend {
    world: Shared<World>,
    rng: Shared<Rng>,
    ix: Ix,
}

impl SimBackend {
    async fn run(&self, op: Op) -> AdapterResult<Done> {
        let latency = {
            let mut w = lock(&self.world);
            let mut r = lock(&self.rng);
            let l = w.op_latency(self.ix, &op, &mut r);
            if let (true, Some(l)) = (ridondato_core::is_arp_probe(&op), l) {
                w.begin_probe(self.ix, l);
            }
            l
        };
        match latency {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending::<()>().await,
        }
        loop {
            let f = lock(&self.world).finish_op(self.ix, &op);
            match f {
                Finish::Done(r) => return r.map_err(|e| AdapterError::new(e.to_string())),
                Finish::Again(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        }
    }

    async fn unit(&self, op: Op) -> AdapterResult<()> {
        self.run(op).await.map(|_| ())
    }

    async fn copy(&self, phase: ResyncPhase, progress: ProgressFn) -> AdapterResult<()> {
        let total = lock(&self.world).progress_total(self.ix, phase);
        progress(ridondato_core::Progress::of(0, total));
        self.unit(Op::Resync { job: 0, phase }).await?;
        progress(ridondato_core::Progress::of(total, total));
        Ok(())
    }
}

#[async_trait]
impl Vip for SimBackend {
    async fn raise(&self) -> AdapterResult<()> {
        self.unit(Op::RaiseVip).await
    }
    async fn drop_vip(&self) -> AdapterResult<()> {
        self.unit(Op::DropVip).await
    }
    async fn garp(&self) -> AdapterResult<()> {
        self.unit(Op::Garp).await
    }
    async fn probe(&self) -> AdapterResult<bool> {
        match self.run(Op::MayKeep { arbiter: ArbiterKind::ArpProbe, epoch: 0 }).await? {
            Done::Verdict(Verdict::Arp { answered }) => Ok(answered),
            other => Err(AdapterError::new(format!("unexpected {other:?}"))),
        }
    }
    async fn held(&self) -> AdapterResult<bool> {
        Ok(lock(&self.world).hosts[self.ix].vip)
    }
    async fn link_up(&self) -> AdapterResult<bool> {
        Ok(lock(&self.world).hosts[self.ix].link)
    }
}

#[async_trait]
impl Db for SimBackend {
    async fn catch_up(&self, position: Position) -> AdapterResult<()> {
        self.unit(Op::CatchUpDb { position }).await
    }
    async fn promote(&self, wait_for: Option<Position>) -> AdapterResult<()> {
        self.unit(Op::PromoteDb { wait_for }).await
    }
    async fn fence(&self) -> AdapterResult<Position> {
        match self.run(Op::FenceDb).await? {
            Done::Fenced { position } => Ok(position),
            other => Err(AdapterError::new(format!("unexpected {other:?}"))),
        }
    }
    async fn replicate_from(&self, peer: NodeId) -> AdapterResult<()> {
        self.unit(Op::ReplicateDb { from: peer }).await
    }
    async fn report(&self) -> AdapterResult<DbReport> {
        let w = lock(&self.world);
        let facts = w.db_facts(self.ix).map_err(AdapterError::new)?;
        let errant = w.hosts[self.ix].db.errant;
        Ok(DbReport { facts, errant: (errant > 0).then(|| (errant, format!("{errant} modelled"))) })
    }
    async fn copy_from_peer(&self, _peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
        self.copy(ResyncPhase::DbCopy, progress).await
    }
}

#[async_trait]
impl Mongo for SimBackend {
    async fn promote(&self) -> AdapterResult<()> {
        self.unit(Op::PromoteMongo).await
    }
    async fn demote(&self) -> AdapterResult<()> {
        self.unit(Op::DemoteMongo).await
    }
    async fn resync(&self, progress: ProgressFn) -> AdapterResult<()> {
        self.copy(ResyncPhase::MongoCopy, progress).await
    }
    async fn report(&self) -> AdapterResult<Option<ridondato_core::MongoReport>> {
        let r = lock(&self.world).mongo_report(self.ix);
        match r.error {
            Some(e) => Err(AdapterError::new(e)),
            None => Ok(Some(r)),
        }
    }
}

#[async_trait]
impl FsSync for SimBackend {
    async fn push_start(&self, peer: NodeId) -> AdapterResult<()> {
        self.unit(Op::FsPushStart { to: peer }).await
    }
    async fn push_stop(&self) -> AdapterResult<()> {
        self.unit(Op::FsPushStop).await
    }
    async fn resync_from(&self, _peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
        self.copy(ResyncPhase::FsCopy, progress).await
    }
}

/// One of the simulated arbiters: each question is an operation on the world, which answers
/// it from its model (ARP on the segment, witnesses, the cloud API, the etcd lease).
#[derive(Debug)]
struct SimArbiter {
    be: Arc<SimBackend>,
    kind: ArbiterKind,
}

#[async_trait]
impl Arbiter for SimArbiter {
    async fn may_take(&self, _: NodeId, epoch: u64) -> AdapterResult<Verdict> {
        self.verdict(Op::MayTake { arbiter: self.kind, epoch }).await
    }
    async fn may_keep(&self, _: NodeId, epoch: u64) -> AdapterResult<Verdict> {
        self.verdict(Op::MayKeep { arbiter: self.kind, epoch }).await
    }
    async fn release(&self) -> AdapterResult<()> {
        self.be.unit(Op::Release { arbiter: self.kind }).await
    }
}

impl SimArbiter {
    async fn verdict(&self, op: Op) -> AdapterResult<Verdict> {
        match self.be.run(op).await? {
            Done::Verdict(v) => Ok(v),
            other => Err(AdapterError::new(format!("unexpected {other:?}"))),
        }
    }
}

#[async_trait]
impl CloudIp for SimBackend {
    async fn associate(&self, to: NodeId) -> AdapterResult<()> {
        self.unit(Op::MoveCloudIp { to }).await
    }
    async fn holder(&self) -> AdapterResult<Option<NodeId>> {
        match self.run(Op::MayKeep { arbiter: ArbiterKind::CloudApi, epoch: 0 }).await? {
            Done::Verdict(Verdict::Cloud { holder, .. }) => Ok(holder),
            other => Err(AdapterError::new(format!("unexpected {other:?}"))),
        }
    }
    async fn instance_running(&self, node: NodeId) -> AdapterResult<bool> {
        // The driver asks this through the cloud arbiter (`SimArbiter`); read the model directly.
        Ok(lock(&self.world).hosts[crate::world::ix_of(node)].powered)
    }
}

#[async_trait]
impl Services for SimBackend {
    async fn start(&self) -> AdapterResult<()> {
        self.unit(Op::StartServices).await
    }
    async fn stop(&self) -> AdapterResult<()> {
        self.unit(Op::StopServices).await
    }
}

#[async_trait]
impl StateStore for SimBackend {
    async fn load(&self) -> AdapterResult<Option<PersistedState>> {
        Ok(lock(&self.world).hosts[self.ix].store.clone())
    }
    async fn save(&self, state: &PersistedState) -> AdapterResult<()> {
        self.unit(Op::Persist(state.clone())).await
    }
}

/// Datagrams over turmoil's simulated UDP.
#[derive(Debug)]
struct TurmoilUdp {
    sock: turmoil::net::UdpSocket,
    peer: SocketAddr,
}

#[async_trait]
impl Transport for TurmoilUdp {
    async fn send(&self, datagram: &[u8]) -> AdapterResult<()> {
        self.sock.send_to(datagram, self.peer).await.map(|_| ()).map_err(|e| AdapterError::new(e.to_string()))
    }
    async fn recv(&self) -> AdapterResult<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await.map_err(|e| AdapterError::new(e.to_string()))?;
            if from.ip() == self.peer.ip() {
                return Ok(buf[..n].to_vec());
            }
        }
    }
}

async fn run_node(ix: Ix, cfg: SimConfig, world: Shared<World>, rng: Shared<Rng>, statuses: Shared<[Option<Status>; 2]>) -> turmoil::Result {
    lock(&world).hosts[ix].daemon = true;
    let sock = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let peer = SocketAddr::new(turmoil::lookup(node_name(1 - ix)), PORT);
    let be = Arc::new(SimBackend { world: world.clone(), rng, ix });
    let mut arbiters = Arbiters::default();
    for kind in [ArbiterKind::ArpProbe, ArbiterKind::Witnesses, ArbiterKind::CloudApi, ArbiterKind::EtcdLease] {
        arbiters.set(kind, Arc::new(SimArbiter { be: be.clone(), kind }));
    }
    let backends =
        Backends { vip: be.clone(), db: be.clone(), mongo: be.clone(), fs: be.clone(), cloud: be.clone(), services: be.clone(), store: be, arbiters };
    // Each start of this host is a new run: its incarnation, counted in the world.
    let run = {
        let mut w = lock(&world);
        w.runs[ix] += 1;
        w.runs[ix]
    };
    let dcfg = DriverConfig { op_deadline: Duration::from_millis(cfg.op_deadline), run, mongo_reports: cfg.components.mongo, ..DriverConfig::default() };
    let (driver, handle) = Driver::new(Node::new(cfg.node_config(ix)), backends, Arc::new(TurmoilUdp { sock, peer }), Arc::new(JsonCodec), dcfg);
    let watcher = watch_status(ix, handle, statuses);
    tokio::spawn(watcher);
    driver.run().await?;
    Ok(())
}

async fn watch_status(ix: Ix, handle: DriverHandle, statuses: Shared<[Option<Status>; 2]>) {
    let mut rx = handle.status.clone();
    while rx.changed().await.is_ok() {
        let s = rx.borrow().clone();
        lock(&statuses)[ix] = s;
    }
}

/// turmoil's step: every timer and every datagram lands on a multiple of it, and each step costs
/// the same whether anything happens or not (turmoil ticks every host's runtime), so the tick
/// bounds the tier's speed: 311x real time at 1 ms, about 1150x at 5 ms (`ridondato sim
/// --bench`). 5 ms is the coarsest that keeps the model's distinctions: a datagram (0.1–2 ms)
/// and the quick operations (state write, VIP, 1–5 ms) still complete within one tick, as on a
/// LAN, while the heartbeat (100 ms) spans 20 ticks and the failover timeout 120, so a heartbeat
/// racing a timeout stays a race. 10 ms also passed 3000 schedules but folds a state write and
/// the next datagram into one instant, hiding the interleavings this tier is for.
const TICK_MS: u64 = 5;

/// The outcome of one turmoil run.
#[derive(Debug)]
pub struct TurmoilRun {
    pub violations: Vec<String>,
    pub statuses: [Option<Status>; 2],
    pub world: World,
    pub sim_ms: u64,
    pub steps: u64,
}

/// Runs the two real drivers for `duration_ms` of simulated time, applying `ops` at their times
/// (start, crash, power, links, cuts, splits, holds; commands are not sent in this tier) and
/// checking the invariants after every step.
pub fn run(cfg: &SimConfig, ops: &[(u64, Fault)], duration_ms: u64) -> Result<TurmoilRun, String> {
    let world: Shared<World> = Arc::new(Mutex::new(World::new(cfg.mode, cfg.witnesses)));
    let rng: Shared<Rng> = Arc::new(Mutex::new(Rng::new(cfg.seed)));
    let statuses: Shared<[Option<Status>; 2]> = Arc::new(Mutex::new([None, None]));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(duration_ms + 1000))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(2))
        .rng_seed(cfg.seed)
        .build();
    for ix in 0..2 {
        let (c, w, r, s) = (cfg.clone(), world.clone(), rng.clone(), statuses.clone());
        sim.host(node_name(ix), move || run_node(ix, c.clone(), w.clone(), r.clone(), s.clone()));
    }
    // Hosts run from the start; a node whose first operation is not `start a` at 0 is held down.
    let mut down = [true, true];
    let mut pending: Vec<(u64, Fault)> = ops.to_vec();
    pending.sort_by_key(|(t, _)| *t);
    let mut next = 0;
    let mut checker = Checker::new(cfg.heal_grace()).with_lease(cfg.lease);
    let mut steps = 0u64;
    let mut last_repl = 0u64;
    let mut last_write = 0u64;
    let mut restart_at: [Option<u64>; 2] = [None, None];
    for ix in 0..2 {
        sim.crash(node_name(ix));
        lock(&world).crash(ix);
    }
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= duration_ms {
            break;
        }
        for (ix, at) in restart_at.iter_mut().enumerate() {
            if at.is_some_and(|t| now >= t) {
                *at = None;
                let was = down;
                apply(&mut sim, &world, &mut down, &Fault::Start(ix));
                note_starts(&mut checker, &world, &statuses, was, down);
            }
        }
        while next < pending.len() && pending[next].0 <= now {
            let f = pending[next].1.clone();
            if let Fault::Crash(ix) = f {
                restart_at[ix] = Some(now + RESTART_DELAY);
            }
            let was = down;
            apply(&mut sim, &world, &mut down, &f);
            note_starts(&mut checker, &world, &statuses, was, down);
            checker.after_fault(now, &lock(&world), &f);
            next += 1;
        }
        {
            let mut w = lock(&world);
            w.now = now;
            w.expire_leases();
        }
        sim.step().map_err(|e| format!("turmoil: {e}"))?;
        steps += 1;
        let mut w = lock(&world);
        if now >= last_repl + 20 {
            last_repl = now;
            let _ = w.replicate();
            w.mongo_replicate();
        }
        if w.writer && now >= last_write + cfg.write_every {
            last_write = now;
            w.client_write();
            w.mongo_write();
        }
        let st = lock(&statuses).clone();
        let views = [0, 1].map(|i| if down[i] { None } else { st[i].as_ref().map(View::of_status) });
        checker.check(now, &w, &views);
    }
    let mut violations = checker.violations.clone();
    let w = lock(&world).clone();
    violations.extend(w.violations.iter().cloned());
    let statuses = lock(&statuses).clone();
    Ok(TurmoilRun { violations, statuses, world: w, sim_ms: sim.elapsed().as_millis() as u64, steps })
}

/// A node that (re)starts begins from its state store, as in the pure tier: its epoch may be
/// lower than one it had adopted from the peer without writing it (a failing store), which is
/// no violation as long as it covers every claim (`Checker::on_start`). The previous run's
/// status is forgotten so that it is not compared with the new one.
fn note_starts(checker: &mut Checker, world: &Shared<World>, statuses: &Shared<[Option<Status>; 2]>, was: [bool; 2], down: [bool; 2]) {
    for ix in 0..2 {
        if was[ix] && !down[ix] {
            let store = lock(world).hosts[ix].store.clone();
            lock(statuses)[ix] = None;
            checker.on_start(ix, store.as_ref().map_or(0, |s| s.epoch), store.is_none());
        }
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, world: &Shared<World>, down: &mut [bool; 2], f: &Fault) {
    let (a, b) = ("a", "b");
    lock(world).apply_fault(f);
    match f {
        Fault::Start(ix) if lock(world).hosts[*ix].powered && down[*ix] => {
            down[*ix] = false;
            sim.bounce(node_name(*ix));
        }
        Fault::Crash(ix) | Fault::PowerOff(ix) => {
            let mut w = lock(world);
            if matches!(f, Fault::Crash(_)) {
                w.crash(*ix);
            } else {
                w.power_off(*ix);
            }
            down[*ix] = true;
            drop(w);
            sim.crash(node_name(*ix));
        }
        Fault::PowerOn(ix) => {
            let mut w = lock(world);
            if !w.hosts[*ix].powered {
                w.power_on(*ix);
                down[*ix] = false;
                drop(w);
                sim.bounce(node_name(*ix));
            }
        }
        Fault::Hold => sim.hold(a, b),
        Fault::Release | Fault::Heal => sim.release(a, b),
        // Pause/Resume: turmoil cannot stop a host's tasks and let them go on later (only
        // crash them); the pure tier models a paused daemon.
        _ => {}
    }
    // The heartbeat path follows the world: links, cuts and splits.
    let w = lock(world);
    if w.hb_path(0, 1) {
        sim.repair_oneway(a, b);
    } else {
        sim.partition_oneway(a, b);
    }
    if w.hb_path(1, 0) {
        sim.repair_oneway(b, a);
    } else {
        sim.partition_oneway(b, a);
    }
}

/// Roles in a finished run, for tests: `[a, b]`.
pub fn roles(run: &TurmoilRun) -> [Option<Role>; 2] {
    [0, 1].map(|i| run.statuses[i].as_ref().map(|s| s.role))
}
