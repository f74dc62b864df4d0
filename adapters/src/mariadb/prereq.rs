//! The MariaDB settings and accounts the pair relies on, checked at start: each finding names
//! the setting, what it is and what it should be. Fatal ones make a failover unsafe (no binary
//! log, no strict GTIDs, two servers with one id); the others weaken durability.

use super::MariaDb;
use crate::traits::AdapterResult;
use ridondato_core::NodeId;
use sqlx::Row;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub setting: String,
    pub found: String,
    pub wanted: String,
    /// The pair cannot fail over safely with this setting.
    pub fatal: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.fatal { "error" } else { "warning" };
        write!(f, "{level}: MariaDB {} is {}, wanted {}", self.setting, self.found, self.wanted)
    }
}

/// Privileges the peer-admin account needs on the peer (checks and resync dumps).
const PEER_PRIVILEGES: [&str; 6] = ["SELECT", "RELOAD", "SHOW VIEW", "EVENT", "TRIGGER", "BINLOG MONITOR"];

/// Checks the local server, and the peer's when it answers. `Err` only when the local server
/// does not answer (checked again later by the caller). The fatal findings also go into the
/// adapter's reports from now on (the core shows them as the `db-misconfigured` alarm).
pub async fn check(db: &MariaDb, peer: NodeId) -> AdapterResult<Vec<Finding>> {
    let mut c = db.admin().await?;
    let mut out = Vec::new();
    let on = |v: &str| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON");
    let mut want = |setting: &str, found: String, ok: bool, wanted: &str, fatal: bool| {
        if !ok {
            out.push(Finding { setting: setting.into(), found, wanted: wanted.into(), fatal });
        }
    };
    for (name, fatal, why) in [
        ("log_bin", true, "ON (the Slave replicates from the binary log)"),
        ("log_slave_updates", true, "ON (a promoted Slave must serve what it replicated)"),
        ("gtid_strict_mode", true, "ON (errant transactions are found, not applied)"),
    ] {
        let v = db.var(&mut c, name).await?;
        want(name, v.clone(), on(&v), why, fatal);
    }
    let sync = db.var(&mut c, "sync_binlog").await?;
    want("sync_binlog", sync.clone(), sync == "1", "1 (a power loss keeps every committed transaction in the binary log)", false);
    let flush = db.var(&mut c, "innodb_flush_log_at_trx_commit").await?;
    want("innodb_flush_log_at_trx_commit", flush.clone(), flush == "1", "1 (durable commits)", false);
    let ro = db.var(&mut c, "read_only").await?;
    let ro_ok = !matches!(ro.to_ascii_uppercase().as_str(), "0" | "OFF");
    want(
        "read_only",
        ro.clone(),
        ro_ok,
        "ON at server start (read_only=1 in its configuration: a restarted server must not take writes until ridondato decides)",
        false,
    );
    if db.cfg.semi_sync {
        let found = db.var(&mut c, "rpl_semi_sync_master_enabled").await;
        want(
            "rpl_semi_sync_master_enabled",
            found.as_ref().map_or_else(|e| e.0.clone(), Clone::clone),
            found.is_ok(),
            "present (semi-sync is built into MariaDB 10.3 and later)",
            true,
        );
    }
    let my_id = db.var(&mut c, "server_id").await?;
    drop(c);
    match db.connect_peer(peer, Duration::from_secs(2)).await {
        Ok(mut pc) => {
            let theirs = db.var(&mut pc, "server_id").await.unwrap_or_default();
            want("server_id", format!("{my_id} here and {theirs} on {peer}"), my_id != theirs, "distinct on the two servers", true);
            let grants: Vec<String> = sqlx::query("SHOW GRANTS")
                .fetch_all(&mut pc)
                .await
                .map(|rows| rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()).collect())
                .unwrap_or_default();
            let all = grants.join(" ").to_ascii_uppercase();
            let missing: Vec<&str> =
                if all.contains("ALL PRIVILEGES ON *.*") { Vec::new() } else { PEER_PRIVILEGES.iter().copied().filter(|p| !all.contains(p)).collect() };
            want(
                &format!("privileges of the peer-admin account {} on {peer}", db.cfg.peer_admin.0),
                format!("missing {}", missing.join(", ")),
                missing.is_empty(),
                &PEER_PRIVILEGES.join(", "),
                false,
            );
        }
        Err(e) => want("the peer-admin account", e.0, false, "able to connect to the peer's server over TCP", false),
    }
    let fatal = out.iter().filter(|f| f.fatal).map(|f| format!("{} is {}, wanted {}", f.setting, f.found, f.wanted)).collect();
    if let Ok(mut slot) = db.fatal_findings.lock() {
        *slot = fatal;
    }
    Ok(out)
}
