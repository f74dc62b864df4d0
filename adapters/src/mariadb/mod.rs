//! The MariaDB adapter (feature `mariadb`): the Slave is a GTID replica of the Master
//! (`MASTER_USE_GTID=slave_pos`); promotion applies everything received, stops and resets
//! replication and opens writes; fencing sets read_only, kills client sessions and verifies.
//! Replication is never started behind the daemon's back: run mariadbd with
//! `--skip-slave-start`. Its own statements run with `sql_log_bin=0`, so the adapter never
//! creates a local GTID that would later be errant.

pub mod gtid;
pub mod prereq;
mod resync;
pub mod testkit;

use crate::traits::{AdapterError, AdapterResult, Db, DbReport, ProgressFn};
use async_trait::async_trait;
use gtid::GtidPos;
use ridondato_core::{DbFacts, NodeId, Position, Replication};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, MySqlConnection, MySqlPool, Row};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct MariaDbConfig {
    /// The local server, as an administrator (socket or TCP).
    pub local: MySqlConnectOptions,
    /// Where each node's server listens, as seen from here (management network).
    pub peers: BTreeMap<NodeId, (String, u16)>,
    pub repl_user: String,
    pub repl_password: String,
    /// The account used on the peer's server (checks before promotion, errant-set comparison,
    /// resync dumps): user and password. Always over TCP to the peer's address.
    pub peer_admin: (String, String),
    /// The application's account, checked for privileges that bypass read_only.
    pub app_user: Option<String>,
    pub semi_sync: bool,
    /// How long a Master's commit waits for the replica's acknowledgement before falling back
    /// to asynchronous replication (an alarm says so).
    pub semi_sync_timeout: Duration,
    /// How long promotion and catch-up wait for the relay log to be applied.
    pub apply_timeout: Duration,
    /// Where a resync saves what it is about to overwrite (under the state directory).
    pub backup_dir: Option<std::path::PathBuf>,
}

/// Cheap to clone: the pool and the findings are shared.
#[derive(Clone, Debug)]
pub struct MariaDb {
    pool: MySqlPool,
    pub(crate) cfg: MariaDbConfig,
    /// The fatal findings of the last prerequisite check (`prereq::check`), carried in every
    /// report so that the status shows them as an alarm until they are fixed.
    pub(crate) fatal_findings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Ends the sessions whose ids are the first column of `rows`. One that ended by itself
/// meanwhile is not a failure.
async fn kill_connections(c: &mut MySqlConnection, rows: &[sqlx::mysql::MySqlRow]) -> AdapterResult<()> {
    for r in rows {
        let id: i64 = r.try_get(0).map_err(db_err("session id"))?;
        let _ = sqlx::query(&format!("KILL CONNECTION {id}")).execute(&mut *c).await;
    }
    Ok(())
}

fn db_err(what: &str) -> impl Fn(sqlx::Error) -> AdapterError + '_ {
    move |e| AdapterError::new(format!("{what}: {e}"))
}

impl MariaDb {
    pub fn new(cfg: MariaDbConfig) -> MariaDb {
        // Lazy: the daemon starts even while the local server is still starting.
        let pool = MySqlPoolOptions::new().max_connections(3).acquire_timeout(Duration::from_secs(2)).connect_lazy_with(cfg.local.clone());
        MariaDb { pool, cfg, fatal_findings: Default::default() }
    }

    /// One admin connection that writes nothing to the binary log.
    pub(crate) async fn admin(&self) -> AdapterResult<sqlx::pool::PoolConnection<sqlx::MySql>> {
        let mut c = self.pool.acquire().await.map_err(db_err("connecting to the local database"))?;
        sqlx::query("SET SESSION sql_log_bin = 0").execute(&mut *c).await.map_err(db_err("sql_log_bin"))?;
        Ok(c)
    }

    /// `admin()`, but a server that refuses connections is reported at once: the pool retries
    /// a refused connect until its acquire timeout (2 s), which would delay the "database
    /// down" alarm and the Master's hand-over by as much. After 200 ms without a connection, a
    /// bare connect tells a dead server from a busy pool. (When the server is up, that bare
    /// connect closes before the handshake: one "aborted connect" in its counters, never a
    /// host block, since the host cache skips sockets and loopback addresses.)
    async fn admin_or_refused(&self) -> AdapterResult<sqlx::pool::PoolConnection<sqlx::MySql>> {
        let acquire = self.admin();
        tokio::pin!(acquire);
        tokio::select! {
            c = &mut acquire => return c,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let l = &self.cfg.local;
        let refused = match l.get_socket() {
            Some(path) => tokio::net::UnixStream::connect(path).await.err(),
            None => tokio::net::TcpStream::connect((l.get_host(), l.get_port())).await.err(),
        };
        match refused {
            Some(e) => Err(AdapterError::new(format!("the local database refuses connections: {e}"))),
            None => acquire.await,
        }
    }

    async fn var(&self, c: &mut MySqlConnection, name: &str) -> AdapterResult<String> {
        let row = sqlx::query(&format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)")).fetch_one(c).await.map_err(db_err(name))?;
        Ok(row.try_get::<Option<String>, _>(0).map_err(db_err(name))?.unwrap_or_default())
    }

    async fn pos(&self, c: &mut MySqlConnection, name: &str) -> AdapterResult<GtidPos> {
        GtidPos::parse(&self.var(c, name).await?).map_err(AdapterError::new)
    }

    /// How to reach a peer's server: built afresh (never derived from the local options, whose
    /// Unix socket would win over any host), over TCP, as the peer-admin account.
    pub fn peer_opts(&self, peer: NodeId) -> AdapterResult<MySqlConnectOptions> {
        let (host, port) = self.cfg.peers.get(&peer).cloned().ok_or_else(|| AdapterError::new(format!("no database address for {peer}")))?;
        let (user, password) = &self.cfg.peer_admin;
        Ok(MySqlConnectOptions::new().host(&host).port(port).username(user).password(password))
    }

    /// A connection to a peer's server, bounded in time.
    pub(crate) async fn connect_peer(&self, peer: NodeId, within: Duration) -> AdapterResult<MySqlConnection> {
        let opts = self.peer_opts(peer)?;
        let (host, port) = (opts.get_host().to_string(), opts.get_port());
        match tokio::time::timeout(within, MySqlConnection::connect_with(&opts)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(AdapterError::new(format!("connecting to {peer}'s database at {host}:{port} as {}: {e}", self.cfg.peer_admin.0))),
            Err(_) => Err(AdapterError::new(format!("{peer}'s database at {host}:{port} did not answer within {} ms", within.as_millis()))),
        }
    }

    /// Errant transactions: what this server's binary log holds beyond the peer's position,
    /// domain by domain (exact count and GTID ranges).
    pub async fn errant_against(&self, peer: NodeId) -> AdapterResult<(u64, String)> {
        let mut pc = self.connect_peer(peer, Duration::from_secs(2)).await?;
        let theirs = gtid::parse_state(&self.var(&mut pc, "gtid_binlog_state").await?).map_err(AdapterError::new)?;
        let mut c = self.admin().await?;
        let mine = gtid::parse_state(&self.var(&mut c, "gtid_binlog_state").await?).map_err(AdapterError::new)?;
        let me: u32 = self.var(&mut c, "server_id").await?.parse().map_err(|_| AdapterError::new("server_id is not a number"))?;
        Ok(gtid::errant(&mine, &theirs, me))
    }

    /// read_only is off (a boolean in some versions, an enum — OFF, ON, NO_LOCK... — in others).
    async fn writable(&self, c: &mut MySqlConnection) -> AdapterResult<bool> {
        let v = self.var(c, "read_only").await?;
        Ok(matches!(v.to_ascii_uppercase().as_str(), "0" | "OFF"))
    }

    /// `SHOW SLAVE STATUS` as column name -> value (empty when not a replica).
    async fn slave_status(&self, c: &mut MySqlConnection) -> AdapterResult<BTreeMap<String, String>> {
        let rows = sqlx::query("SHOW SLAVE STATUS").fetch_all(c).await.map_err(db_err("SHOW SLAVE STATUS"))?;
        let mut m = BTreeMap::new();
        if let Some(row) = rows.first() {
            use sqlx::Column;
            for (i, col) in row.columns().iter().enumerate() {
                // Columns come as text or as integers of various widths and signs.
                let v = row
                    .try_get::<Option<String>, _>(i)
                    .ok()
                    .flatten()
                    .or_else(|| row.try_get::<Option<i64>, _>(i).ok().flatten().map(|n| n.to_string()))
                    .or_else(|| row.try_get::<Option<u64>, _>(i).ok().flatten().map(|n| n.to_string()))
                    .or_else(|| row.try_get::<Option<u32>, _>(i).ok().flatten().map(|n| n.to_string()))
                    .or_else(|| row.try_get::<Option<i32>, _>(i).ok().flatten().map(|n| n.to_string()));
                m.insert(col.name().to_string(), v.unwrap_or_default());
            }
        }
        Ok(m)
    }

    /// Never open writes beside a peer database that still takes them (an old Master slow to
    /// fence itself). It is not fenced from here: which claim is newer is the core's call. A
    /// peer that cannot be reached (powered off, its server down) takes no writes either; a
    /// peer that answers and is writable does. The question goes to the peer's address over
    /// TCP as the peer-admin account (`peer_opts`), never to the local socket.
    async fn peers_not_writable(&self) -> AdapterResult<()> {
        for peer in self.cfg.peers.keys() {
            if let Ok(mut pc) = self.connect_peer(*peer, Duration::from_millis(300)).await {
                if self.writable(&mut pc).await.unwrap_or(false) {
                    return Err(AdapterError::new(format!("the database of {peer} still takes writes; waiting for it to be fenced")));
                }
            }
        }
        Ok(())
    }

    /// Ends the replication receiver's connection (its thread then stops by itself).
    async fn end_receiver(&self, c: &mut MySqlConnection) -> AdapterResult<()> {
        let io = sqlx::query("SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'")
            .fetch_all(&mut *c)
            .await
            .map_err(db_err("finding the replication receiver"))?;
        kill_connections(c, &io).await
    }

    /// After a promotion: wait for the receiver to stop, apply what it left, then drop the
    /// replica configuration (RESET SLAVE ALL deletes the relay log, so it must be applied).
    async fn forget_master(&self, at_least: u64) -> AdapterResult<()> {
        let mut c = self.admin().await?;
        sqlx::query("STOP SLAVE IO_THREAD").execute(&mut *c).await.map_err(db_err("STOP SLAVE IO_THREAD"))?;
        self.wait_applied(&mut c, at_least).await?;
        for q in ["STOP SLAVE", "RESET SLAVE ALL"] {
            sqlx::query(q).execute(&mut *c).await.map_err(db_err(q))?;
        }
        Ok(())
    }

    /// Waits until the received relay log is applied and `at_least` is reached.
    async fn wait_applied(&self, c: &mut MySqlConnection, at_least: u64) -> AdapterResult<()> {
        let start = Instant::now();
        loop {
            let slave = self.pos(c, "gtid_slave_pos").await?;
            let current = self.pos(c, "gtid_current_pos").await?;
            let st = self.slave_status(c).await?;
            let received = st.get("Gtid_IO_Pos").map(|s| GtidPos::parse(s).unwrap_or_default()).unwrap_or_default();
            let applied = slave.merged(&current);
            // Every domain received must be applied, and the total must reach `at_least`.
            let behind = received.ahead_of(&applied);
            if applied.total() >= at_least && behind == 0 {
                return Ok(());
            }
            if start.elapsed() > self.cfg.apply_timeout {
                return Err(AdapterError::new(format!(
                    "after {} ms the database holds {applied} ({} transactions), needs {at_least}; {behind} received but not applied",
                    self.cfg.apply_timeout.as_millis(),
                    applied.total(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Warns when the application's account holds a privilege that writes through read_only
    /// (in 10.11, SUPER and READ ONLY ADMIN do): such writes on the Slave become errant GTIDs.
    pub async fn check_app_account(&self) -> AdapterResult<Option<String>> {
        let Some(user) = self.cfg.app_user.clone() else { return Ok(None) };
        let mut c = self.admin().await?;
        let rows = sqlx::query("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE LIKE ?")
            .bind(format!("'{user}'@%"))
            .fetch_all(&mut *c)
            .await
            .map_err(db_err("reading privileges"))?;
        let bad: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()).filter(|p| p == "SUPER" || p == "READ ONLY ADMIN").collect();
        Ok((!bad.is_empty())
            .then(|| format!("the application account {user} holds {}: it can write on a read-only Slave and create errant transactions", bad.join(" and "))))
    }
}

#[async_trait]
impl Db for MariaDb {
    async fn catch_up(&self, position: Position) -> AdapterResult<()> {
        let mut c = self.admin().await?;
        self.wait_applied(&mut c, position.0).await
    }

    async fn promote(&self, wait_for: Option<Position>) -> AdapterResult<()> {
        let mut c = self.admin().await?;
        // The peer check (up to 300 ms against a powered-off peer) runs beside the wait for the
        // relay log: neither changes anything, and both must pass before writes open.
        let replica = !self.slave_status(&mut c).await?.is_empty();
        let at_least = wait_for.map_or(0, |p| p.0);
        let (peer, applied) = tokio::join!(self.peers_not_writable(), async {
            match replica {
                true => self.wait_applied(&mut c, at_least).await,
                false => Ok(()),
            }
        });
        peer?;
        applied?;
        if replica {
            // Stop receiving, then apply everything received. The receiving thread's
            // connection is ended rather than waited for: STOP SLAVE waits for that thread,
            // which MariaDB re-signals only every 2 s while it sits in a read from a dead
            // Master, and a semi-sync receiver connects back to the Master as it stops (2 s
            // more against a dead one). Measured in the power-loss lab test: writes resumed
            // after about 3 s with STOP SLAVE on this path, about 1 s without.
            sqlx::query("SET GLOBAL rpl_semi_sync_slave_enabled = OFF").execute(&mut *c).await.map_err(db_err("semi-sync replica off"))?;
            self.end_receiver(&mut c).await?;
            self.wait_applied(&mut c, at_least).await?;
        } else if let Some(p) = wait_for {
            let have = self.pos(&mut c, "gtid_current_pos").await?.total();
            if have < p.0 {
                return Err(AdapterError::new(format!("not a replica and at {have}, below the required {}", p.0)));
            }
        }
        if self.cfg.semi_sync {
            // Lossless semi-sync (AFTER_SYNC: a commit is visible to nobody before the replica
            // has it). With no replica connected the Master does not wait at all (wait_no_slave
            // OFF), so a fresh Master whose peer is dead serves at once; MariaDB switches semi-sync
            // back on by itself when the replica connects and catches up. The fall-back is
            // reported (`semi_sync` in the report) and alarmed by the core.
            let timeout = self.cfg.semi_sync_timeout.as_millis();
            for q in [
                "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC".to_string(),
                "SET GLOBAL rpl_semi_sync_master_wait_no_slave = OFF".to_string(),
                format!("SET GLOBAL rpl_semi_sync_master_timeout = {timeout}"),
                "SET GLOBAL rpl_semi_sync_master_enabled = ON".to_string(),
            ] {
                sqlx::query(&q).execute(&mut *c).await.map_err(db_err("semi-sync"))?;
            }
        }
        sqlx::query("SET GLOBAL read_only = 0").execute(&mut *c).await.map_err(db_err("read_only = 0"))?;
        if replica {
            // Writes are open; forgetting the old Master (which waits out the stopping
            // receiver) goes on beside them. The applier keeps running until then, so even an
            // event the receiver wrote as it died is applied, not dropped with the relay log.
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.forget_master(at_least).await {
                    tracing::error!("after the promotion, the old Master's replication settings could not be cleared: {e}");
                }
            });
        }
        Ok(())
    }

    async fn fence(&self) -> AdapterResult<Position> {
        let mut c = self.admin().await?;
        sqlx::query("SET GLOBAL read_only = 1").execute(&mut *c).await.map_err(db_err("read_only = 1"))?;
        // Sessions opened before read_only may hold open transactions: end them.
        let me: i64 = sqlx::query("SELECT CAST(CONNECTION_ID() AS SIGNED)")
            .fetch_one(&mut *c)
            .await
            .map_err(db_err("connection id"))?
            .try_get(0)
            .map_err(db_err("connection id"))?;
        let rows = sqlx::query("SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Slave_IO', 'Slave_SQL', 'Slave_worker') AND USER NOT IN ('system user', 'event_scheduler') AND USER <> ? AND ID <> ?")
            .bind(&self.cfg.repl_user)
            .bind(me)
            .fetch_all(&mut *c)
            .await
            .map_err(db_err("listing sessions"))?;
        kill_connections(&mut c, &rows).await?;
        if self.writable(&mut c).await? {
            return Err(AdapterError::new("read_only did not stick"));
        }
        Ok(Position(self.pos(&mut c, "gtid_current_pos").await?.total()))
    }

    async fn replicate_from(&self, peer: NodeId) -> AdapterResult<()> {
        let (host, port) = self.cfg.peers.get(&peer).cloned().ok_or_else(|| AdapterError::new(format!("no database address for {peer}")))?;
        let mut c = self.admin().await?;
        sqlx::query("SET GLOBAL read_only = 1").execute(&mut *c).await.map_err(db_err("read_only = 1"))?;
        sqlx::query("STOP SLAVE").execute(&mut *c).await.map_err(db_err("STOP SLAVE"))?;
        // A former Master's own transactions are in its binary log, not in gtid_slave_pos:
        // start replicating from everything it holds, or it would fetch them twice.
        sqlx::query("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_current_pos").execute(&mut *c).await.map_err(db_err("gtid_slave_pos"))?;
        // A dead Master is noticed within a few seconds (heartbeat period, network timeout),
        // not after the 60 s default, so that STOP SLAVE at a promotion does not wait on it.
        sqlx::query("SET GLOBAL slave_net_timeout = 4").execute(&mut *c).await.map_err(db_err("slave_net_timeout"))?;
        let change = format!(
            "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {port}, MASTER_USER = '{}', MASTER_PASSWORD = '{}', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1",
            sql_text(&host),
            sql_text(&self.cfg.repl_user),
            sql_text(&self.cfg.repl_password)
        );
        sqlx::query(&change).execute(&mut *c).await.map_err(db_err("CHANGE MASTER"))?;
        if self.cfg.semi_sync {
            sqlx::query("SET GLOBAL rpl_semi_sync_slave_enabled = ON").execute(&mut *c).await.map_err(db_err("semi-sync"))?;
        }
        sqlx::query("START SLAVE").execute(&mut *c).await.map_err(db_err("START SLAVE"))?;
        Ok(())
    }

    async fn report(&self) -> AdapterResult<DbReport> {
        let mut c = self.admin_or_refused().await?;
        let current = self.pos(&mut c, "gtid_current_pos").await?;
        let writable = self.writable(&mut c).await?;
        let st = self.slave_status(&mut c).await?;
        let received = st.get("Gtid_IO_Pos").and_then(|s| GtidPos::parse(s).ok()).unwrap_or_default().merged(&current);
        let replication = replication_of(&st);
        let lag_ms = st.get("Seconds_Behind_Master").and_then(|v| v.parse::<u64>().ok()).map(|s| s * 1000);
        let semi = sqlx::query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
            .fetch_optional(&mut *c)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<String, _>(1).ok())
            .is_some_and(|v| v == "ON");
        let replicas: i64 = sqlx::query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
            .fetch_one(&mut *c)
            .await
            .and_then(|r| r.try_get(0))
            .unwrap_or(0);
        drop(c);
        // Under gtid_strict_mode the Master refuses a replica holding transactions it lacks
        // (error 1236): MariaDB's own detection of errant GTIDs. Which ones, exactly, is the
        // set difference against the Master's position, asked of the Master itself.
        let mut errant = None;
        if st.get("Last_IO_Errno").is_some_and(|v| v == "1236") {
            if let Some(peer) = self.cfg.peers.keys().next() {
                match self.errant_against(*peer).await {
                    Ok((n, ranges)) if n > 0 => errant = Some((n, ranges)),
                    Ok(_) => {}
                    Err(e) => tracing::debug!("errant transactions not counted yet: {e}"),
                }
            }
        }
        let facts = DbFacts {
            position: Position(current.total()),
            received: Position(received.total()),
            writable,
            replication,
            lag_ms,
            semi_sync: semi,
            replicas: u32::try_from(replicas).unwrap_or(0),
            misconfigured: self.fatal_findings.lock().map(|f| f.clone()).unwrap_or_default(),
        };
        Ok(DbReport { facts, errant })
    }

    async fn copy_from_peer(&self, peer: NodeId, progress: ProgressFn) -> AdapterResult<()> {
        resync::rebuild(self, peer, progress).await
    }
}

/// What `SHOW SLAVE STATUS` says of replication, in the core's terms.
fn replication_of(st: &BTreeMap<String, String>) -> Replication {
    if st.is_empty() {
        return Replication::NotReplica;
    }
    let get = |k: &str| st.get(k).map(String::as_str).unwrap_or("");
    let (io, sql) = (get("Slave_IO_Running"), get("Slave_SQL_Running"));
    let errno = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    if sql != "Yes" && errno("Last_SQL_Errno") != 0 {
        return Replication::Broken(format!("SQL error {}: {}", get("Last_SQL_Errno"), get("Last_SQL_Error")));
    }
    if io == "No" && errno("Last_IO_Errno") != 0 {
        return Replication::Broken(format!("IO error {}: {}", get("Last_IO_Errno"), get("Last_IO_Error")));
    }
    match (io, sql) {
        ("Yes", "Yes") => Replication::Running,
        ("Connecting", "Yes") => Replication::Connecting,
        _ => Replication::Stopped,
    }
}

/// Opens a one-off connection (used by the test harness and `check-config`).
pub async fn connect(opts: &MySqlConnectOptions) -> AdapterResult<MySqlConnection> {
    MySqlConnection::connect_with(opts).await.map_err(db_err("connecting"))
}

/// The inside of a single-quoted SQL string: a quote doubled, a backslash escaped (the server's
/// default sql_mode reads backslash escapes). CHANGE MASTER takes no placeholders, and dropping
/// the characters instead would set a different password than the operator's.
fn sql_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

#[cfg(test)]
mod sql_text_tests {
    #[test]
    fn quotes_and_backslashes_survive() {
        assert_eq!(super::sql_text(r"it's a \ pass"), r"it''s a \\ pass");
        assert_eq!(super::sql_text("plain"), "plain");
    }
}
