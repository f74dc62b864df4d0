//! Rollback (<https://www.mongodb.com/docs/manual/core/replica-set-rollbacks/>): a former
//! primary whose oplog has entries after the common point with the sync source goes to
//! ROLLBACK, saves its versions of the affected documents to
//! `DIR/rollback/<db>.<coll>/removed.<timestamp>.bson`, replaces them by the sync source's
//! current versions (or removes them), truncates its oplog to the common point, and resumes as
//! SECONDARY. This is mongod's older "rollback via refetch" algorithm; what follows the common
//! point is re-fetched and re-applied idempotently, which converges on the source's data.
//!
//! The member stays in ROLLBACK at least [`VISIBLE`] so that pollers see the state.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document, Timestamp};

use crate::data::id_key;
use crate::link::Link;
use crate::member::{Member, Role};
use crate::query::{as_f64, as_i64};

pub const VISIBLE: Duration = Duration::from_millis(800);

fn read(mut d: Document, db: &str) -> Document {
    d.insert("$db", db);
    d.insert("$readPreference", doc! {"mode": "primaryPreferred"});
    d
}

async fn find(member: &Member, link: &Link, cmd: Document) -> Result<Vec<Document>, String> {
    let r = link.call(member, &cmd, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    if r.get("ok").and_then(as_f64) != Some(1.0) {
        return Err(format!("sync source answered {r}"));
    }
    let c = r.get_document("cursor").map_err(|e| e.to_string())?;
    Ok(c.get_array("firstBatch").map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect()).unwrap_or_default())
}

pub async fn run(member: &Member, link: &Link) -> Result<(), String> {
    let started = Instant::now();
    let last = {
        let mut st = member.lock();
        if st.role != Role::Secondary {
            return Ok(());
        }
        st.role = Role::Rollback;
        member.changed(&mut st);
        st.last_optime()
    };
    tracing::info!(me = %member.me, source = %link.host, "entering ROLLBACK");
    let result = roll_back(member, link, last.ts).await;
    if let Some(rest) = VISIBLE.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let mut st = member.lock();
    if st.role == Role::Rollback {
        st.role = Role::Secondary;
        member.changed(&mut st);
    }
    result
}

async fn roll_back(member: &Member, link: &Link, last_ts: Timestamp) -> Result<(), String> {
    let theirs: HashSet<(Timestamp, i64)> = find(
        member,
        link,
        read(
            doc! { "find": "oplog.rs",
            "filter": {"ts": {"$lte": last_ts}}, "sort": {"ts": -1}, "limit": 1000i64, "batchSize": 1000i64,
            "projection": {"ts": 1, "t": 1} },
            "local",
        ),
    )
    .await?
    .iter()
    .filter_map(|d| match (d.get("ts"), d.get("t").and_then(as_i64)) {
        (Some(Bson::Timestamp(ts)), Some(t)) => Some((*ts, t)),
        _ => None,
    })
    .collect();
    let (common, undone) = {
        let st = member.lock();
        let Some(i) = st.oplog.iter().rposition(|e| theirs.contains(&(e.ts, e.t))) else {
            drop(st);
            return resync(member);
        };
        (st.oplog[i].optime(), st.oplog[i + 1..].to_vec())
    };
    if undone.is_empty() {
        // The source gained our last entry meanwhile: nothing to undo.
        return Ok(());
    }
    // Every document a rolled-back entry touched, per namespace.
    let mut touched: BTreeMap<String, Vec<Bson>> = BTreeMap::new();
    for e in &undone {
        let id = if e.op == "u" { e.o2.as_ref().and_then(|d| d.get("_id")) } else { e.o.get("_id") };
        if let (true, Some(id)) = (matches!(e.op.as_str(), "i" | "u" | "d"), id) {
            let ids = touched.entry(e.ns.clone()).or_default();
            if !ids.iter().any(|x| id_key(x) == id_key(id)) {
                ids.push(id.clone());
            }
        }
    }
    let mut refetched: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for (ns, ids) in &touched {
        let (db, coll) = ns.split_once('.').unwrap_or(("", ""));
        for chunk in ids.chunks(500) {
            let docs = find(
                member,
                link,
                read(
                    doc! { "find": coll, "filter": {"_id": {"$in": chunk.to_vec()}},
                    "batchSize": 1000i64 },
                    db,
                ),
            )
            .await?;
            refetched.entry(ns.clone()).or_default().extend(docs);
        }
    }
    let mut st = member.lock();
    if st.role != Role::Rollback {
        return Err("left ROLLBACK".into());
    }
    let mut files = Vec::new();
    let mut recs = Vec::new();
    for (ns, ids) in &touched {
        let mine: Vec<Document> = ids.iter().filter_map(|id| st.data.coll(ns).and_then(|c| c.get(id)).cloned()).collect();
        if !mine.is_empty() {
            let path = crate::store::write_rollback_file(&member.dbpath, ns, &mine).map_err(|e| e.to_string())?;
            files.push(Bson::String(path.display().to_string()));
        }
        let source = refetched.get(ns).cloned().unwrap_or_default();
        for id in ids {
            match source.iter().find(|d| d.get("_id").is_some_and(|x| id_key(x) == id_key(id))) {
                Some(d) => recs.push(doc! {"k": "put", "ns": ns.clone(), "o": d.clone()}),
                None => recs.push(doc! {"k": "del", "ns": ns.clone(), "id": id.clone()}),
            }
        }
    }
    let info = doc! { "at": DateTime::now(), "entries": undone.len() as i64,
    "dir": member.dbpath.join("rollback").display().to_string(),
    "commonPoint": common.to_doc(), "files": files, "syncSource": link.host.clone() };
    recs.push(doc! {"k": "truncate", "after": common.to_doc()});
    recs.push(doc! {"k": "rollback", "info": info.clone()});
    member.persist(&recs, true).map_err(|e| e.to_string())?;
    for r in &recs {
        match r.get_str("k") {
            Ok("put") => {
                if let (Ok(ns), Ok(o)) = (r.get_str("ns"), r.get_document("o")) {
                    st.data.coll_mut(ns).put(o.clone());
                }
            }
            Ok("del") => {
                if let (Ok(ns), Some(id)) = (r.get_str("ns"), r.get("id")) {
                    st.data.coll_mut(ns).remove(id);
                }
            }
            _ => {}
        }
    }
    let keep = st.oplog.len() - undone.len();
    st.oplog.truncate(keep);
    st.rebuild_txns();
    st.rollback_count += 1;
    st.last_rollback = Some(info);
    tracing::info!(me = %member.me, entries = undone.len(), "rolled back");
    Ok(())
}

/// No common point within reach: start over with an initial sync, as an operator would.
fn resync(member: &Member) -> Result<(), String> {
    let mut st = member.lock();
    member.persist(&[doc! {"k": "synced", "v": false}], true).map_err(|e| e.to_string())?;
    st.synced = false;
    st.role = Role::Startup2;
    member.changed(&mut st);
    Err("no common point with the sync source; resyncing".into())
}
