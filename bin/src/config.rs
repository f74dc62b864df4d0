//! The node's TOML configuration (SPEC §5), the seed's fields first. Parsed and validated as a
//! whole before anything starts: every error names the field and the reason, and a file with
//! any error starts nothing.

use ridondato_core::{Components, Config, Mode, NodeId, Timing};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub node: NodeSection,
    #[serde(default, rename = "shared_ip")]
    pub shared_ips: Vec<SharedIp>,
    pub cloud: Option<CloudSection>,
    pub db: Option<DbSection>,
    pub mongo: Option<MongoSection>,
    pub fs: Option<FsSection>,
    pub services: Option<ServicesSection>,
    pub api: Option<ApiSection>,
    #[serde(default)]
    pub timing: TimingSection,
    #[serde(default)]
    pub witness: WitnessSection,
    #[serde(default)]
    pub garp: GarpSection,
    pub arbiter: Option<ArbiterSection>,
}

/// A lease arbiter with a real quorum (B11): a leader key on an etcd lease.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterSection {
    /// Only `etcd` so far.
    pub kind: String,
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    #[serde(default = "default_lease_ttl")]
    pub ttl_s: u64,
    /// The leader key is `<prefix>/leader`: one prefix per pair.
    pub prefix: String,
    /// The bound on each etcd call.
    #[serde(default = "default_arbiter_timeout")]
    pub op_timeout_ms: u64,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// TLS: the CA that signed the members' certificates (endpoints then `https://`).
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key, for members run with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

fn default_lease_ttl() -> u64 {
    5
}
fn default_arbiter_timeout() -> u64 {
    1000
}

impl ArbiterSection {
    /// The TLS material, read and checked; an error names the field at fault.
    pub fn tls(&self) -> Result<Option<ridondato_adapters::arbiter_etcd::EtcdTls>, ConfigProblem> {
        use ridondato_adapters::arbiter_etcd::{EtcdTls, TlsPart};
        let read = |field: &str, f: &Path| std::fs::read(f).map_err(|e| problem(field, format!("{}: {e}", f.display())));
        let Some(ca_file) = &self.ca_file else {
            return match (&self.cert_file, &self.key_file) {
                (None, None) => Ok(None),
                _ => Err(problem("arbiter.ca_file", "missing: a client certificate needs the CA that signed the members' certificates")),
            };
        };
        let ca = read("arbiter.ca_file", ca_file)?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read("arbiter.cert_file", c)?, read("arbiter.key_file", k)?)),
            (Some(_), None) => return Err(problem("arbiter.key_file", "missing: arbiter.cert_file needs its private key")),
            (None, Some(_)) => return Err(problem("arbiter.cert_file", "missing: arbiter.key_file is given without its certificate")),
            (None, None) => None,
        };
        let tls = EtcdTls { ca, identity };
        tls.check().map_err(|(part, why)| {
            let field = match part {
                TlsPart::Ca => "arbiter.ca_file",
                TlsPart::Certificate => "arbiter.cert_file",
                TlsPart::Key => "arbiter.key_file",
            };
            problem(field, why)
        })?;
        Ok(Some(tls))
    }

    /// The core's use of the lease: refresh every TTL/5; a refresh older than TTL less one call's
    /// bound and a margin for clock rates (0.1 % of the TTL, at least 100 ms) no longer counts.
    pub fn timing(&self) -> ridondato_core::LeaseTiming {
        let ttl = self.ttl_s * 1000;
        let margin = self.op_timeout_ms + (ttl / 1000).max(100);
        ridondato_core::LeaseTiming { refresh_every: ttl / 5, keep_for: ttl.saturating_sub(margin) }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id (1..=255); the peer's is the other one configured.
    pub id: u8,
    pub peer_id: u8,
    /// The other node's IP (S9).
    pub peer_ip: IpAddr,
    /// This node's management IP (S9); default: the local address on the route to the peer.
    pub management_ip: Option<IpAddr>,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Replication bandwidth for file sync (S7, S9), in KiB/s (1024 bytes per second, rsync's
    /// unit; the seed's "KB").
    #[serde(default = "default_bandwidth")]
    pub replication_bandwidth_kib_s: u64,
    /// The field's old name, which read as kilobits: refused with the new name, never guessed.
    #[serde(default)]
    pub replication_bandwidth_kbps: Option<toml::Value>,
    /// File holding the cluster's shared secret (at least 16 bytes), for node-to-node traffic.
    pub secret_file: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// The input journal in `<state_dir>/journal/` (B9): its bound in MiB; 0 keeps none.
    #[serde(default = "default_journal_mb")]
    pub journal_max_mb: u64,
}

fn default_journal_mb() -> u64 {
    64
}

fn default_port() -> u16 {
    7400
}
fn default_mode() -> String {
    "lan".into()
}
fn default_bandwidth() -> u64 {
    10_000
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ridondato")
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/ridondato/control.sock")
}

/// One node IP (S4): interface, address, prefix, primary flag.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedIp {
    pub interface: String,
    pub address: IpAddr,
    pub prefix: u8,
    /// Accepted (the seed's forms have it) and ignored: all shared IPs move together, and the
    /// node's own traffic keeps its management IP as source. Making the VIP the source of the
    /// default route would take that route away whenever the VIP goes, so it is not done.
    #[serde(default)]
    pub primary: bool,
    pub label: Option<String>,
}

/// The HTTP API (S15, B7): health checks for load balancers, status, commands, metrics, events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Served on the management IP and on loopback.
    #[serde(default = "default_api_port")]
    pub port: u16,
    /// The bearer token every call but the health checks and metrics needs (mode 600).
    pub token_file: PathBuf,
    /// TLS: the certificate chain (PEM) and its private key (PEM, mode 600), both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

fn default_api_port() -> u16 {
    8008
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// The name operators reach the Master by; checked to resolve to the public IP.
    pub domain: String,
    pub public_ip: Option<IpAddr>,
    pub allocation_id: Option<String>,
    pub region: String,
    /// Instance id of each node, by node id ("1" = "i-…").
    pub instance_ids: BTreeMap<String, String>,
    /// API endpoint override (a VPC endpoint; tests).
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auto_failover: bool,
    /// One API operation, retries of throttling and 5xx included, ends within this.
    #[serde(default = "default_api_deadline_ms")]
    pub api_deadline_ms: u64,
    /// How often the domain is checked against the public IP.
    #[serde(default = "default_dns_check_s")]
    pub dns_check_interval_s: u64,
}

fn default_api_deadline_ms() -> u64 {
    10_000
}

fn default_dns_check_s() -> u64 {
    60
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSection {
    /// Local admin DSN, e.g. `mysql://root@localhost/?socket=/run/mysqld/mysqld.sock`.
    pub dsn: String,
    pub repl_user: String,
    pub repl_password_file: PathBuf,
    #[serde(default = "default_db_port")]
    pub peer_port: u16,
    /// The account ridondato uses on the peer's server, always over TCP to `peer_ip:peer_port`
    /// (the "is the peer still writable?" check, errant-set comparison, resync dumps).
    pub peer_admin_user: String,
    pub peer_admin_password_file: PathBuf,
    /// The application's account, checked for privileges that bypass read_only.
    pub app_user: Option<String>,
    /// Lossless semi-synchronous replication (AFTER_SYNC): on by default; off trades
    /// acknowledged writes at a power loss for commit latency.
    #[serde(default = "yes")]
    pub semi_sync: bool,
    /// How long a commit waits for the replica before the Master falls back to asynchronous
    /// replication (alarmed).
    #[serde(default = "default_semi_sync_timeout")]
    pub semi_sync_timeout_ms: u64,
    #[serde(default = "default_promote_timeout")]
    pub promote_timeout_ms: u64,
    /// Promotion policy: transactions a Slave may be known to lack and still take over
    /// automatically when the Master did not have semi-sync active.
    #[serde(default)]
    pub max_lag_on_failover: u64,
    /// A Master whose database stays unreachable this long hands over to a caught-up Slave.
    #[serde(default = "default_db_down_handover")]
    pub down_handover_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_semi_sync_timeout() -> u64 {
    1000
}
fn default_db_down_handover() -> u64 {
    10_000
}

fn default_db_port() -> u16 {
    3306
}
fn default_promote_timeout() -> u64 {
    10_000
}

/// MongoDB (S6): this node's member of a two-member replica set that follows the node's role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSection {
    /// The local member (`mongodb://127.0.0.1:27017/`); `directConnection=true` is added.
    pub uri: String,
    pub replica_set: String,
    /// This member's and the peer's `host:port` as the replica-set configuration names them.
    pub member: String,
    pub peer_member: String,
    /// How long a promotion may take to be writable primary, and a hand-over its catch-up.
    #[serde(default = "default_mongo_timeout")]
    pub timeout_ms: u64,
    /// For the resync job: the member's systemd unit, or start/stop hooks, and its data directory.
    pub unit: Option<String>,
    pub start_hook: Option<String>,
    pub stop_hook: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// How long an initial sync may take.
    #[serde(default = "default_mongo_resync")]
    pub resync_timeout_s: u64,
    /// SCRAM-SHA-256 credentials: the user, the file holding its password (never the URI), and
    /// the database that holds the user.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_auth_source")]
    pub auth_source: String,
    /// The promotion policy's allowance: seconds of writes the Slave's member may be known to
    /// lack and still take over automatically (0: none).
    #[serde(default)]
    pub max_lag_on_failover_s: u32,
}

fn default_auth_source() -> String {
    "admin".into()
}

fn default_mongo_timeout() -> u64 {
    10_000
}
fn default_mongo_resync() -> u64 {
    3600
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSection {
    pub paths: Vec<PathBuf>,
    /// rsync patterns neither sent nor deleted (a node's own scratch files).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The rsync daemon's port, on the management IP, the same on both nodes.
    #[serde(default = "default_rsync_port")]
    pub rsync_port: u16,
    /// A full comparison this often without other transfers (seconds): repairs what no event
    /// names, such as a returning node's own stale changes.
    #[serde(default = "default_verify_interval")]
    pub verify_interval_s: u64,
}

fn default_rsync_port() -> u16 {
    8730
}

fn default_verify_interval() -> u64 {
    300
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    #[serde(default)]
    pub units: Vec<String>,
    pub start_hook: Option<String>,
    pub stop_hook: Option<String>,
    #[serde(default = "default_hook_timeout")]
    pub timeout_ms: u64,
}

fn default_hook_timeout() -> u64 {
    30_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSection {
    pub heartbeat_interval_ms: Option<u64>,
    pub failover_timeout_ms: Option<u64>,
    pub isolation_timeout_ms: Option<u64>,
    pub discovery_window_ms: Option<u64>,
    pub lone_slave_wait_ms: Option<u64>,
    pub handover_timeout_ms: Option<u64>,
    pub op_deadline_ms: Option<u64>,
    /// The kernel-enforced lease of the shared IPs (whole seconds; 0: none). Default 2000.
    pub vip_lease_ms: Option<u64>,
}

/// Two seconds: the daemon renews every quarter of it (500 ms, on its 250-ms report tick), so
/// a healthy Master survives three missed renewals; a hung one loses the VIP within 2 s (plus
/// the kernel's up-to-1-s expiry check), and its Slave then takes over through the usual ARP
/// probe. Shorter than one second is not possible (`valid_lft` counts seconds).
pub const DEFAULT_VIP_LEASE_MS: u64 = 2000;

impl TimingSection {
    pub fn vip_lease(&self) -> Option<std::time::Duration> {
        match self.vip_lease_ms.unwrap_or(DEFAULT_VIP_LEASE_MS) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// `host:port` reached by TCP connect.
    #[serde(default)]
    pub hosts: Vec<SocketAddr>,
    #[serde(default = "default_witness_timeout")]
    pub timeout_ms: u64,
}

fn default_witness_timeout() -> u64 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GarpSection {
    #[serde(default = "default_garp_count")]
    pub count: u32,
    #[serde(default = "default_garp_interval")]
    pub interval_ms: u64,
    /// A second burst this long after the first (B3).
    #[serde(default = "default_garp_repeat")]
    pub repeat_after_ms: u64,
    /// ARP probe before taking the VIP: how many probes, and how long to listen for an answer.
    #[serde(default = "default_probe_count")]
    pub probe_count: u32,
    #[serde(default = "default_probe_wait")]
    pub probe_wait_ms: u64,
}

fn default_probe_count() -> u32 {
    2
}
fn default_probe_wait() -> u64 {
    80
}

impl Default for GarpSection {
    fn default() -> Self {
        GarpSection {
            count: default_garp_count(),
            interval_ms: default_garp_interval(),
            repeat_after_ms: default_garp_repeat(),
            probe_count: default_probe_count(),
            probe_wait_ms: default_probe_wait(),
        }
    }
}

fn default_garp_count() -> u32 {
    3
}
fn default_garp_interval() -> u64 {
    20
}
fn default_garp_repeat() -> u64 {
    1100
}

/// A validated configuration: the file as read, and the core's view of it.
#[derive(Debug)]
pub struct NodeConfig {
    pub file: NodeFile,
    pub core: Config,
}

/// A configuration problem: the field and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A reason quoting a value of any length stays readable: long values are cut.
const MAX_REASON: usize = 300;

fn problem(field: impl Into<String>, reason: impl Into<String>) -> ConfigProblem {
    let mut reason: String = reason.into();
    if reason.chars().count() > MAX_REASON {
        reason = reason.chars().take(MAX_REASON).collect::<String>() + "… (cut)";
    }
    ConfigProblem { field: field.into(), reason }
}

/// More entries than this in a list is a mistake, not a deployment.
const MAX_LIST: usize = 64;

/// Reads and validates `path`. On error, the message names the file, the field and the reason.
pub fn load(path: &Path) -> Result<NodeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        format!("{}: {} problem(s), nothing started:\n{}", path.display(), problems.len(), list.join("\n"))
    })
}

pub fn parse(text: &str) -> Result<NodeConfig, Vec<ConfigProblem>> {
    let file: NodeFile = toml::from_str(text).map_err(|e| {
        // toml names the key and the line; keep its words.
        vec![problem("(syntax)", e.to_string().trim().replace('\n', " "))]
    })?;
    let mut problems = Vec::new();
    let n = &file.node;
    let mode = match n.mode.as_str() {
        "lan" => Mode::Lan,
        "cloud" => Mode::Cloud,
        other => {
            problems.push(problem("node.mode", format!("`{other}`: expected \"lan\" or \"cloud\"")));
            Mode::Lan
        }
    };
    if n.id == 0 {
        problems.push(problem("node.id", "node ids start at 1"));
    }
    if n.peer_id == 0 {
        problems.push(problem("node.peer_id", "node ids start at 1"));
    }
    if n.replication_bandwidth_kib_s == 0 {
        problems.push(problem("node.replication_bandwidth_kib_s", "must be greater than 0 KiB/s"));
    }
    if n.replication_bandwidth_kbps.is_some() {
        problems.push(problem(
            "node.replication_bandwidth_kbps",
            "renamed: write it as replication_bandwidth_kib_s (KiB/s, 1024 bytes per second; the value keeps its meaning)",
        ));
    }
    if n.port == 0 {
        problems.push(problem("node.port", "must be a port number above 0"));
    }
    if let Some(m) = n.management_ip {
        if m == n.peer_ip {
            problems.push(problem("node.management_ip", "equals node.peer_ip"));
        }
    }
    match mode {
        Mode::Lan => {
            if file.shared_ips.is_empty() {
                problems.push(problem("shared_ip", "LAN mode needs at least one [[shared_ip]] (the node IP, S3/S4)"));
            }
            for (i, s) in file.shared_ips.iter().enumerate() {
                let max = if s.address.is_ipv4() { 32 } else { 128 };
                if s.prefix == 0 || s.prefix > max {
                    problems.push(problem(format!("shared_ip[{i}].prefix"), format!("{} is not a valid prefix for {}", s.prefix, s.address)));
                }
                if s.interface.is_empty() || s.interface.len() > 15 {
                    problems.push(problem(format!("shared_ip[{i}].interface"), "must be an interface name of 1 to 15 characters"));
                }
                if s.address == n.peer_ip || Some(s.address) == n.management_ip {
                    problems.push(problem(format!("shared_ip[{i}].address"), "must differ from the node's own and the peer's IP"));
                }
            }
            for (i, s) in file.shared_ips.iter().enumerate() {
                if file.shared_ips[..i].iter().any(|o| o.address == s.address) {
                    problems.push(problem(format!("shared_ip[{i}].address"), format!("{} is listed twice", s.address)));
                }
            }
            if file.cloud.is_some() {
                problems.push(problem("cloud", "a [cloud] section needs node.mode = \"cloud\""));
            }
        }
        Mode::Cloud => {
            if !file.shared_ips.is_empty() {
                problems.push(problem("shared_ip", "cloud mode raises no virtual IP (S13): remove [[shared_ip]]"));
            }
            match &file.cloud {
                None => problems.push(problem("cloud", "cloud mode needs a [cloud] section (domain, public IP, region, instance ids)")),
                Some(c) => {
                    if c.public_ip.is_none() && c.allocation_id.is_none() {
                        problems.push(problem("cloud.public_ip", "give the Elastic IP or its allocation_id"));
                    }
                    for id in [n.id, n.peer_id] {
                        match c.instance_ids.get(&id.to_string()) {
                            None => problems.push(problem("cloud.instance_ids", format!("no instance id for node {id}"))),
                            Some(i) if !i.starts_with("i-") || i.len() > 32 => {
                                problems.push(problem("cloud.instance_ids", format!("`{}` (node {id}) is not an EC2 instance id (i-…)", i)))
                            }
                            Some(_) => {}
                        }
                    }
                    if let Some(a) = c.allocation_id.as_ref().filter(|a| !a.starts_with("eipalloc-") || a.len() > 40) {
                        problems.push(problem("cloud.allocation_id", format!("`{}` is not an Elastic IP allocation id (eipalloc-…)", a)));
                    }
                    if c.region.is_empty() || !c.region.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
                        problems.push(problem("cloud.region", format!("`{}` is not a region name such as eu-south-1", c.region)));
                    }
                    if c.domain.is_empty() {
                        problems.push(problem("cloud.domain", "give the name operators reach the Master by"));
                    }
                    if let Some(e) = c.endpoint.as_ref().filter(|e| !(e.starts_with("https://") || e.starts_with("http://"))) {
                        problems.push(problem("cloud.endpoint", format!("`{}` is not an http(s) URL", e)));
                    }
                    if !(1000..=120_000).contains(&c.api_deadline_ms) {
                        problems.push(problem("cloud.api_deadline_ms", format!("{} is outside 1000..=120000", c.api_deadline_ms)));
                    }
                    if c.dns_check_interval_s == 0 {
                        problems.push(problem("cloud.dns_check_interval_s", "must be at least 1"));
                    }
                }
            }
        }
    }
    if let Some(fs) = &file.fs {
        if fs.paths.is_empty() {
            problems.push(problem("fs.paths", "list at least one directory to sync, or remove [fs]"));
        }
        for (i, p) in fs.paths.iter().enumerate() {
            if !p.is_absolute() {
                problems.push(problem(format!("fs.paths[{i}]"), format!("`{}` must be an absolute path", p.display())));
            }
        }
        if fs.rsync_port == 0 || fs.rsync_port == n.port {
            problems.push(problem("fs.rsync_port", format!("must be a port of its own (not 0, not node.port {})", n.port)));
        }
        if fs.verify_interval_s == 0 {
            problems.push(problem("fs.verify_interval_s", "must be at least 1 second"));
        }
        if fs.exclude.iter().any(|x| x.is_empty() || x.contains('\n')) {
            problems.push(problem("fs.exclude", "patterns must be non-empty single lines"));
        }
    }
    if let Some(api) = &file.api {
        let rsync = file.fs.as_ref().map(|f| f.rsync_port);
        if api.port == 0 || api.port == n.port || Some(api.port) == rsync {
            problems.push(problem("api.port", format!("must be a port of its own (not 0, not node.port {}, not fs.rsync_port)", n.port)));
        }
        if !api.token_file.is_absolute() {
            problems.push(problem("api.token_file", format!("`{}` must be an absolute path", api.token_file.display())));
        }
        match (&api.tls_cert_file, &api.tls_key_file) {
            (Some(_), None) => problems.push(problem("api.tls_key_file", "missing: TLS needs the certificate and its key")),
            (None, Some(_)) => problems.push(problem("api.tls_cert_file", "missing: TLS needs the certificate and its key")),
            _ => {}
        }
    }
    if let Some(m) = &file.mongo {
        if !m.uri.starts_with("mongodb://") {
            problems.push(problem("mongo.uri", format!("`{}`: expected mongodb://host:port/", m.uri)));
        }
        if m.replica_set.is_empty() {
            problems.push(problem("mongo.replica_set", "must name the replica set"));
        }
        for (field, v) in [("mongo.member", &m.member), ("mongo.peer_member", &m.peer_member)] {
            if v.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                problems.push(problem(field, format!("`{v}`: expected host:port as in the replica-set configuration")));
            }
        }
        if m.member == m.peer_member {
            problems.push(problem("mongo.peer_member", "equals mongo.member"));
        }
        if m.timeout_ms == 0 {
            problems.push(problem("mongo.timeout_ms", "must be greater than 0"));
        }
        if m.start_hook.is_some() != m.stop_hook.is_some() || (m.unit.is_some() && m.start_hook.is_some()) {
            problems.push(problem("mongo.start_hook", "give the unit, or both start_hook and stop_hook"));
        }
        if let Some(d) = &m.data_dir {
            if !d.is_absolute() || d.parent().is_none_or(|p| p == Path::new("/")) {
                problems.push(problem("mongo.data_dir", format!("`{}` must be an absolute path below a directory other than /", d.display())));
            }
        }
        // `mongodb://user:password@host`: the userinfo ends at the last '@' before the path.
        let authority = m.uri.trim_start_matches("mongodb://").split('/').next().unwrap_or_default();
        if authority.contains('@') {
            problems.push(problem("mongo.uri", "holds credentials: give the user as mongo.username and its password in mongo.password_file"));
        }
        match (&m.username, &m.password_file) {
            (Some(u), Some(f)) => {
                if u.is_empty() {
                    problems.push(problem("mongo.username", "must not be empty"));
                }
                if let Err(e) = std::fs::metadata(f) {
                    problems.push(problem("mongo.password_file", format!("{}: {e}", f.display())));
                }
            }
            (Some(_), None) => problems.push(problem("mongo.password_file", "missing: mongo.username needs its password file")),
            (None, Some(_)) => problems.push(problem("mongo.username", "missing: mongo.password_file is given without a user")),
            (None, None) => {}
        }
        if m.auth_source.is_empty() {
            problems.push(problem("mongo.auth_source", "must name the database holding the user"));
        }
    }
    if let Some(s) = &file.services {
        if s.units.is_empty() && s.start_hook.is_none() {
            problems.push(problem("services", "give systemd units or a start_hook, or remove [services]"));
        }
        if s.start_hook.is_some() != s.stop_hook.is_some() {
            problems.push(problem("services.stop_hook", "start_hook and stop_hook go together"));
        }
    }
    if let Some(db) = &file.db {
        if !db.dsn.starts_with("mysql://") && !db.dsn.starts_with("mariadb://") {
            problems.push(problem("db.dsn", "must be a mysql:// or mariadb:// URL"));
        }
        if db.peer_port == 0 {
            problems.push(problem("db.peer_port", "must be a port number above 0"));
        }
        if db.repl_user.is_empty() {
            problems.push(problem("db.repl_user", "must not be empty"));
        }
        if db.peer_admin_user.is_empty() {
            problems.push(problem("db.peer_admin_user", "must not be empty"));
        }
        for (field, path) in [("db.repl_password_file", &db.repl_password_file), ("db.peer_admin_password_file", &db.peer_admin_password_file)] {
            if let Err(e) = std::fs::metadata(path) {
                problems.push(problem(field, format!("{}: {e}", path.display())));
            }
        }
        if db.semi_sync_timeout_ms == 0 || db.semi_sync_timeout_ms > 60_000 {
            problems.push(problem("db.semi_sync_timeout_ms", "must be between 1 and 60000"));
        }
        if db.promote_timeout_ms == 0 {
            problems.push(problem("db.promote_timeout_ms", "must be greater than 0"));
        }
    }
    let lists = [
        ("shared_ip", file.shared_ips.len()),
        ("witness.hosts", file.witness.hosts.len()),
        ("fs.paths", file.fs.as_ref().map_or(0, |f| f.paths.len())),
        ("fs.exclude", file.fs.as_ref().map_or(0, |f| f.exclude.len())),
    ];
    for (field, len) in lists {
        if len > MAX_LIST {
            problems.push(problem(field, format!("{len} entries: at most {MAX_LIST}")));
        }
    }
    let t = &file.timing;
    let d = Timing::default();
    let timing = Timing {
        heartbeat_interval: t.heartbeat_interval_ms.unwrap_or(d.heartbeat_interval),
        failover_timeout: t.failover_timeout_ms.unwrap_or(d.failover_timeout),
        isolation_timeout: t.isolation_timeout_ms.unwrap_or(d.isolation_timeout),
        discovery_window: t.discovery_window_ms.unwrap_or(d.discovery_window),
        lone_slave_wait: t.lone_slave_wait_ms.unwrap_or(d.lone_slave_wait),
        handover_timeout: t.handover_timeout_ms.unwrap_or(d.handover_timeout),
        db_down_handover: file.db.as_ref().map_or(d.db_down_handover, |db| db.down_handover_ms),
        ..d
    };
    if let Some(ms) = t.vip_lease_ms.filter(|ms| *ms != 0 && (*ms < 2000 || *ms % 1000 != 0)) {
        problems.push(problem(
            "timing.vip_lease_ms",
            format!("{ms} ms: the kernel counts whole seconds and a lease needs room for missed renewals: 0 (none) or a multiple of 1000, at least 2000"),
        ));
    }
    if file.garp.count == 0 {
        problems.push(problem("garp.count", "send at least one gratuitous ARP"));
    }
    if file.garp.probe_count == 0 {
        problems.push(problem("garp.probe_count", "the ARP probe needs at least one probe"));
    }
    if file.garp.probe_wait_ms < 10 {
        problems.push(problem("garp.probe_wait_ms", "the ARP probe needs at least 10 ms to hear an answer"));
    }
    if let Some(a) = &file.arbiter {
        if a.kind != "etcd" {
            problems.push(problem("arbiter.kind", format!("`{}`: only \"etcd\" is supported", a.kind)));
        }
        if a.endpoints.is_empty() || a.endpoints.iter().any(|e| e.trim().is_empty()) {
            problems.push(problem("arbiter.endpoints", "list the etcd members' client URLs"));
        }
        if a.prefix.is_empty() || !a.prefix.starts_with('/') {
            problems.push(problem("arbiter.prefix", format!("`{}`: a key prefix starting with / (one per pair)", a.prefix)));
        }
        if a.op_timeout_ms == 0 {
            problems.push(problem("arbiter.op_timeout_ms", "must be greater than 0"));
        }
        let t = a.timing();
        if a.ttl_s == 0 || t.keep_for < 2 * t.refresh_every {
            problems.push(problem(
                "arbiter.ttl_s",
                format!("{} s leaves no room for refreshes within TTL less op_timeout_ms: at least {} s", a.ttl_s, (a.op_timeout_ms * 2 / 1000) + 2),
            ));
        }
        match (&a.username, &a.password_file) {
            (Some(_), None) => problems.push(problem("arbiter.password_file", "missing: arbiter.username needs its password file")),
            (None, Some(_)) => problems.push(problem("arbiter.username", "missing: arbiter.password_file is given without a user")),
            (_, Some(f)) if std::fs::metadata(f).is_err() => problems.push(problem("arbiter.password_file", format!("{}: not readable", f.display()))),
            _ => {}
        }
        use ridondato_adapters::arbiter_etcd::{scheme_mismatch, SchemeMismatch};
        match a.tls().map(|tls| scheme_mismatch(&a.endpoints, tls.is_some())) {
            Err(p) => problems.push(p),
            Ok(Some(SchemeMismatch::PlainWithTls(e))) => {
                problems.push(problem("arbiter.endpoints", format!("{e}: TLS is configured (arbiter.ca_file), so the endpoints must be https://")))
            }
            Ok(Some(SchemeMismatch::SecureWithoutCa(e))) => {
                problems.push(problem("arbiter.ca_file", format!("missing: {e} needs the CA that signed the members' certificates")))
            }
            Ok(None) => {}
        }
    }
    let core = Config {
        node: NodeId(n.id),
        peer: NodeId(n.peer_id),
        mode,
        components: Components {
            vip: mode == Mode::Lan,
            db: file.db.is_some(),
            mongo: file.mongo.is_some(),
            fs: file.fs.is_some(),
            services: file.services.is_some(),
        },
        timing,
        witnesses: file.witness.hosts.len() as u32,
        arp_probe: mode == Mode::Lan,
        // The adapter listens this long for each shared IP in turn.
        arp_probe_ms: file.garp.probe_wait_ms.saturating_mul(file.shared_ips.len().max(1) as u64),
        cloud_auto_failover: file.cloud.as_ref().is_some_and(|c| c.auto_failover),
        max_retries: 3,
        max_lag_on_failover: file.db.as_ref().map_or(0, |db| db.max_lag_on_failover),
        mongo_max_lag_on_failover_s: file.mongo.as_ref().map_or(0, |m| m.max_lag_on_failover_s),
        lease: file.arbiter.as_ref().map(ArbiterSection::timing),
        semi_sync: file.db.as_ref().is_some_and(|db| db.semi_sync),
    };
    if let Err(e) = core.validate() {
        // The core names its own settings; say them as the file spells them.
        let field = match e.field {
            "timing.db_down_handover_ms" => "db.down_handover_ms",
            "node.id" if n.id != n.peer_id => "node.id",
            "node.id" => "node.peer_id",
            f => f,
        };
        problems.push(problem(field, e.reason));
    }
    if problems.is_empty() {
        Ok(NodeConfig { file, core })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = 1
peer_id = 2
peer_ip = "198.18.0.2"
management_ip = "198.18.0.1"
replication_bandwidth_kib_s = 1000
secret_file = "/etc/ridondato/secret"

[[shared_ip]]
interface = "eth0"
address = "198.18.0.100"
prefix = 24
primary = true
"#;

    fn fields(text: &str) -> Vec<String> {
        parse(text).err().unwrap_or_default().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn etcd_tls_problems_are_named_by_field() {
        let dir = std::env::temp_dir().join(format!("ridondato-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["etcd".to_string()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        let write = |name: &str, text: &str| {
            let f = dir.join(name);
            std::fs::write(&f, text).expect("write");
            f.display().to_string()
        };
        let (ca, junk, pem_key) = (write("ca.pem", &ca.pem()), write("junk.pem", "not PEM"), write("key.pem", &key.serialize_pem()));
        let with = |endpoint: &str, extra: &str| format!("{GOOD}\n[arbiter]\nkind = \"etcd\"\nendpoints = [\"{endpoint}\"]\nprefix = \"/r\"\n{extra}");
        assert_eq!(fields(&with("https://198.18.0.9:2379", "")), vec!["arbiter.ca_file"], "https needs the CA");
        assert_eq!(fields(&with("https://198.18.0.9:2379", &format!("ca_file = \"{junk}\""))), vec!["arbiter.ca_file"], "a CA file without a certificate");
        assert_eq!(fields(&with("http://198.18.0.9:2379", &format!("ca_file = \"{ca}\""))), vec!["arbiter.endpoints"], "TLS with http://");
        assert_eq!(
            fields(&with("https://198.18.0.9:2379", &format!("ca_file = \"{ca}\"\ncert_file = \"{ca}\""))),
            vec!["arbiter.key_file"],
            "a certificate without its key"
        );
        assert_eq!(
            fields(&with("https://198.18.0.9:2379", &format!("ca_file = \"{ca}\"\ncert_file = \"{ca}\"\nkey_file = \"{junk}\""))),
            vec!["arbiter.key_file"],
            "a key file without a key"
        );
        assert_eq!(
            fields(&with("https://198.18.0.9:2379", &format!("cert_file = \"{ca}\"\nkey_file = \"{pem_key}\""))),
            vec!["arbiter.ca_file"],
            "a client certificate without the CA"
        );
        let good = parse(&with("https://198.18.0.9:2379", &format!("ca_file = \"{ca}\"\ncert_file = \"{ca}\"\nkey_file = \"{pem_key}\""))).expect("valid TLS");
        let tls = good.file.arbiter.as_ref().expect("arbiter").tls().expect("readable").expect("TLS");
        assert!(tls.identity.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_good_file_gives_the_core_config() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.core.node, NodeId(1));
        assert_eq!(c.core.mode, Mode::Lan);
        assert!(c.core.components.vip && !c.core.components.db);
        assert_eq!(c.core.timing, Timing::default());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let bad = GOOD.replace("prefix = 24", "prefix = 40").replace("replication_bandwidth_kib_s = 1000", "replication_bandwidth_kib_s = 0");
        assert_eq!(fields(&bad), vec!["node.replication_bandwidth_kib_s", "shared_ip[0].prefix"]);
    }

    #[test]
    fn a_mongo_section_is_checked_field_by_field() {
        let good = format!(
            "{GOOD}\n[mongo]\nuri = \"mongodb://127.0.0.1:27017/\"\nreplica_set = \"rs0\"\nmember = \"198.18.0.1:27017\"\npeer_member = \"198.18.0.2:27017\"\n"
        );
        let c = parse(&good).expect("valid");
        assert!(c.core.components.mongo);
        let bad = good
            .replace("mongodb://127.0.0.1:27017/", "http://x")
            .replace("peer_member = \"198.18.0.2:27017\"", "peer_member = \"198.18.0.2\"\nstart_hook = \"true\"\ndata_dir = \"/mongo\"");
        assert_eq!(fields(&bad), vec!["mongo.uri", "mongo.peer_member", "mongo.start_hook", "mongo.data_dir"]);
        // Credentials come from a file, never the URI; the user and the file go together.
        let pw = std::env::temp_dir().join(format!("ridondato-mongo-pw-{}", std::process::id()));
        std::fs::write(&pw, "s3cret\n").expect("write");
        let with = good.replace(
            "replica_set = \"rs0\"",
            &format!("replica_set = \"rs0\"\nusername = \"ridondato\"\npassword_file = \"{}\"\nmax_lag_on_failover_s = 3", pw.display()),
        );
        let c = parse(&with).expect("valid");
        assert_eq!(c.core.mongo_max_lag_on_failover_s, 3);
        let m = c.file.mongo.as_ref().expect("mongo");
        let cred = crate::daemon::mongo_credential(m).expect("read").expect("given");
        assert_eq!((cred.user.as_str(), cred.password.as_str(), cred.source.as_str()), ("ridondato", "s3cret", "admin"), "the newline is not part of it");
        let in_uri = with.replace("mongodb://127.0.0.1:27017/", "mongodb://root:pw@127.0.0.1:27017/");
        assert_eq!(fields(&in_uri), vec!["mongo.uri"]);
        let no_file = good.replace("replica_set = \"rs0\"", "replica_set = \"rs0\"\nusername = \"ridondato\"");
        assert_eq!(fields(&no_file), vec!["mongo.password_file"]);
        let missing = with.replace(&pw.display().to_string(), "/nonexistent/pw");
        assert_eq!(fields(&missing), vec!["mongo.password_file"]);
        std::fs::write(&pw, "\n").expect("write");
        let e = crate::daemon::mongo_credential(m).expect_err("empty");
        assert!(e.starts_with("mongo.password_file:") && e.contains("empty"), "{e}");
        let _ = std::fs::remove_file(&pw);
    }

    #[test]
    fn each_problem_is_named_as_the_file_spells_it() {
        let bad = GOOD.replace("peer_id = 2", "peer_id = 0");
        assert!(fields(&bad).contains(&"node.peer_id".to_string()), "{:?}", fields(&bad));
        let same = GOOD.replace("peer_id = 2", "peer_id = 1");
        assert_eq!(fields(&same), vec!["node.peer_id"]);
        let garp = format!("{GOOD}\n[garp]\nprobe_count = 0\n");
        assert_eq!(fields(&garp), vec!["garp.probe_count"]);
    }

    #[test]
    fn the_bandwidth_fields_old_name_is_refused_with_the_new_one() {
        let old = GOOD.replace("replication_bandwidth_kib_s = 1000", "replication_bandwidth_kbps = 1000");
        let problems = parse(&old).expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "node.replication_bandwidth_kbps");
        assert!(problems[0].reason.contains("replication_bandwidth_kib_s"), "{}", problems[0].reason);
    }

    #[test]
    fn the_vip_lease_is_whole_seconds_with_room_or_off() {
        assert_eq!(parse(GOOD).expect("valid").file.timing.vip_lease(), Some(std::time::Duration::from_secs(2)));
        let off = parse(&format!("{GOOD}\n[timing]\nvip_lease_ms = 0\n")).expect("valid");
        assert_eq!(off.file.timing.vip_lease(), None);
        for bad in ["1500", "1000", "2500"] {
            assert_eq!(fields(&format!("{GOOD}\n[timing]\nvip_lease_ms = {bad}\n")), vec!["timing.vip_lease_ms"], "{bad}");
        }
    }

    #[test]
    fn duplicate_shared_ips_long_values_and_long_lists_are_named() {
        let twice = format!("{GOOD}\n[[shared_ip]]\ninterface = \"eth0\"\naddress = \"198.18.0.100\"\nprefix = 24\n");
        assert!(fields(&twice).contains(&"shared_ip[1].address".to_string()), "{:?}", fields(&twice));
        let long = GOOD.replace("id = 1\n", &format!("id = 1\nmode = \"{}\"\n", "x".repeat(5000)));
        let err = parse(&long).expect_err("error");
        assert!(err[0].reason.len() < 400 && err[0].reason.ends_with("(cut)"), "{}", err[0].reason);
        let many: String = (0..70).map(|i| format!("\"198.18.9.{i}:9\", ")).collect();
        let lots = format!("{GOOD}\n[witness]\nhosts = [{many}]\n");
        assert!(fields(&lots).contains(&"witness.hosts".to_string()), "{:?}", fields(&lots));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        let err = parse(&format!("{GOOD}\n[timing]\nheartbeat_ms = 5\n")).expect_err("error");
        assert!(err[0].reason.contains("heartbeat_ms"), "{err:?}");
        let err = parse(&GOOD.replace("id = 1", "id = \"one\"")).expect_err("error");
        assert!(err[0].reason.contains("id"), "{err:?}");
    }

    #[test]
    fn a_file_sync_section_is_checked_and_turns_the_component_on() {
        let good = parse(&format!("{GOOD}\n[fs]\npaths = [\"/var/spool/tvox\"]\nexclude = [\"*.tmp\"]\n")).expect("valid");
        assert!(good.core.components.fs);
        let fs = good.file.fs.as_ref().expect("fs");
        assert_eq!((fs.rsync_port, fs.verify_interval_s), (8730, 300));
        let bad = format!("{GOOD}\n[fs]\npaths = [\"spool\"]\nexclude = [\"\"]\nrsync_port = 7400\nverify_interval_s = 0\n");
        assert_eq!(fields(&bad), vec!["fs.paths[0]", "fs.rsync_port", "fs.verify_interval_s", "fs.exclude"]);
    }

    #[test]
    fn timing_rules_of_the_core_are_checked() {
        let bad = format!("{GOOD}\n[timing]\nfailover_timeout_ms = 200\n");
        assert_eq!(fields(&bad), vec!["timing.failover_timeout_ms"]);
    }

    #[test]
    fn cloud_mode_needs_its_section_and_no_vip() {
        let bad = GOOD.replace("peer_ip = \"198.18.0.2\"", "peer_ip = \"198.18.0.2\"\nmode = \"cloud\"");
        assert_eq!(fields(&bad), vec!["shared_ip", "cloud"]);
    }

    #[test]
    fn a_cloud_section_is_checked_field_by_field() {
        let base = GOOD.split("[[shared_ip]]").next().unwrap_or_default().replace("id = 1\n", "id = 1\nmode = \"cloud\"\n");
        let good = format!(
            "{base}[cloud]\ndomain = \"pbx.example.com\"\npublic_ip = \"203.0.113.10\"\nregion = \"eu-south-1\"\nauto_failover = true\n[cloud.instance_ids]\n1 = \"i-0123456789abcdef0\"\n2 = \"i-0fedcba9876543210\"\n"
        );
        let c = parse(&good).expect("valid");
        assert!(c.core.mode == Mode::Cloud && c.core.cloud_auto_failover && !c.core.components.vip);
        let bad = good
            .replace("domain = \"pbx.example.com\"", "domain = \"\"\nendpoint = \"ftp://x\"\napi_deadline_ms = 10")
            .replace("eu-south-1", "EU South")
            .replace("2 = \"i-0fedcba9876543210\"", "2 = \"web-2\"")
            .replace("public_ip = \"203.0.113.10\"", "allocation_id = \"203.0.113.10\"");
        assert_eq!(fields(&bad), vec!["cloud.instance_ids", "cloud.allocation_id", "cloud.region", "cloud.domain", "cloud.endpoint", "cloud.api_deadline_ms"]);
    }
}
