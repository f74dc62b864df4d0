//! The DB resync (S11): rebuild this node's database from the Master's with `mariadb-dump`
//! piped into `mariadb`, progress in bytes, then take the dump's GTID position and replicate.
//! Cancelling (dropping the future) kills both processes; the node then stays a replica that
//! is not replicating, and says so, rather than pretending to be aligned (the core keeps it
//! flagged for resync until a copy completes).
//!
//! Nothing is overwritten before what this node holds is saved: a logical dump of every
//! non-system schema (with the binary-log position it was taken at) and a report of the
//! errant transactions, under `backup_dir/resync-<time>/`. A logical dump rather than a
//! `mariadb-backup` copy: it needs no extra package, restores with the plain `mariadb` client
//! on any server, and can be read to pick out the few rows that matter; a PBX's databases are
//! small enough that its size is not a concern.

use super::gtid::GtidPos;
use super::MariaDb;
use crate::traits::{AdapterError, AdapterResult, Db, ProgressFn};
use ridondato_core::{NodeId, Progress};
use sqlx::Row;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Schemas a dump never carries: each server keeps its own.
const SYSTEM: &str = "'mysql','information_schema','performance_schema','sys'";

pub(super) async fn rebuild(db: &MariaDb, peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
    let peer_opts = db.peer_opts(peer)?;
    let (host, port) = (peer_opts.get_host().to_string(), peer_opts.get_port());
    let mut remote = db.connect_peer(peer, std::time::Duration::from_secs(5)).await?;
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

    // What this node holds goes to disk first; a failure here stops the resync untouched.
    if let Some(dir) = save_local(db, peer, &mut remote).await? {
        tracing::warn!("resync db: this node's data was saved to {} before being overwritten", dir.display());
    }
    drop(remote);

    // Stop replicating and forget this node's own history: what follows replaces it.
    let mut c = db.admin().await?;
    for q in ["SET GLOBAL read_only = 1", "STOP SLAVE", "RESET SLAVE ALL", "RESET MASTER"] {
        sqlx::query(q).execute(&mut *c).await.map_err(|e| AdapterError::new(format!("{q}: {e}")))?;
    }
    for s in local_schemas(&mut c).await? {
        sqlx::query(&format!("DROP DATABASE `{}`", s.replace('`', ""))).execute(&mut *c).await.map_err(|e| AdapterError::new(format!("dropping {s}: {e}")))?;
    }

    let mut dump = tokio::process::Command::new("mariadb-dump");
    dump.args(DUMP_FLAGS).args(["--host", &host, "--port", &port.to_string(), "--user", &db.cfg.peer_admin.0]);
    dump.env("MYSQL_PWD", &db.cfg.peer_admin.1);
    dump.arg("--databases").args(&schemas);
    let mut local = tokio::process::Command::new("mariadb");
    local.args(local_client_args(db)).arg("--init-command=SET SESSION sql_log_bin=0");
    if let Ok(pw) = std::env::var("RIDONDATO_DB_ADMIN_PASSWORD") {
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

/// A consistent dump that carries its GTID position, routines, events and triggers.
const DUMP_FLAGS: [&str; 6] = ["--single-transaction", "--gtid", "--master-data=2", "--routines", "--events", "--triggers"];

/// How the command-line clients reach the local server: its socket when the DSN names one.
fn local_client_args(db: &MariaDb) -> Vec<String> {
    let l = &db.cfg.local;
    let mut v = match l.get_socket() {
        Some(s) => vec!["--socket".to_string(), s.display().to_string()],
        None => vec!["--host".to_string(), l.get_host().to_string(), "--port".to_string(), l.get_port().to_string()],
    };
    v.extend(["--user".to_string(), l.get_username().to_string()]);
    v
}

/// Saves this node's schemas and a report of its errant transactions before a resync
/// overwrites them. `None`: nothing here to save (no schema, no errant transaction).
async fn save_local(db: &MariaDb, peer: NodeId, remote: &mut sqlx::MySqlConnection) -> AdapterResult<Option<std::path::PathBuf>> {
    let mut c = db.admin().await?;
    let mine = db.pos(&mut c, "gtid_binlog_pos").await?;
    let theirs = db.pos(remote, "gtid_current_pos").await?;
    let (errant, ranges) = db.errant_against(peer).await.unwrap_or_else(|_| (mine.ahead_of(&theirs), mine.ahead_ranges(&theirs)));
    let schemas = local_schemas(&mut c).await?;
    drop(c);
    if schemas.is_empty() && errant == 0 {
        return Ok(None);
    }
    let base =
        db.cfg.backup_dir.clone().ok_or_else(|| AdapterError::new("no backup directory configured: refusing to overwrite this node's data without a copy"))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dir = base.join(format!("resync-{stamp}"));
    let io = |what: &str, e: std::io::Error| AdapterError::new(format!("saving this node's data ({what} in {}): {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the directory", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))?;
    let path = dir.join("local.sql");
    let file = std::fs::File::create(&path).map_err(|e| io("local.sql", e))?;
    let mut cmd = tokio::process::Command::new("mariadb-dump");
    cmd.args(DUMP_FLAGS).args(local_client_args(db)).arg("--databases").args(&schemas);
    if let Ok(pw) = std::env::var("RIDONDATO_DB_ADMIN_PASSWORD") {
        cmd.env("MYSQL_PWD", &pw);
    }
    if !schemas.is_empty() {
        // spawn, not output(): output() would capture stdout and leave the file empty.
        let child = cmd.stdout(file.try_clone().map_err(|e| io("local.sql", e))?).stderr(Stdio::piped()).kill_on_drop(true).spawn();
        let child = child.map_err(|e| AdapterError::new(format!("mariadb-dump of this node: {e}")))?;
        let out = child.wait_with_output().await.map_err(|e| AdapterError::new(format!("mariadb-dump of this node: {e}")))?;
        if !out.status.success() {
            return Err(AdapterError::new(format!("saving this node's data failed, nothing was overwritten: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
    }
    file.sync_all().map_err(|e| io("fsync local.sql", e))?;
    let report = format!(
        "saved by ridondato before a database resync from {peer}\nthis node's binary log position: {mine}\nthe Master's position: {theirs}\nerrant transactions (here, not on the Master): {errant}{}\nschemas dumped to local.sql: {}\nrestore with: mariadb < local.sql (on a scratch server, to pick out what to keep)\n",
        if ranges.is_empty() { String::new() } else { format!(" ({ranges})") },
        if schemas.is_empty() { "none".to_string() } else { schemas.join(", ") },
    );
    let rpath = dir.join("report.txt");
    std::fs::write(&rpath, report).map_err(|e| io("report.txt", e))?;
    std::fs::File::open(&rpath).and_then(|f| f.sync_all()).map_err(|e| io("fsync report.txt", e))?;
    std::fs::File::open(&dir).and_then(|f| f.sync_all()).map_err(|e| io("fsync the directory", e))?;
    Ok(Some(dir))
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
