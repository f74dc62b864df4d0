//! The listener, the per-connection loop, and the handle tests drive faults through.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Document, Timestamp};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::auth::{Auth, Session};
use crate::commands::{self, Outcome};
use crate::config::ReplConfig;
use crate::member::{Member, Role, State, Tuning};
use crate::oplog::{Entry, OpTime};
use crate::store::Store;
use crate::wire;

/// How to start one member; mirrors the binary's flags.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub bind: SocketAddr,
    pub repl_set: String,
    pub dbpath: PathBuf,
    /// The member's name in the replica-set config; defaults to the bound address.
    pub host: Option<String>,
    /// Simulated initial-sync copy rate; 0 copies as fast as it can.
    pub initial_sync_bytes_per_sec: u64,
    /// (user, password) pairs in `admin`, for SCRAM-SHA-256; empty means no authentication.
    /// Members of one set must share them: the first one is what the members log in to each
    /// other with (see [`auth`](crate::auth)).
    pub users: Vec<(String, String)>,
}

impl PeerOptions {
    pub fn new(bind: SocketAddr, repl_set: impl Into<String>, dbpath: impl Into<PathBuf>) -> Self {
        PeerOptions { bind, repl_set: repl_set.into(), dbpath: dbpath.into(), host: None, initial_sync_bytes_per_sec: 1 << 20, users: Vec::new() }
    }
}

/// A running member. Dropping it stops the member as `shutdown` would, without waiting.
#[derive(Debug)]
pub struct PeerHandle {
    addr: SocketAddr,
    member: Arc<Member>,
    tasks: JoinSet<()>,
}

impl PeerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The member's name in the replica-set config.
    pub fn host(&self) -> &str {
        &self.member.me
    }

    /// The member state code (1 PRIMARY, 2 SECONDARY, 5 STARTUP2, 9 ROLLBACK, ...).
    pub fn state(&self) -> i32 {
        self.member.lock().role.code()
    }

    /// A clean stop: tasks end, connections close, the log is fsync'd.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        self.member.close_store(false);
    }

    /// A power cut: stops answering at once, drops every connection, and keeps on disk only
    /// what had been fsync'd.
    pub async fn power_off(mut self) {
        self.member.close_store(true);
        self.tasks.shutdown().await;
    }

    /// Cuts (or restores) the member-to-member link to `peer_host`, both directions as seen
    /// from this member. Client connections are not affected.
    pub fn set_partitioned(&self, peer_host: &str, cut: bool) {
        self.member.set_partitioned(peer_host, cut);
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
        self.member.close_store(false);
    }
}

/// Starts a member: loads `dbpath`, binds, and runs until the handle stops it.
pub async fn serve(opts: PeerOptions) -> io::Result<PeerHandle> {
    let users = opts.users.clone();
    let auth = tokio::task::spawn_blocking(move || Auth::new(&users)).await.map_err(io::Error::other)??;
    let listener = TcpListener::bind(opts.bind).await?;
    let addr = listener.local_addr()?;
    let me = opts.host.clone().unwrap_or_else(|| addr.to_string());
    let (store, records) = Store::open(&opts.dbpath)?;
    let state = replay(&me, records);
    tracing::info!(%me, role = ?state.role, entries = state.oplog.len(), "member starting");
    let tuning = Tuning { initial_sync_bytes_per_sec: opts.initial_sync_bytes_per_sec, heartbeat_interval: Duration::from_millis(200) };
    let member = Arc::new(Member::new(me, opts.repl_set.clone(), opts.dbpath.clone(), tuning, store, state, auth));
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(listener, member.clone()));
    tasks.spawn(crate::replication::heartbeat_loop(member.clone()));
    tasks.spawn(crate::replication::fetch_loop(member.clone()));
    Ok(PeerHandle { addr, member, tasks })
}

fn replay(me: &str, records: Vec<Document>) -> State {
    let mut st = State {
        config: None,
        term: 0,
        role: Role::Startup,
        oplog: Vec::new(),
        data: Default::default(),
        synced: false,
        peers: Default::default(),
        frozen_until: None,
        election: None,
        first_round_done: false,
        last_primary_seen: Instant::now(),
        majority_lost_since: None,
        commit_point: OpTime::NULL,
        sync_source: None,
        voted: None,
        initial_sync: None,
        rollback_count: 0,
        last_rollback: None,
        cursors: Default::default(),
        next_cursor: 1,
        txns: Default::default(),
        last_ts: Timestamp { time: 0, increment: 0 },
        counter: 0,
    };
    for r in records {
        match r.get_str("k").unwrap_or("") {
            "config" => st.config = r.get_document("config").ok().and_then(|c| ReplConfig::parse(c).ok()),
            "term" => st.term = st.term.max(r.get_i64("term").unwrap_or(0)),
            "op" => {
                if let Some(e) = r.get_document("e").ok().and_then(Entry::from_doc) {
                    st.apply_entry(e);
                }
            }
            "truncate" => {
                let keep = OpTime::from_bson(r.get("after")).and_then(|at| st.oplog.iter().position(|e| e.optime() == at)).map_or(0, |i| i + 1);
                st.oplog.truncate(keep);
            }
            "put" => {
                if let (Ok(ns), Ok(o)) = (r.get_str("ns"), r.get_document("o")) {
                    st.data.coll_mut(ns).put(o.clone());
                }
            }
            "del" => {
                if let (Ok(ns), Some(id)) = (r.get_str("ns"), r.get("id")) {
                    st.data.coll_mut(ns).remove(id);
                }
            }
            "reset" => {
                st.data = Default::default();
                st.oplog.clear();
            }
            "synced" => st.synced = r.get_bool("v").unwrap_or(false),
            "rollback" => {
                st.rollback_count += 1;
                st.last_rollback = r.get_document("info").ok().cloned();
            }
            other => tracing::warn!(kind = other, "unknown log record skipped"),
        }
    }
    st.rebuild_txns();
    st.role = match st.config.as_ref().map(|c| c.member(me).is_some()) {
        None => Role::Startup,
        Some(false) => Role::Removed,
        Some(true) if st.synced => Role::Secondary,
        Some(true) => Role::Startup2,
    };
    st
}

async fn accept_loop(listener: TcpListener, member: Arc<Member>) {
    // Owned here so that aborting this task drops (and so aborts) every connection with it.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { conns.spawn(connection(member.clone(), stream)); }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(member: Arc<Member>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let conn_id = member.next_connection_id();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut reply_id = 1i32;
    let mut session = Session::default();
    loop {
        let msg = match wire::read_message(&mut rd).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "closing connection");
                return;
            }
        };
        let wants_reply = msg.flags & wire::MORE_TO_COME == 0;
        match commands::dispatch(&member, conn_id, &mut session, msg.command).await {
            Outcome::Close => return,
            Outcome::Reply(doc) if wants_reply => {
                reply_id = reply_id.wrapping_add(1);
                let bytes = match wire::encode(reply_id, msg.request_id, &doc) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode reply");
                        return;
                    }
                };
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Outcome::Reply(_) => {}
        }
    }
}
