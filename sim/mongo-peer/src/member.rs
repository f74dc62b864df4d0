//! One replica-set member's state, and the transitions every other module goes through so that
//! each of them is persisted and announced (a `topologyVersion` bump wakes awaitable `hello`s).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{doc, DateTime, Document, Timestamp};
use tokio::sync::watch;

use crate::config::{MemberConfig, ReplConfig};
use crate::crud::Cursor;
use crate::data::Data;
use crate::initial_sync::Progress;
use crate::link::Link;
use crate::oplog::{next_ts, Entry, OpTime};
use crate::store::Store;

/// Member states (<https://www.mongodb.com/docs/manual/reference/replica-states/>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Startup,
    Primary,
    Secondary,
    Startup2,
    Rollback,
    Removed,
}

impl Role {
    pub fn code(self) -> i32 {
        match self {
            Role::Startup => 0,
            Role::Primary => 1,
            Role::Secondary => 2,
            Role::Startup2 => 5,
            Role::Rollback => 9,
            Role::Removed => 10,
        }
    }
}

pub fn state_str(code: i32) -> &'static str {
    match code {
        0 => "STARTUP",
        1 => "PRIMARY",
        2 => "SECONDARY",
        3 => "RECOVERING",
        5 => "STARTUP2",
        7 => "ARBITER",
        8 => "(not reachable/healthy)",
        9 => "ROLLBACK",
        10 => "REMOVED",
        _ => "UNKNOWN",
    }
}

/// What heartbeats taught us about another member.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub state: i32,
    pub term: i64,
    pub applied: OpTime,
    pub config_version: i64,
    pub last_ok: Option<Instant>,
    pub last_ok_date: Option<DateTime>,
    pub last_err: Option<String>,
    pub ping_ms: i64,
    pub sync_source: String,
    pub up_since: Option<Instant>,
}

impl Default for PeerView {
    fn default() -> Self {
        PeerView {
            state: 8,
            term: -1,
            applied: OpTime::NULL,
            config_version: -1,
            last_ok: None,
            last_ok_date: None,
            last_err: None,
            ping_ms: 0,
            sync_source: String::new(),
            up_since: None,
        }
    }
}

/// A peer counts as up if it answered within this long (five heartbeat intervals).
pub const PEER_FRESH: Duration = Duration::from_millis(1000);

#[derive(Debug)]
pub struct State {
    pub config: Option<ReplConfig>,
    pub term: i64,
    pub role: Role,
    pub oplog: Vec<Entry>,
    pub data: Data,
    /// The data is a complete copy (initiated here, or initial sync finished).
    pub synced: bool,
    pub peers: HashMap<String, PeerView>,
    pub frozen_until: Option<Instant>,
    pub election: Option<(Timestamp, DateTime)>,
    pub first_round_done: bool,
    pub last_primary_seen: Instant,
    pub majority_lost_since: Option<Instant>,
    pub commit_point: OpTime,
    pub sync_source: Option<String>,
    pub voted: Option<(i64, String)>,
    pub initial_sync: Option<Progress>,
    pub rollback_count: i64,
    pub last_rollback: Option<Document>,
    pub cursors: HashMap<i64, Cursor>,
    pub next_cursor: i64,
    pub txns: HashMap<Vec<u8>, (i64, HashSet<i32>)>,
    pub last_ts: Timestamp,
    pub counter: i64,
}

impl State {
    pub fn last_optime(&self) -> OpTime {
        self.oplog.last().map_or(OpTime::NULL, Entry::optime)
    }

    pub fn my_config<'a>(&'a self, me: &str) -> Option<&'a MemberConfig> {
        self.config.as_ref()?.member(me)
    }

    pub fn fresh(&self, host: &str) -> bool {
        self.peers.get(host).and_then(|p| p.last_ok).is_some_and(|t| t.elapsed() < PEER_FRESH)
    }

    /// The primary we know of: ourselves, or the up peer claiming it with the highest term.
    pub fn primary_host(&self, me: &str) -> Option<String> {
        if self.role == Role::Primary {
            return Some(me.to_string());
        }
        let cfg = self.config.as_ref()?;
        cfg.members
            .iter()
            .filter(|m| m.host != me && self.fresh(&m.host))
            .filter_map(|m| self.peers.get(&m.host).map(|p| (m, p)))
            .filter(|(_, p)| p.state == 1 && p.term >= self.term)
            .max_by_key(|(_, p)| p.term)
            .map(|(m, _)| m.host.clone())
    }

    /// Keeps the oplog, the documents and the retryable-write table in step.
    pub fn apply_entry(&mut self, e: Entry) {
        self.data.apply(&e);
        if let (Some(lsid), Some(n)) = (&e.lsid, e.txn_number) {
            let slot = self.txns.entry(crate::data::id_key(&lsid.clone().into())).or_insert((n, HashSet::new()));
            if slot.0 != n {
                *slot = (n, HashSet::new());
            }
            slot.1.insert(e.stmt_id.unwrap_or(0));
        }
        self.last_ts = self.last_ts.max(e.ts);
        self.oplog.push(e);
    }

    pub fn rebuild_txns(&mut self) {
        self.txns.clear();
        let entries: Vec<Entry> = self.oplog.iter().filter(|e| e.lsid.is_some()).cloned().collect();
        for e in entries {
            if let (Some(lsid), Some(n)) = (&e.lsid, e.txn_number) {
                let slot = self.txns.entry(crate::data::id_key(&lsid.clone().into())).or_insert((n, HashSet::new()));
                if slot.0 != n {
                    *slot = (n, HashSet::new());
                }
                slot.1.insert(e.stmt_id.unwrap_or(0));
            }
        }
    }

    /// The newest optime a majority of voters has applied (primary's view).
    pub fn majority_optime(&self, me: &str) -> OpTime {
        let Some(cfg) = &self.config else { return OpTime::NULL };
        let mut applied: Vec<OpTime> =
            cfg.voters().map(|m| if m.host == me { self.last_optime() } else { self.peers.get(&m.host).map_or(OpTime::NULL, |p| p.applied) }).collect();
        applied.sort_by(|a, b| b.cmp(a));
        applied.get(cfg.majority() - 1).copied().unwrap_or(OpTime::NULL)
    }

    /// How many members (voting or not) have applied `at`, counting ourselves.
    pub fn members_at(&self, me: &str, at: OpTime) -> usize {
        let Some(cfg) = &self.config else { return 0 };
        cfg.members.iter().filter(|m| if m.host == me { self.last_optime() >= at } else { self.peers.get(&m.host).is_some_and(|p| p.applied >= at) }).count()
    }
}

/// Knobs that are not part of mongod's command line.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub initial_sync_bytes_per_sec: u64,
    pub heartbeat_interval: Duration,
}

#[derive(Debug)]
pub struct Member {
    pub me: String,
    pub set_name: String,
    pub process_id: ObjectId,
    pub dbpath: PathBuf,
    pub tuning: Tuning,
    pub started: Instant,
    state: Mutex<State>,
    store: Mutex<Store>,
    pub topology: watch::Sender<i64>,
    pub oplog_tick: watch::Sender<u64>,
    pub positions: watch::Sender<u64>,
    partitioned: Mutex<HashSet<String>>,
    links: Mutex<HashMap<String, Arc<Link>>>,
    next_conn: AtomicI64,
    /// Users for clients, and the credentials the links log in with.
    pub auth: crate::auth::Auth,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// mongod's electionId: the term in the low bytes, so later elections compare greater.
pub fn election_id(term: i64) -> ObjectId {
    let mut b = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    b[4..].copy_from_slice(&term.to_be_bytes());
    ObjectId::from_bytes(b)
}

impl Member {
    pub fn new(me: String, set_name: String, dbpath: PathBuf, tuning: Tuning, store: Store, state: State, auth: crate::auth::Auth) -> Self {
        Member {
            me,
            set_name,
            process_id: ObjectId::new(),
            dbpath,
            tuning,
            started: Instant::now(),
            topology: watch::channel(state.counter).0,
            state: Mutex::new(state),
            store: Mutex::new(store),
            oplog_tick: watch::channel(0).0,
            positions: watch::channel(0).0,
            partitioned: Mutex::new(HashSet::new()),
            links: Mutex::new(HashMap::new()),
            next_conn: AtomicI64::new(1),
            auth,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn next_connection_id(&self) -> i64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_partitioned(&self, host: &str) -> bool {
        lock(&self.partitioned).contains(host)
    }

    pub fn set_partitioned(&self, host: &str, cut: bool) {
        if cut {
            lock(&self.partitioned).insert(host.to_string());
        } else {
            lock(&self.partitioned).remove(host);
        }
    }

    pub fn link(&self, host: &str) -> Arc<Link> {
        lock(&self.links).entry(host.to_string()).or_insert_with(|| Arc::new(Link::new(host))).clone()
    }

    pub fn persist(&self, records: &[Document], sync: bool) -> std::io::Result<()> {
        lock(&self.store).append(records, sync)
    }

    pub fn close_store(&self, power_cut: bool) {
        let mut s = lock(&self.store);
        if power_cut {
            s.power_cut()
        } else {
            s.close()
        }
    }

    /// Announces a state change to awaitable `hello`s and write-concern waiters.
    pub fn changed(&self, st: &mut State) {
        st.counter += 1;
        self.topology.send_replace(st.counter);
        self.positions.send_modify(|v| *v += 1);
    }

    pub fn adopt_term(&self, st: &mut State, term: i64) {
        if term <= st.term {
            return;
        }
        st.term = term;
        if let Err(e) = self.persist(&[doc! {"k": "term", "term": term}], true) {
            tracing::error!(error = %e, "persisting term");
        }
        if st.role == Role::Primary {
            tracing::info!(me = %self.me, term, "stepping down: saw a higher term");
            self.step_down(st, None);
        } else {
            self.changed(st);
        }
    }

    pub fn step_down(&self, st: &mut State, freeze: Option<Duration>) {
        if st.role == Role::Primary {
            st.role = Role::Secondary;
            st.election = None;
        }
        if let Some(f) = freeze {
            st.frozen_until = Some(Instant::now() + f);
        }
        st.last_primary_seen = Instant::now();
        self.changed(st);
    }

    pub fn adopt_config(&self, st: &mut State, cfg: ReplConfig) -> std::io::Result<()> {
        self.persist(&[doc! {"k": "config", "config": cfg.to_doc(st.term)}], true)?;
        let mine = cfg.member(&self.me).cloned();
        st.config = Some(cfg);
        match mine {
            None => {
                st.role = Role::Removed;
            }
            Some(m) => {
                if matches!(st.role, Role::Removed | Role::Startup) {
                    st.role = if st.synced { Role::Secondary } else { Role::Startup2 };
                }
                if st.role == Role::Primary && !m.electable() {
                    tracing::info!(me = %self.me, "stepping down: new config makes this member unelectable");
                    self.step_down(st, None);
                }
            }
        }
        self.changed(st);
        Ok(())
    }

    pub fn become_primary(&self, st: &mut State, term: i64) -> std::io::Result<()> {
        st.term = st.term.max(term);
        st.role = Role::Primary;
        st.frozen_until = None;
        let ts = next_ts(st.last_ts);
        st.election = Some((ts, DateTime::now()));
        // mongod writes a no-op when it wins, so that the new term shows in the oplog at once and
        // a former primary's divergent entries are detectable even before any client write.
        let e = Entry {
            ts,
            t: st.term,
            op: "n".into(),
            ns: String::new(),
            o: doc! {"msg": "new primary"},
            o2: None,
            wall: DateTime::now(),
            lsid: None,
            txn_number: None,
            stmt_id: None,
        };
        self.persist(&[doc! {"k": "term", "term": st.term}, doc! {"k": "op", "e": e.to_doc()}], true)?;
        st.apply_entry(e);
        tracing::info!(me = %self.me, term = st.term, "became primary");
        self.changed(st);
        self.oplog_tick.send_modify(|v| *v += 1);
        Ok(())
    }
}
