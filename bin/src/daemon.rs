//! `ridondato run --config FILE`: the daemon. Validates the whole configuration first, builds
//! the backends, runs the driver, serves the control socket, tells systemd when it is ready and
//! that it is alive, and on SIGTERM hands the Master role over before exiting.

use crate::config::{self, NodeConfig};
use ridondato_adapters::arbiters::{ArpProbe, CloudApi};
use ridondato_adapters::auth_codec::{AuthCodec, Key};
use ridondato_adapters::cloud::{CloudConfig, Ec2CloudIp};
use ridondato_adapters::fs_sync::{FsSyncConfig, RsyncFsSync};
use ridondato_adapters::lan::{ArpTiming, NetlinkVip, SharedIpSpec};
use ridondato_adapters::mariadb::{MariaDb, MariaDbConfig};
use ridondato_adapters::services_cmd::{CommandServices, ServiceControl};
use ridondato_adapters::store_file::FileStateStore;
use ridondato_adapters::udp::UdpTransport;
use ridondato_adapters::witness_tcp::TcpWitness;
use ridondato_adapters::{Backends, Driver, DriverConfig, Vip};
use ridondato_core::{ArbiterKind, Command, Node};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub fn run(path: &std::path::Path, json: bool) -> Result<(), String> {
    let cfg = config::load(path)?;
    // The same host checks as `check-config`, before anything is touched.
    let problems = crate::host_check::check(&cfg);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(format!("{}: {} problem(s) on this host, nothing started:\n{}", path.display(), problems.len(), list.join("\n")));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
        // sqlx's pool reports, at warn, the idle sessions our own fence ends (it ends every
        // session but its own); the pool reconnects and nothing is lost.
        |_| "info,netlink_packet_route=error,netlink_packet_core=error,sqlx::pool=error".into(),
    );
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    match json {
        // One JSON object per line, for a log collector.
        true => fmt.json().init(),
        // Colour codes only for a person at a terminal, never into a file or the journal.
        false => fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(serve(cfg))
}

/// The address on the route to the peer: connecting a UDP socket sends nothing.
fn route_source(peer: IpAddr) -> Result<IpAddr, String> {
    let any: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(|e| format!("{e}"))?;
    let s = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.connect((peer, 9)).map_err(|e| format!("no route to the peer {peer}: {e}"))?;
    s.local_addr().map(|a| a.ip()).map_err(|e| e.to_string())
}

fn backends(cfg: &NodeConfig, local_ip: IpAddr, key: &Key) -> Result<Backends, String> {
    let f = &cfg.file;
    let mut b = Backends::unconfigured();
    b.store = Arc::new(FileStateStore::new(&f.node.state_dir).map_err(|e| format!("node.state_dir: {e}"))?);
    if !f.shared_ips.is_empty() {
        let ips = f
            .shared_ips
            .iter()
            .map(|s| SharedIpSpec { interface: s.interface.clone(), address: s.address, prefix: s.prefix, label: s.label.clone(), primary: s.primary })
            .collect();
        let timing = ArpTiming {
            garp_count: f.garp.count,
            garp_gap: Duration::from_millis(f.garp.interval_ms),
            garp_repeat_after: Duration::from_millis(f.garp.repeat_after_ms),
            probe_count: f.garp.probe_count,
            probe_gap: Duration::from_millis((f.garp.probe_wait_ms / (2 * u64::from(f.garp.probe_count))).max(1)),
            probe_wait: Duration::from_millis(f.garp.probe_wait_ms),
        };
        let mut vip = NetlinkVip::new(ips, timing).map_err(|e| format!("shared_ip: {e}"))?;
        if let Some(lease) = f.timing.vip_lease() {
            vip = vip.with_lease(lease);
        }
        let vip: Arc<dyn Vip> = Arc::new(vip);
        b.arbiters.set(ArbiterKind::ArpProbe, Arc::new(ArpProbe(vip.clone())));
        b.vip = vip;
    }
    if !f.witness.hosts.is_empty() {
        b.arbiters.set(ArbiterKind::Witnesses, Arc::new(TcpWitness { hosts: f.witness.hosts.clone(), timeout: Duration::from_millis(f.witness.timeout_ms) }));
    }
    if let Some(s) = &f.services {
        let control = match (&s.start_hook, &s.stop_hook) {
            (Some(start), Some(stop)) => ServiceControl::Hooks { start: start.clone(), stop: stop.clone() },
            _ => ServiceControl::Systemd(s.units.clone()),
        };
        b.services = Arc::new(CommandServices { control, timeout: Duration::from_millis(s.timeout_ms) });
    }
    if let Some(db) = &f.db {
        use std::str::FromStr;
        let local = sqlx::mysql::MySqlConnectOptions::from_str(&db.dsn.replacen("mariadb://", "mysql://", 1)).map_err(|e| format!("db.dsn: {e}"))?;
        let repl_password = std::fs::read_to_string(&db.repl_password_file)
            .map_err(|e| format!("db.repl_password_file: {}: {e}", db.repl_password_file.display()))?
            .trim_end()
            .to_string();
        let peer_admin_password = std::fs::read_to_string(&db.peer_admin_password_file)
            .map_err(|e| format!("db.peer_admin_password_file: {}: {e}", db.peer_admin_password_file.display()))?
            .trim_end()
            .to_string();
        let peers = [(cfg.core.peer, (f.node.peer_ip.to_string(), db.peer_port))].into_iter().collect();
        let maria = Arc::new(MariaDb::new(MariaDbConfig {
            local,
            peers,
            repl_user: db.repl_user.clone(),
            repl_password,
            peer_admin: (db.peer_admin_user.clone(), peer_admin_password),
            app_user: db.app_user.clone(),
            semi_sync: db.semi_sync,
            semi_sync_timeout: Duration::from_millis(db.semi_sync_timeout_ms),
            apply_timeout: Duration::from_millis(db.promote_timeout_ms),
            backup_dir: Some(f.node.state_dir.join("db-backups")),
        }));
        // Settings the failover relies on, and an application account that bypasses read_only
        // (it would create errant transactions on the Slave, S8): said loudly at start, once
        // the database answers.
        let check = maria.clone();
        let peer = cfg.core.peer;
        tokio::spawn(async move {
            // Once a second until the server answers, then every five minutes (someone may
            // change a setting at run time); each finding is logged when it first appears.
            let mut logged = std::collections::BTreeSet::new();
            let mut account_checked = false;
            loop {
                match ridondato_adapters::mariadb::prereq::check(&check, peer).await {
                    Ok(findings) => {
                        for f in findings {
                            match (logged.insert(f.to_string()), f.fatal) {
                                (false, _) => {}
                                (true, true) => tracing::error!("{f}"),
                                (true, false) => tracing::warn!("{f}"),
                            }
                        }
                        if !account_checked {
                            account_checked = true;
                            match check.check_app_account().await {
                                Ok(Some(warning)) => tracing::warn!("{warning}"),
                                Ok(None) => {}
                                Err(e) => tracing::info!("application account not checked: {e}"),
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(300)).await;
                    }
                    Err(e) => {
                        tracing::debug!("MariaDB prerequisites not checked yet: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        b.db = maria;
    }
    if let Some(fs) = &f.fs {
        // Our rsync daemon listens on the management IP only; the peer's on the same port.
        let mut c = FsSyncConfig::new(
            fs.paths.clone(),
            [(cfg.core.peer, SocketAddr::new(f.node.peer_ip, fs.rsync_port))].into_iter().collect(),
            f.node.replication_bandwidth_kib_s,
            key.derived_password("rsync"),
            f.node.state_dir.join("fs"),
        );
        c.listen = Some(SocketAddr::new(local_ip, fs.rsync_port));
        c.excludes = fs.exclude.clone();
        c.verify_every = Duration::from_secs(fs.verify_interval_s);
        b.fs = Arc::new(RsyncFsSync::new(c).map_err(|e| format!("[fs]: {e}"))?);
    }
    Ok(b)
}

/// The user and the password read from `mongo.password_file` (trailing newline trimmed).
pub(crate) fn mongo_credential(m: &crate::config::MongoSection) -> Result<Option<ridondato_adapters::mongo::MongoCredential>, String> {
    let (Some(user), Some(file)) = (&m.username, &m.password_file) else { return Ok(None) };
    let password =
        std::fs::read_to_string(file).map_err(|e| format!("mongo.password_file: {}: {e}", file.display()))?.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(format!("mongo.password_file: {} is empty", file.display()));
    }
    Ok(Some(ridondato_adapters::mongo::MongoCredential { user: user.clone(), password, source: m.auth_source.clone() }))
}

/// The local member of the replica set, with its resync job when the unit (or hooks) and the
/// data directory are given.
async fn mongo_adapter(m: &crate::config::MongoSection) -> Result<ridondato_adapters::mongo::MongoMember, String> {
    use ridondato_adapters::mongo::{MongoConfig, MongoMember, ResyncSetup};
    use ridondato_adapters::services_cmd::{CommandServices, ServiceControl};
    let cfg = MongoConfig {
        uri: m.uri.clone(),
        replica_set: m.replica_set.clone(),
        me: m.member.clone(),
        peer: m.peer_member.clone(),
        timeout: Duration::from_millis(m.timeout_ms),
        credential: mongo_credential(m)?,
    };
    let member = MongoMember::connect(cfg).await.map_err(|e| format!("[mongo]: {}", e.0))?;
    let control = match (&m.unit, &m.start_hook, &m.stop_hook) {
        (Some(unit), _, _) => Some(ServiceControl::Systemd(vec![unit.clone()])),
        (None, Some(start), Some(stop)) => Some(ServiceControl::Hooks { start: start.clone(), stop: stop.clone() }),
        _ => None,
    };
    Ok(match (control, &m.data_dir) {
        (Some(control), Some(dir)) => member.with_resync(ResyncSetup {
            control: CommandServices { control, timeout: Duration::from_millis(m.timeout_ms.max(30_000)) },
            data_dir: dir.clone(),
            within: Duration::from_secs(m.resync_timeout_s),
        }),
        _ => member,
    })
}

async fn serve(cfg: NodeConfig) -> Result<(), String> {
    let f = &cfg.file;
    let key = Key::from_file(&f.node.secret_file).map_err(|e| format!("node.secret_file: {e}"))?;
    let local_ip = match f.node.management_ip {
        Some(ip) => ip,
        None => route_source(f.node.peer_ip).map_err(|e| format!("node.management_ip: {e}"))?,
    };
    let mut backends = backends(&cfg, local_ip, &key)?;
    if let Some(a) = &f.arbiter {
        use ridondato_adapters::arbiter_etcd::{EtcdArbiter, EtcdConfig};
        let user = match (&a.username, &a.password_file) {
            (Some(u), Some(p)) => {
                let pw = std::fs::read_to_string(p).map_err(|e| format!("arbiter.password_file: {}: {e}", p.display()))?;
                Some((u.clone(), pw.trim_end_matches(['\n', '\r']).to_string()))
            }
            _ => None,
        };
        let cfg = EtcdConfig {
            endpoints: a.endpoints.clone(),
            ttl_s: a.ttl_s as i64,
            prefix: a.prefix.clone(),
            user,
            tls: a.tls().map_err(|p| p.to_string())?,
            op_timeout: Duration::from_millis(a.op_timeout_ms),
        };
        backends.arbiters.set(ArbiterKind::EtcdLease, Arc::new(EtcdArbiter::connect(cfg).await.map_err(|e| format!("[arbiter]: {e}"))?));
    }
    if let Some(m) = &f.mongo {
        backends.mongo = Arc::new(mongo_adapter(m).await?);
    }
    let cloud = match &f.cloud {
        Some(c) => {
            let cloud = Arc::new(cloud_adapter(&cfg, c).await?);
            backends.cloud = cloud.clone();
            backends.arbiters.set(ArbiterKind::CloudApi, Arc::new(CloudApi { cloud: cloud.clone(), peer: cfg.core.peer }));
            spawn_domain_check(cloud.clone(), c.domain.clone(), Duration::from_secs(c.dns_check_interval_s));
            Some(cloud)
        }
        None => None,
    };
    let vip = backends.vip.clone();
    let transport = UdpTransport::bind(SocketAddr::new(local_ip, f.node.port), SocketAddr::new(f.node.peer_ip, f.node.port))
        .await
        .map_err(|e| format!("node.management_ip: {e}"))?;
    let codec = AuthCodec::new(key, cfg.core.node.0, cfg.core.peer.0)?;
    let dcfg = DriverConfig {
        op_deadline: Duration::from_millis(f.timing.op_deadline_ms.unwrap_or(3000)),
        db_reports: f.db.is_some(),
        vip_watch: !f.shared_ips.is_empty(),
        fs_reports: f.fs.is_some(),
        cloud_reports: f.cloud.is_some(),
        mongo_reports: f.mongo.is_some(),
        run: random_run()?,
        // Catch-up and promotion wait up to promote_timeout_ms for the relay log: the driver's
        // deadline must not cut them shorter.
        db_apply_deadline: Duration::from_millis(f.db.as_ref().map_or(0, |d| d.promote_timeout_ms) + 2000),
        // The same for the services' and MongoDB's own timeouts.
        app_deadline: Duration::from_millis(f.services.as_ref().map_or(0, |s| s.timeout_ms).max(f.mongo.as_ref().map_or(0, |m| m.timeout_ms)) + 2000),
        ..DriverConfig::default()
    };
    let handover_wait = Duration::from_millis(cfg.core.timing.handover_timeout + 2000);
    let run = dcfg.run;
    let (mut driver, handle) = Driver::new(Node::new(cfg.core.clone()), backends, Arc::new(transport), Arc::new(codec), dcfg);
    if f.node.journal_max_mb > 0 {
        let dir = f.node.state_dir.join("journal");
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match ridondato_adapters::journal::JournalWriter::open(&dir, f.node.journal_max_mb << 20, run, started, cfg.core.clone()) {
            Ok(j) => driver = driver.with_journal(j),
            // A journal is for after the fact: its absence must not keep the pair from running.
            Err(e) => tracing::error!("node.journal_max_mb: cannot open the journal in {}: {e}; running without one", dir.display()),
        }
    }
    tracing::info!(node = %cfg.core.node, peer = %f.node.peer_ip, "ridondato starting on {local_ip}:{}", f.node.port);

    let socket = f.node.control_socket.clone();
    let h = handle.clone();
    let c = cloud.map(|c| c as Arc<dyn ridondato_adapters::CloudIp>);
    tokio::spawn(async move {
        if let Err(e) = crate::control::serve(&socket, h, c).await {
            tracing::error!("control socket {}: {e}", socket.display());
        }
    });
    let h = handle.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("stopping: handing over if Master, then letting go (at most {} s; a second signal stops at once)", handover_wait.as_secs());
        // The orderly stop has a bound whatever the backends do; a second signal cuts it short.
        // Either way the VIP goes first: a daemon that is gone must not leave it answering.
        let orderly = tokio::time::timeout(handover_wait, h.command(Command::Shutdown));
        tokio::select! {
            r = orderly => match r {
                Ok(Ok(m)) => {
                    tracing::info!("{m}");
                    return; // the driver exits by itself
                }
                Ok(Err(e)) => tracing::warn!("shutdown: {e}; stopping now"),
                Err(_) => tracing::warn!("shutdown: not done within {} s; stopping now", handover_wait.as_secs()),
            },
            _ = term.recv() => tracing::warn!("second signal: stopping now"),
            _ = int.recv() => tracing::warn!("second signal: stopping now"),
        }
        match tokio::time::timeout(Duration::from_secs(1), vip.drop_vip()).await {
            Ok(Ok(())) => tracing::info!("dropped the VIP"),
            Ok(Err(e)) => tracing::warn!("dropping the VIP: {e}"),
            Err(_) => tracing::warn!("dropping the VIP: no answer within 1 s (its lease ends it)"),
        }
        std::process::exit(1);
    });
    if let Some(a) = &f.api {
        let token = crate::api::auth::Token::from_file(&a.token_file).map_err(|e| format!("api.token_file: {e}"))?;
        let facts = crate::api::health::Facts { components: cfg.core.components, mode: cfg.core.mode, node: cfg.core.node };
        let addrs = [SocketAddr::new(local_ip, a.port), SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port)];
        let addresses =
            serde_json::json!({ "me": local_ip.to_string(), "peer": f.node.peer_ip.to_string(), "bandwidth_kib_s": f.node.replication_bandwidth_kib_s });
        let mut api = crate::api::Api::new(handle.clone(), token, facts, addresses);
        if f.cloud.is_some() {
            api.cloud_switchover = Some(Arc::new((f.node.control_socket.clone(), f.node.state_dir.join("cloud-switchover.json"))));
        }
        let tls = match (&a.tls_cert_file, &a.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::api::serve::tls_config(cert, key)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        crate::api::serve(&addrs, api, tls).await?;
        tracing::info!("HTTP API on {scheme}://{local_ip}:{0} and {scheme}://127.0.0.1:{0}", a.port);
    }
    crate::notify::spawn(handle.clone());
    let result = driver.run().await.map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&f.node.control_socket);
    result
}

/// The cloud adapter from `[cloud]`: the client is set up here, the API first called by the
/// checks and the core (a node starts even while the API is out of reach, and says so).
async fn cloud_adapter(cfg: &NodeConfig, c: &config::CloudSection) -> Result<Ec2CloudIp, String> {
    let mut instances = std::collections::BTreeMap::new();
    for id in [cfg.core.node, cfg.core.peer] {
        let i = c.instance_ids.get(&id.0.to_string()).ok_or_else(|| format!("cloud.instance_ids: no instance id for node {}", id.0))?;
        instances.insert(id, i.clone());
    }
    let mut cc = CloudConfig::new(&c.region, instances);
    cc.endpoint = c.endpoint.clone();
    cc.allocation_id = c.allocation_id.clone();
    cc.public_ip = c.public_ip;
    cc.deadline = Duration::from_millis(c.api_deadline_ms);
    Ok(Ec2CloudIp::new(cc).await)
}

/// At start and then every `every`: the association (who holds the public IP, and whether the
/// API answers) and whether the domain resolves to the public IP; both end up in the status.
fn spawn_domain_check(cloud: Arc<Ec2CloudIp>, domain: String, every: Duration) {
    tokio::spawn(async move {
        loop {
            match cloud.association().await {
                Ok(a) => tracing::debug!("cloud: public IP {:?} held by {:?}", a.public_ip, a.instance),
                Err(e) => tracing::warn!("cloud: {e}"),
            }
            cloud.check_domain(&domain).await;
            tokio::time::sleep(every).await;
        }
    });
}

/// Takes the hard limit on open files as the soft one (the unit sets `LimitNOFILE`; a manual
/// start gets whatever the shell had, often 1024). Connection caps keep us far below it; this
/// is the margin for what we do not control (rsync children, database pools, netlink).
fn raise_fd_limit() {
    // The `rlimit` crate: getrlimit/setrlimit without unsafe code of ours.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("could not raise the open-files limit: {e}");
    }
}

/// A random identifier of this run of the daemon (see `Input::Start`).
fn random_run() -> Result<u64, String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness for the run identifier: {e}"))?;
    Ok(u64::from_le_bytes(b))
}
