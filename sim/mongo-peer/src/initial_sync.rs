//! Initial sync (<https://www.mongodb.com/docs/manual/core/replica-set-sync/#initial-sync>): a
//! member with no data that finds itself in a config enters STARTUP2, notes the sync source's
//! newest oplog entry, clones every collection with `find`/`getMore` at the simulated copy rate,
//! applies the oplog from the noted entry on (application is idempotent, which makes the fuzzy
//! clone consistent), and becomes SECONDARY. Progress is shown in
//! `replSetGetStatus.initialSyncStatus` with mongod's field names.

use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};

use crate::link::Link;
use crate::member::{Member, Role};
use crate::oplog::Entry;
use crate::query::{as_f64, as_i64};

#[derive(Debug, Clone)]
pub struct CollProgress {
    ns: String,
    docs_to_copy: i64,
    docs_copied: i64,
    bytes_to_copy: i64,
    bytes_copied: i64,
    batches: i64,
    start: Option<DateTime>,
    end: Option<DateTime>,
}

#[derive(Debug, Clone)]
pub struct Progress {
    start: DateTime,
    started: Instant,
    finished: Option<(Instant, DateTime)>,
    pub failed_attempts: i32,
    total_bytes: i64,
    copied_bytes: i64,
    colls: Vec<CollProgress>,
    applied_ops: i64,
    oplog_start: Option<bson::Timestamp>,
    rate: u64,
}

impl Progress {
    fn new(rate: u64, failed_attempts: i32) -> Self {
        Progress {
            start: DateTime::now(),
            started: Instant::now(),
            finished: None,
            failed_attempts,
            total_bytes: 0,
            copied_bytes: 0,
            colls: Vec::new(),
            applied_ops: 0,
            oplog_start: None,
            rate,
        }
    }

    pub fn to_doc(&self) -> Document {
        let elapsed = self.finished.map_or_else(|| self.started.elapsed(), |(t, _)| t - self.started);
        let copied = self.copied_bytes.min(self.total_bytes);
        let mut dbs = doc! {};
        let mut names: Vec<String> = self.colls.iter().map(|c| db_of(&c.ns)).collect();
        names.dedup();
        let cloned_dbs = names.iter().filter(|db| self.colls.iter().filter(|c| db_of(&c.ns) == **db).all(|c| c.end.is_some())).count();
        dbs.insert("databasesToClone", (names.len() - cloned_dbs) as i32);
        dbs.insert("databasesCloned", cloned_dbs as i32);
        for db in &names {
            let colls: Vec<&CollProgress> = self.colls.iter().filter(|c| db_of(&c.ns) == *db).collect();
            let mut d = doc! { "collections": colls.len() as i32,
            "clonedCollections": colls.iter().filter(|c| c.end.is_some()).count() as i32 };
            for c in colls {
                let mut cd = doc! { "documentsToCopy": c.docs_to_copy, "documentsCopied": c.docs_copied,
                "indexes": 1, "fetchedBatches": c.batches, "receivedBatches": c.batches,
                "bytesToCopy": c.bytes_to_copy, "approxBytesCopied": c.bytes_copied };
                if let Some(s) = c.start {
                    cd.insert("start", s);
                }
                if let Some(e) = c.end {
                    cd.insert("end", e);
                }
                d.insert(c.ns.clone(), cd);
            }
            dbs.insert(db.clone(), d);
        }
        let mut out = doc! { "failedInitialSyncAttempts": self.failed_attempts, "maxFailedInitialSyncAttempts": 10,
        "initialSyncStart": self.start, "totalInitialSyncElapsedMillis": elapsed.as_millis() as i64,
        "initialSyncAttempts": [], "approxTotalDataSize": self.total_bytes,
        "approxTotalBytesCopied": copied, "appliedOps": self.applied_ops, "databases": dbs };
        if self.rate > 0 && self.finished.is_none() {
            let left = (self.total_bytes - copied).max(0) as u64;
            out.insert("remainingInitialSyncEstimatedMillis", (left * 1000 / self.rate) as i64);
        }
        if let Some(ts) = self.oplog_start {
            out.insert("initialSyncOplogStart", ts);
        }
        if let Some((_, end)) = self.finished {
            out.insert("initialSyncEnd", end);
        }
        out
    }
}

fn db_of(ns: &str) -> String {
    ns.split('.').next().unwrap_or("").to_string()
}

async fn call(member: &Member, link: &Link, cmd: Document) -> Result<Document, String> {
    let r = link.call(member, &cmd, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    if r.get("ok").and_then(as_f64) != Some(1.0) {
        return Err(format!("sync source answered {r}"));
    }
    Ok(r)
}

fn first_batch(r: &Document, key: &str) -> (Vec<Document>, i64) {
    let c = r.get_document("cursor").cloned().unwrap_or_default();
    let docs = c.get_array(key).map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect()).unwrap_or_default();
    (docs, c.get("id").and_then(as_i64).unwrap_or(0))
}

fn still_syncing(member: &Member) -> Result<(), String> {
    match member.lock().role {
        Role::Startup2 => Ok(()),
        other => Err(format!("left STARTUP2 (now {other:?})")),
    }
}

const PREF: &str = "primaryPreferred";

pub async fn run(member: &Member, link: &Link) -> Result<(), String> {
    let rate = member.tuning.initial_sync_bytes_per_sec;
    let failed = member.lock().initial_sync.as_ref().map_or(0, |p| p.failed_attempts);
    member.lock().initial_sync = Some(Progress::new(rate, failed));
    let read = |mut d: Document, db: &str| {
        d.insert("$db", db);
        d.insert("$readPreference", doc! {"mode": PREF});
        d
    };
    // 1. Where oplog application will start.
    let r = call(member, link, read(doc! { "find": "oplog.rs", "sort": {"ts": -1}, "limit": 1 }, "local")).await?;
    let begin = first_batch(&r, "firstBatch").0.first().and_then(Entry::from_doc).ok_or("sync source has an empty oplog")?;
    // 2. What there is to copy.
    let dbs = call(member, link, doc! { "listDatabases": 1, "$db": "admin" }).await?;
    let mut colls = Vec::new();
    for db in dbs.get_array("databases").map(|a| a.to_vec()).unwrap_or_default() {
        let Some(name) = db.as_document().and_then(|d| d.get_str("name").ok()).map(str::to_string) else { continue };
        if name == "local" {
            continue;
        }
        let r = call(member, link, read(doc! { "listCollections": 1, "nameOnly": true }, &name)).await?;
        for c in first_batch(&r, "firstBatch").0 {
            let coll = c.get_str("name").unwrap_or("").to_string();
            let stats = call(member, link, read(doc! { "collStats": coll.clone() }, &name)).await?;
            colls.push(CollProgress {
                ns: format!("{name}.{coll}"),
                docs_to_copy: stats.get("count").and_then(as_i64).unwrap_or(0),
                docs_copied: 0,
                bytes_to_copy: stats.get("size").and_then(as_i64).unwrap_or(0),
                bytes_copied: 0,
                batches: 0,
                start: None,
                end: None,
            });
        }
    }
    {
        let mut st = member.lock();
        if st.role != Role::Startup2 {
            return Err("left STARTUP2".into());
        }
        member.persist(&[doc! {"k": "synced", "v": false}, doc! {"k": "reset"}], true).map_err(|e| e.to_string())?;
        st.data = Default::default();
        st.oplog.clear();
        st.txns.clear();
        if let Some(p) = st.initial_sync.as_mut() {
            p.total_bytes = colls.iter().map(|c| c.bytes_to_copy).sum();
            p.oplog_start = Some(begin.ts);
            p.colls = colls.clone();
        }
    }
    // 3. Clone, collection by collection.
    for (i, c) in colls.iter().enumerate() {
        let (db, coll) = c.ns.split_once('.').unwrap_or(("", ""));
        set_coll(member, i, |p| p.start = Some(DateTime::now()));
        let r = call(member, link, read(doc! { "find": coll, "batchSize": 50 }, db)).await?;
        let (mut docs, mut cursor) = first_batch(&r, "firstBatch");
        loop {
            store_batch(member, i, &c.ns, &docs, rate).await?;
            if cursor == 0 {
                break;
            }
            let r = call(member, link, doc! { "getMore": cursor, "collection": coll, "batchSize": 50, "$db": db }).await?;
            (docs, cursor) = first_batch(&r, "nextBatch");
        }
        set_coll(member, i, |p| p.end = Some(DateTime::now()));
    }
    // 4. The oplog since step 1, then SECONDARY.
    let mut after = begin.optime();
    let mut pending = vec![begin];
    loop {
        still_syncing(member)?;
        {
            let mut st = member.lock();
            let recs: Vec<Document> = pending.iter().map(|e| doc! {"k": "op", "e": e.to_doc()}).collect();
            member.persist(&recs, true).map_err(|e| e.to_string())?;
            let n = pending.len() as i64;
            for e in pending.drain(..) {
                st.apply_entry(e);
            }
            if let Some(p) = st.initial_sync.as_mut() {
                p.applied_ops += n;
            }
        }
        let r = call(
            member,
            link,
            doc! { "ridondatoOplogFetch": 1, "from": member.me.clone(),
            "after": after.to_doc(), "limit": 1000, "maxAwaitMS": 0, "$db": "admin" },
        )
        .await?;
        if r.get_bool("diverged").unwrap_or(false) {
            return Err("sync source's oplog no longer has the initial sync start point".into());
        }
        pending = r.get_array("entries").map(|a| a.iter().filter_map(|b| b.as_document().and_then(Entry::from_doc)).collect()).unwrap_or_default();
        match pending.last() {
            Some(e) => after = e.optime(),
            None => break,
        }
    }
    let mut st = member.lock();
    if st.role != Role::Startup2 {
        return Err("left STARTUP2".into());
    }
    member.persist(&[doc! {"k": "synced", "v": true}], true).map_err(|e| e.to_string())?;
    st.synced = true;
    st.role = Role::Secondary;
    if let Some(p) = st.initial_sync.as_mut() {
        p.copied_bytes = p.total_bytes;
        p.finished = Some((Instant::now(), DateTime::now()));
    }
    tracing::info!(me = %member.me, "initial sync done");
    member.changed(&mut st);
    Ok(())
}

fn set_coll(member: &Member, i: usize, f: impl FnOnce(&mut CollProgress)) {
    if let Some(c) = member.lock().initial_sync.as_mut().and_then(|p| p.colls.get_mut(i)) {
        f(c);
    }
}

async fn store_batch(member: &Member, i: usize, ns: &str, docs: &[Document], rate: u64) -> Result<(), String> {
    if docs.is_empty() {
        return Ok(());
    }
    let bytes: usize = docs.iter().map(|d| bson::to_vec(d).map_or(0, |v| v.len())).sum();
    if rate > 0 {
        tokio::time::sleep(Duration::from_secs_f64(bytes as f64 / rate as f64)).await;
    }
    still_syncing(member)?;
    let mut st = member.lock();
    let recs: Vec<Document> = docs.iter().map(|d| doc! {"k": "put", "ns": ns, "o": Bson::Document(d.clone())}).collect();
    member.persist(&recs, true).map_err(|e| e.to_string())?;
    for d in docs {
        st.data.coll_mut(ns).put(d.clone());
    }
    if let Some(p) = st.initial_sync.as_mut() {
        p.copied_bytes += bytes as i64;
        if let Some(c) = p.colls.get_mut(i) {
            c.docs_copied += docs.len() as i64;
            c.bytes_copied += bytes as i64;
            c.batches += 1;
        }
    }
    Ok(())
}
