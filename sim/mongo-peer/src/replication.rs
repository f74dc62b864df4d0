//! Member-to-member traffic: heartbeats every 200 ms (state, term, applied optime, config; a
//! higher term or config version is adopted from either side), the secondary's oplog pull from
//! the primary (a long poll that also reports the puller's applied optime, which is what
//! `w: "majority"` waits on), and write-concern waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};
use tokio::task::JoinSet;

use crate::config::ReplConfig;
use crate::error::{CmdError, CmdResult};
use crate::link::Link;
use crate::member::{Member, Role, State};
use crate::oplog::{Entry, OpTime};
use crate::query::{as_f64, as_i64};

fn info_doc(member: &Member, st: &State) -> Document {
    let mut d = doc! { "ridondatoHeartbeat": member.set_name.clone(), "from": member.me.clone(),
    "state": st.role.code(), "term": st.term, "applied": st.last_optime().to_doc(),
    "syncSource": st.sync_source.clone().unwrap_or_default(),
    "configVersion": st.config.as_ref().map_or(-1, |c| c.version) };
    if let Some(cfg) = &st.config {
        d.insert("config", cfg.to_doc(st.term));
    }
    d
}

pub fn heartbeat_request(member: &Member) -> Document {
    let st = member.lock();
    let mut d = info_doc(member, &st);
    d.insert("$db", "admin");
    d
}

/// What a heartbeat (request or reply) tells us about `host`.
fn observe(member: &Member, st: &mut State, host: &str, info: &Document, rtt: Option<Duration>) {
    let was_up = st.fresh(host);
    let view = st.peers.entry(host.to_string()).or_default();
    let old_state = view.state;
    view.state = info.get_i32("state").unwrap_or(8);
    view.term = info.get("term").and_then(as_i64).unwrap_or(-1);
    if let Some(a) = OpTime::from_bson(info.get("applied")) {
        view.applied = a;
    }
    view.config_version = info.get("configVersion").and_then(as_i64).unwrap_or(-1);
    view.last_ok = Some(Instant::now());
    view.last_ok_date = Some(DateTime::now());
    view.last_err = None;
    view.sync_source = info.get_str("syncSource").unwrap_or("").to_string();
    view.up_since.get_or_insert_with(Instant::now);
    if let Some(rtt) = rtt {
        view.ping_ms = rtt.as_millis() as i64;
    }
    let (new_state, term) = (view.state, view.term);
    member.adopt_term(st, term);
    if let Ok(raw) = info.get_document("config") {
        let mine = st.config.as_ref().map_or(-1, |c| c.version);
        if let Ok(cfg) = ReplConfig::parse(raw) {
            if cfg.version > mine && cfg.set_name == member.set_name {
                tracing::info!(me = %member.me, from = host, version = cfg.version, "adopting newer config");
                if let Err(e) = member.adopt_config(st, cfg) {
                    tracing::error!(error = %e, "persisting config");
                }
            }
        }
    }
    if !was_up || old_state != new_state {
        member.changed(st);
    } else {
        member.positions.send_modify(|v| *v += 1);
    }
}

pub fn on_heartbeat(member: &Member, cmd: &Document) -> CmdResult {
    if cmd.get_str("ridondatoHeartbeat").ok() != Some(member.set_name.as_str()) {
        return Err(CmdError::InvalidReplicaSetConfig("replica set name mismatch"));
    }
    let from = cmd.get_str("from").unwrap_or("").to_string();
    let mut st = member.lock();
    observe(member, &mut st, &from, cmd, None);
    Ok(info_doc(member, &st))
}

pub async fn heartbeat_loop(member: Arc<Member>) {
    let mut every = tokio::time::interval(member.tuning.heartbeat_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut up_before: Vec<(String, bool)> = Vec::new();
    loop {
        every.tick().await;
        let req = heartbeat_request(&member);
        let targets: Vec<String> = {
            let st = member.lock();
            st.config.iter().flat_map(|c| c.members.iter()).map(|m| m.host.clone()).filter(|h| *h != member.me).collect()
        };
        let mut calls = JoinSet::new();
        for host in targets {
            let (m, req) = (member.clone(), req.clone());
            calls.spawn(async move {
                let start = Instant::now();
                let r = m.link(&host).call(&m, &req, Duration::from_millis(500)).await;
                (host, r, start.elapsed())
            });
        }
        while let Some(Ok((host, r, rtt))) = calls.join_next().await {
            let mut st = member.lock();
            match r {
                Ok(reply) if reply.get("ok").and_then(as_f64) == Some(1.0) => {
                    observe(&member, &mut st, &host, &reply, Some(rtt));
                }
                Ok(reply) => {
                    st.peers.entry(host).or_default().last_err = Some(reply.get_str("errmsg").unwrap_or("heartbeat failed").to_string());
                }
                Err(e) => st.peers.entry(host).or_default().last_err = Some(e.to_string()),
            }
        }
        {
            let mut st = member.lock();
            st.first_round_done = true;
            // A peer going silent changes what `hello` says (its `primary` field), so announce it.
            let now: Vec<(String, bool)> = st.peers.keys().map(|h| (h.clone(), st.fresh(h))).collect();
            let mut now_sorted = now;
            now_sorted.sort();
            if now_sorted != up_before {
                up_before = now_sorted;
                member.changed(&mut st);
            }
        }
        crate::election::tick(&member).await;
    }
}

pub async fn on_fetch(member: &Arc<Member>, cmd: &Document) -> CmdResult {
    let from = cmd.get_str("from").unwrap_or("").to_string();
    let after = OpTime::from_bson(cmd.get("after"));
    let limit = cmd.get("limit").and_then(as_i64).unwrap_or(500).max(1) as usize;
    let wait = Duration::from_millis(cmd.get("maxAwaitMS").and_then(as_i64).unwrap_or(0).max(0) as u64);
    if let Some(a) = after {
        let mut st = member.lock();
        let view = st.peers.entry(from.clone()).or_default();
        if a > view.applied {
            view.applied = a;
            member.positions.send_modify(|v| *v += 1);
        }
    }
    let deadline = Instant::now() + wait;
    let mut rx = member.oplog_tick.subscribe();
    loop {
        rx.borrow_and_update();
        {
            let st = member.lock();
            let start = match after {
                None => 0,
                Some(a) => match st.oplog.binary_search_by(|e| e.ts.cmp(&a.ts)) {
                    Ok(i) if st.oplog[i].t == a.t => i + 1,
                    _ => return Ok(doc! { "diverged": true, "term": st.term, "entries": [] }),
                },
            };
            if start < st.oplog.len() || Instant::now() >= deadline {
                let end = st.oplog.len().min(start + limit);
                let entries: Vec<Bson> = st.oplog[start..end].iter().map(|e| Bson::Document(e.to_doc())).collect();
                let cp = crate::status::commit_point(&st, &member.me);
                return Ok(doc! { "entries": entries, "term": st.term, "commitPoint": cp.to_doc() });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, rx.changed()).await;
        if member.is_partitioned(&from) {
            return Err(CmdError::HostUnreachable("partitioned"));
        }
    }
}

pub async fn fetch_loop(member: Arc<Member>) {
    let mut link: Option<Link> = None;
    loop {
        let (source, after, term, role) = {
            let mut st = member.lock();
            let source = st.primary_host(&member.me).filter(|p| *p != member.me);
            if st.role != Role::Primary {
                st.sync_source = source.clone();
            }
            (source, st.oplog.last().map(Entry::optime), st.term, st.role)
        };
        let Some(source) = source.filter(|_| matches!(role, Role::Secondary | Role::Startup2)) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if link.as_ref().map(|l| l.host.as_str()) != Some(source.as_str()) {
            link = Some(Link::new(&source));
        }
        let Some(l) = link.as_ref() else { continue };
        if role == Role::Startup2 {
            if let Err(e) = crate::initial_sync::run(&member, l).await {
                tracing::warn!(me = %member.me, error = %e, "initial sync attempt failed");
                member.lock().initial_sync.iter_mut().for_each(|p| p.failed_attempts += 1);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            continue;
        }
        let req = doc! { "ridondatoOplogFetch": 1, "from": member.me.clone(), "term": term,
        "after": after.map_or(Bson::Null, |a| Bson::Document(a.to_doc())), "limit": 500,
        "maxAwaitMS": 250, "$db": "admin" };
        match l.call(&member, &req, Duration::from_secs(2)).await {
            Ok(reply) if reply.get_bool("diverged").unwrap_or(false) => {
                if let Err(e) = crate::rollback::run(&member, l).await {
                    tracing::warn!(me = %member.me, error = %e, "rollback attempt failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok(reply) if reply.get("ok").and_then(as_f64) == Some(1.0) => apply_batch(&member, &reply),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn apply_batch(member: &Member, reply: &Document) {
    let entries: Vec<Entry> =
        reply.get_array("entries").map(|a| a.iter().filter_map(|b| b.as_document().and_then(Entry::from_doc)).collect()).unwrap_or_default();
    let mut st = member.lock();
    if let Some(t) = reply.get("term").and_then(as_i64) {
        member.adopt_term(&mut st, t);
    }
    if st.role != Role::Secondary {
        return;
    }
    let last = st.last_optime();
    let fresh: Vec<Entry> = entries.into_iter().filter(|e| e.ts > last.ts).collect();
    if !fresh.is_empty() {
        let recs: Vec<Document> = fresh.iter().map(|e| doc! {"k": "op", "e": e.to_doc()}).collect();
        if let Err(e) = member.persist(&recs, true) {
            tracing::error!(error = %e, "persisting replicated entries");
            return;
        }
        for e in fresh {
            st.apply_entry(e);
        }
        member.oplog_tick.send_modify(|v| *v += 1);
        member.positions.send_modify(|v| *v += 1);
    }
    if let Some(cp) = OpTime::from_bson(reply.get("commitPoint")) {
        st.commit_point = st.commit_point.max(cp.min(st.last_optime()));
    }
}

/// Waits for `w` (number or "majority") and returns a `writeConcernError` if it cannot be met.
pub async fn wait_for_write_concern(member: &Member, at: OpTime, wc: Option<&Document>) -> Option<Document> {
    let wc = wc.cloned().unwrap_or_default();
    let majority = matches!(wc.get("w"), Some(Bson::String(s)) if s == "majority");
    let n = wc.get("w").and_then(as_i64).unwrap_or(1);
    if !majority && n <= 1 {
        return None;
    }
    let wtimeout = wc.get("wtimeout").and_then(as_i64).unwrap_or(0);
    let deadline = (wtimeout > 0).then(|| Instant::now() + Duration::from_millis(wtimeout as u64));
    let mut rx = member.positions.subscribe();
    loop {
        rx.borrow_and_update();
        {
            let st = member.lock();
            if st.role != Role::Primary {
                return Some(doc! { "code": 189, "codeName": "PrimarySteppedDown",
                "errmsg": "Primary stepped down while waiting for replication" });
            }
            let members = st.config.as_ref().map_or(0, |c| c.members.len());
            if !majority && n as usize > members {
                return Some(doc! { "code": 100, "codeName": "UnsatisfiableWriteConcern",
                "errmsg": "Not enough data-bearing nodes" });
            }
            let done = if majority { st.majority_optime(&member.me) >= at } else { st.members_at(&member.me, at) >= n as usize };
            if done {
                return None;
            }
        }
        let step = Duration::from_millis(500);
        let left = deadline.map_or(step, |d| d.saturating_duration_since(Instant::now()).min(step));
        let _ = tokio::time::timeout(left, rx.changed()).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(doc! { "code": 64, "codeName": "WriteConcernFailed",
            "errmsg": "waiting for replication timed out", "errInfo": { "wtimeout": true, "writeConcern": wc } });
        }
    }
}
