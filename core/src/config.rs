//! The core's view of the configuration: identities, mode, components and timing.
//!
//! The daemon parses TOML into this (and more); the core validates what it relies on, naming
//! the field and the reason, so that a bad file never yields a half-configured node.

use crate::types::{Mode, NodeId};
use serde::{Deserialize, Serialize};

/// Which outside worlds this node manages. A pair without MongoDB simply has `mongo: false`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    pub vip: bool,
    pub db: bool,
    pub mongo: bool,
    pub fs: bool,
    pub services: bool,
}

impl Components {
    pub const ALL: Components = Components { vip: true, db: true, mongo: true, fs: true, services: true };
}

/// Timing, all in milliseconds. Defaults give a failover under half a second at an 80 ms heartbeat.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// How often a heartbeat is sent.
    pub heartbeat_interval: u64,
    /// A Slave that has not heard its Master for this long asks the arbiter and takes over.
    /// The defaults (450 ms at an 80 ms heartbeat) let five heartbeats in a row be lost without
    /// a takeover attempt, as 600 ms at 100 ms did: under 5 % random loss, six in a row go
    /// about once in 70 hours. A Slave that asks while its Master lives is refused by the
    /// arbiter (on a LAN, the Master's kernel answers ARP for the VIP).
    pub failover_timeout: u64,
    /// A Master that hears neither peer nor witness for this long steps down. Shorter than
    /// `failover_timeout`, so an isolated Master lets go before the Slave takes over.
    pub isolation_timeout: u64,
    /// How long a booting node listens for a peer before deciding alone (S10).
    pub discovery_window: u64,
    /// A node whose last role was Slave and who hears nobody waits this long before promoting
    /// alone: its data may be behind the absent Master's.
    pub lone_slave_wait: u64,
    /// After the arbiter refuses a takeover, wait this long before asking again.
    pub arbiter_recheck: u64,
    /// First retry delay of a failed action; doubles up to `retry_max`.
    pub retry_base: u64,
    pub retry_max: u64,
    /// A planned hand-over that has not produced a new Master in this time is rolled back.
    pub handover_timeout: u64,
    /// In cloud mode, how often a Master checks that the public IP is still associated with it.
    pub cloud_check_interval: u64,
    /// LAN: while the peer is silent, how often a Master probes ARP for its own VIP to catch
    /// another host answering (RFC 5227 ongoing conflict detection).
    pub conflict_check_interval: u64,
    /// In maintenance, an isolated Master keeps its role this long (a network restart during an
    /// upgrade) before stepping down all the same; a Slave that saw it in maintenance waits this
    /// long, and a failover timeout more, before taking over once maintenance ends.
    pub maintenance_isolation_timeout: u64,
    /// A database condition (replication stopped, no replica connected, semi-sync off) must
    /// last this long before it is alarmed and acted on: reports lag behind restarts.
    pub db_grace: u64,
    /// A Master whose own database stays unreachable this long hands the role to a healthy,
    /// caught-up Slave (as a planned switch-over would).
    pub db_down_handover: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: 80,
            failover_timeout: 450,
            // Half of what is left up to the failover timeout, 100 ms, is the Master's budget
            // for its witness check (`witness.timeout_ms`, 100 ms by default).
            isolation_timeout: 250,
            discovery_window: 1500,
            lone_slave_wait: 60_000,
            arbiter_recheck: 1000,
            retry_base: 200,
            retry_max: 5000,
            handover_timeout: 10_000,
            cloud_check_interval: 1000,
            conflict_check_interval: 1000,
            maintenance_isolation_timeout: 30_000,
            db_grace: 2000,
            db_down_handover: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub node: NodeId,
    pub peer: NodeId,
    pub mode: Mode,
    pub components: Components,
    pub timing: Timing,
    /// Number of witness hosts configured (0: none). Their reachability is asked of an adapter.
    pub witnesses: u32,
    /// LAN: refuse to raise the VIP while an ARP probe shows another host answering for it.
    pub arp_probe: bool,
    /// How long one ARP probe of every shared IP listens (ms): a Slave times its look-ahead
    /// probe to end at the failover deadline with it ([`crate::vip_watch`]).
    pub arp_probe_ms: u64,
    /// Cloud: the seed makes switch-over manual (S14); this turns automatic failover on (B5).
    pub cloud_auto_failover: bool,
    /// Non-critical actions are retried this many times before the node raises an alarm and
    /// goes on without them (critical ones, such as persisting the epoch, retry forever).
    pub max_retries: u32,
    /// Promotion policy: the most transactions a node may be *known* to lack (the Master's
    /// last reported position minus what this node received) and still become Master
    /// automatically, when the Master did not report semi-sync active. Default 0.
    pub max_lag_on_failover: u64,
    /// The same for MongoDB: how many seconds of writes (the optimes' timestamps) the Slave's
    /// member may be known to lack. Default 0: any known gap refuses the automatic takeover.
    pub mongo_max_lag_on_failover_s: u32,
    /// The database is configured for semi-sync: its absence on a Master is an alarm.
    pub semi_sync: bool,
    /// The etcd lease arbiter (B11), when configured.
    #[serde(default)]
    pub lease: Option<crate::lease::LeaseTiming>,
}

impl Config {
    /// A LAN node with every component and default timing.
    pub fn lan(node: NodeId, peer: NodeId) -> Config {
        Config {
            node,
            peer,
            mode: Mode::Lan,
            components: Components::ALL,
            timing: Timing::default(),
            witnesses: 0,
            arp_probe: true,
            arp_probe_ms: 80,
            cloud_auto_failover: false,
            max_retries: 3,
            max_lag_on_failover: 0,
            mongo_max_lag_on_failover_s: 0,
            lease: None,
            semi_sync: true,
        }
    }

    /// Checks every rule the core relies on. The error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.timing;
        let bad = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.node == self.peer {
            return bad("node.id", format!("equals the peer's id ({})", self.peer.0));
        }
        if t.heartbeat_interval == 0 {
            return bad("timing.heartbeat_interval_ms", "must be greater than 0".into());
        }
        if t.failover_timeout < 3 * t.heartbeat_interval {
            return bad(
                "timing.failover_timeout_ms",
                format!("{} ms is less than 3 heartbeats ({} ms): one lost packet would fail over", t.failover_timeout, 3 * t.heartbeat_interval),
            );
        }
        if t.isolation_timeout < 2 * t.heartbeat_interval || t.isolation_timeout >= t.failover_timeout {
            return bad(
                "timing.isolation_timeout_ms",
                format!(
                    "{} ms must be at least 2 heartbeats and below failover_timeout_ms ({} ms), so an \
                     isolated Master steps down before the Slave takes over",
                    t.isolation_timeout, t.failover_timeout
                ),
            );
        }
        if t.discovery_window < t.failover_timeout {
            return bad("timing.discovery_window_ms", format!("{} ms is shorter than failover_timeout_ms ({} ms)", t.discovery_window, t.failover_timeout));
        }
        if t.retry_base == 0 || t.retry_max < t.retry_base {
            return bad("timing.retry_max_ms", "retry_base_ms must be > 0 and retry_max_ms >= retry_base_ms".into());
        }
        for (field, v) in [
            ("timing.arbiter_recheck_ms", t.arbiter_recheck),
            ("timing.handover_timeout_ms", t.handover_timeout),
            ("timing.cloud_check_interval_ms", t.cloud_check_interval),
            ("timing.conflict_check_interval_ms", t.conflict_check_interval),
            ("timing.maintenance_isolation_timeout_ms", t.maintenance_isolation_timeout),
            ("timing.db_grace_ms", t.db_grace),
            ("timing.db_down_handover_ms", t.db_down_handover),
        ] {
            if v == 0 {
                return bad(field, "must be greater than 0".into());
            }
        }
        if self.mode == Mode::Cloud && self.components.vip {
            return bad("mode", "cloud mode has no virtual IP: remove [[shared_ip]] or use mode = \"lan\"".into());
        }
        Ok(())
    }
}

/// A configuration rule broken: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}
