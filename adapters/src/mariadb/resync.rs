//! The DB resync (S11): rebuild this node's database from the Master's with `mariadb-dump`
//! piped into `mariadb`, progress in bytes, then take the dump's GTID position and replicate.
//! Cancelling (dropping the future) kills both processes; the node then stays a replica that
//! is not replicating, and says so, rather than pretending to be aligned.

use super::gtid::GtidPos;
use super::MariaDb;
use crate::traits::{AdapterError, AdapterResult, Db, ProgressFn};
use ridondato_core::{NodeId, Progress};
use sqlx::{Connection, Row};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Schemas a dump never carries: each server keeps its own.
const SYSTEM: &str = "'mysql','information_schema','performance_schema','sys'";

pub(super) async fn rebuild(db: &MariaDb, peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
    let (host, port) = db.cfg.peers.get(&peer).cloned().ok_or_else(|| AdapterError::new(format!("no database address for {peer}")))?;
    let opts = db.cfg.local.clone().host(&host).port(port);
    let mut remote = sqlx::MySqlConnection::connect_with(&opts).await.map_err(|e| AdapterError::new(format!("connecting to the Master's database: {e}")))?;
    let schemas: Vec<String> = sqlx::query(&format!("SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SYSTEM})"))
        .fetch_all(&mut remote)
        .await
        .map_err(|e| AdapterError::new(format!("listing the Master's schemas: {e}")))?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    let total: u64 = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS UNSIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ({SYSTEM})"
    ))
    .fetch_one(&mut remote)
    .await
    .ok()
    .and_then(|r| r.try_get::<u64, _>(0).ok())
    .unwrap_or(0)
    .max(1);
    progress(Progress::of(0, total));

    // Stop replicating and forget this node's own history: what follows replaces it.
    let mut c = db.admin().await?;
    for q in ["SET GLOBAL read_only = 1", "STOP SLAVE", "RESET SLAVE ALL", "RESET MASTER"] {
        sqlx::query(q).execute(&mut *c).await.map_err(|e| AdapterError::new(format!("{q}: {e}")))?;
    }
    for s in local_schemas(&mut c).await? {
        sqlx::query(&format!("DROP DATABASE `{}`", s.replace('`', ""))).execute(&mut *c).await.map_err(|e| AdapterError::new(format!("dropping {s}: {e}")))?;
    }

    let user = db.cfg.local.get_username().to_string();
    let mut dump = tokio::process::Command::new("mariadb-dump");
    dump.args([
        "--single-transaction",
        "--gtid",
        "--master-data=2",
        "--routines",
        "--events",
        "--triggers",
        "--host",
        &host,
        "--port",
        &port.to_string(),
        "--user",
        &user,
    ]);
    dump.arg("--databases").args(&schemas);
    let mut local = tokio::process::Command::new("mariadb");
    let (lhost, lport) = (db.cfg.local.get_host().to_string(), db.cfg.local.get_port());
    local.args(["--host", &lhost, "--port", &lport.to_string(), "--user", &user, "--init-command=SET SESSION sql_log_bin=0"]);
    if let Ok(pw) = std::env::var("RIDONDATO_DB_ADMIN_PASSWORD") {
        dump.env("MYSQL_PWD", &pw);
        local.env("MYSQL_PWD", &pw);
    }
    let mut dump =
        dump.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(|e| AdapterError::new(format!("mariadb-dump: {e}")))?;
    let mut load = local.stdin(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(|e| AdapterError::new(format!("mariadb: {e}")))?;
    let (Some(mut out), Some(mut inp)) = (dump.stdout.take(), load.stdin.take()) else {
        return Err(AdapterError::new("no pipe to the dump"));
    };
    let mut buf = vec![0u8; 64 * 1024];
    let (mut done, mut head, mut position) = (0u64, Vec::new(), None);
    loop {
        let n = out.read(&mut buf).await.map_err(|e| AdapterError::new(format!("reading the dump: {e}")))?;
        if n == 0 {
            break;
        }
        if position.is_none() && head.len() < 1 << 20 {
            head.extend_from_slice(&buf[..n]);
            position = gtid_of_dump(&head);
        }
        inp.write_all(&buf[..n]).await.map_err(|e| AdapterError::new(format!("loading the dump: {e}")))?;
        done += n as u64;
        progress(Progress::of(done.min(total), total.max(done)));
    }
    drop(inp);
    let d = dump.wait_with_output().await.map_err(|e| AdapterError::new(e.to_string()))?;
    let l = load.wait_with_output().await.map_err(|e| AdapterError::new(e.to_string()))?;
    if !d.status.success() {
        return Err(AdapterError::new(format!("mariadb-dump failed: {}", String::from_utf8_lossy(&d.stderr).trim())));
    }
    if !l.status.success() {
        return Err(AdapterError::new(format!("loading the dump failed: {}", String::from_utf8_lossy(&l.stderr).trim())));
    }
    let position = position.ok_or_else(|| AdapterError::new("the dump carries no GTID position"))?;
    sqlx::query(&format!("SET GLOBAL gtid_slave_pos = '{position}'")).execute(&mut *c).await.map_err(|e| AdapterError::new(format!("gtid_slave_pos: {e}")))?;
    drop(c);
    db.replicate_from(peer).await?;
    progress(Progress::of(total.max(done), total.max(done)));
    Ok(())
}

async fn local_schemas(c: &mut sqlx::MySqlConnection) -> AdapterResult<Vec<String>> {
    Ok(sqlx::query(&format!("SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SYSTEM})"))
        .fetch_all(c)
        .await
        .map_err(|e| AdapterError::new(format!("listing schemas: {e}")))?
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect())
}

/// The position a `--gtid --master-data=2` dump was taken at (a comment near its top).
fn gtid_of_dump(head: &[u8]) -> Option<GtidPos> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().find(|l| l.contains("gtid_slave_pos"))?;
    let quoted = line.split('\'').nth(1)?;
    GtidPos::parse(quoted).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dump_position_is_read_from_its_comment() {
        let head = b"-- MariaDB dump\n--\n-- Preferably use GTID to start replication from GTID position:\n\n-- SET GLOBAL gtid_slave_pos='0-1-25';\n";
        assert_eq!(super::gtid_of_dump(head).map(|p| p.seq(0)), Some(25));
        assert_eq!(super::gtid_of_dump(b"-- nothing"), None);
    }
}
