//! `insert`, `update`, `delete` and collection DDL on the primary, with retryable writes
//! (<https://www.mongodb.com/docs/manual/core/retryable-writes/>): a statement already executed
//! under the same `lsid` and `txnNumber` (found through the oplog, so a new primary knows it
//! too) is not executed again and is answered as the first time.

use std::sync::Arc;

use bson::{doc, oid::ObjectId, Bson, DateTime, Document};

use crate::crud::{check_primary, session};
use crate::data::{apply_update, id_key};
use crate::error::{CmdError, CmdResult};
use crate::member::{Member, State};
use crate::oplog::{next_ts, Entry, OpTime};
use crate::query::{as_i64, matches};

/// The statements of one write command, collected under the state lock.
struct Batch {
    recs: Vec<Document>,
    session: Option<(Document, i64)>,
}

impl Batch {
    fn new(st: &State, cmd: &Document) -> CmdResult<Batch> {
        let session = session(cmd);
        if let Some((lsid, n)) = &session {
            if let Some((cur, _)) = st.txns.get(&id_key(&Bson::Document(lsid.clone()))) {
                if n < cur {
                    return Err(CmdError::TransactionTooOld(format!(
                        "Retryable write with txnNumber {n} is prohibited on session because a newer retryable write with txnNumber {cur} has already started on this session.")));
                }
            }
        }
        Ok(Batch { recs: Vec::new(), session })
    }

    fn already_done(&self, st: &State, stmt: i32) -> bool {
        self.session
            .as_ref()
            .is_some_and(|(lsid, n)| st.txns.get(&id_key(&Bson::Document(lsid.clone()))).is_some_and(|(cur, done)| cur == n && done.contains(&stmt)))
    }

    fn log(&mut self, st: &mut State, op: &str, ns: &str, o: Document, o2: Option<Document>, stmt: i32) {
        let e = Entry {
            ts: next_ts(st.last_ts),
            t: st.term,
            op: op.into(),
            ns: ns.into(),
            o,
            o2,
            wall: DateTime::now(),
            lsid: self.session.as_ref().map(|s| s.0.clone()),
            txn_number: self.session.as_ref().map(|s| s.1),
            stmt_id: Some(stmt),
        };
        self.recs.push(doc! { "k": "op", "e": e.to_doc() });
        st.apply_entry(e);
    }

    /// Persists (fsync) what was applied, still under the state lock so the log keeps oplog
    /// order; runs even when a statement failed half-way, since earlier ones are applied.
    fn commit(&self, member: &Member, st: &State) -> CmdResult<OpTime> {
        if !self.recs.is_empty() {
            member.persist(&self.recs, true)?;
        }
        Ok(st.last_optime())
    }

    /// Waits for the write concern; only then is the write acknowledged.
    async fn finish(self, member: &Member, at: OpTime, reply: CmdResult, cmd: &Document) -> CmdResult {
        let mut reply = reply?;
        member.oplog_tick.send_modify(|v| *v += 1);
        let wc = cmd.get_document("writeConcern").ok();
        if let Some(err) = crate::replication::wait_for_write_concern(member, at, wc).await {
            let code = err.get_i32("code").unwrap_or(0);
            if self.session.is_some() && [189, 11602, 91].contains(&code) {
                reply.insert("errorLabels", vec!["RetryableWriteError"]);
            }
            reply.insert("writeConcernError", err);
        }
        Ok(reply)
    }
}

fn dup_key(ns: &str, index: usize, id: &Bson) -> Bson {
    Bson::Document(doc! { "index": index as i32, "code": 11000,
    "errmsg": format!("E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {id} }}") })
}

fn with_id(mut d: Document) -> Document {
    if d.contains_key("_id") {
        return d;
    }
    let mut out = doc! { "_id": ObjectId::new() };
    out.extend(std::mem::take(&mut d));
    out
}

fn docs_of<'a>(cmd: &'a Document, field: &str) -> Vec<&'a Document> {
    cmd.get_array(field).map(|a| a.iter().filter_map(Bson::as_document).collect()).unwrap_or_default()
}

pub async fn insert(member: &Arc<Member>, db: &str, cmd: &Document) -> CmdResult {
    let ns = format!("{db}.{}", cmd.get_str("insert").unwrap_or(""));
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let (batch, reply, at) = {
        let mut st = member.lock();
        check_primary(member, &st, session(cmd).is_some())?;
        let mut b = Batch::new(&st, cmd)?;
        let (mut n, mut errors) = (0, Vec::new());
        for (i, d) in docs_of(cmd, "documents").into_iter().enumerate() {
            if b.already_done(&st, i as i32) {
                n += 1;
                continue;
            }
            let d = with_id(d.clone());
            let id = d.get("_id").cloned().unwrap_or(Bson::Null);
            if st.data.coll(&ns).is_some_and(|c| c.get(&id).is_some()) {
                errors.push(dup_key(&ns, i, &id));
                if ordered {
                    break;
                } else {
                    continue;
                }
            }
            b.log(&mut st, "i", &ns, d, None, i as i32);
            n += 1;
        }
        let mut reply = doc! { "n": n };
        if !errors.is_empty() {
            reply.insert("writeErrors", errors);
        }
        let at = b.commit(member, &st)?;
        (b, Ok(reply), at)
    };
    batch.finish(member, at, reply, cmd).await
}

pub async fn update(member: &Arc<Member>, db: &str, cmd: &Document) -> CmdResult {
    let ns = format!("{db}.{}", cmd.get_str("update").unwrap_or(""));
    let ordered = cmd.get_bool("ordered").unwrap_or(true);
    let (batch, reply, at) = {
        let mut st = member.lock();
        check_primary(member, &st, session(cmd).is_some())?;
        let mut b = Batch::new(&st, cmd)?;
        let reply = (|| -> CmdResult {
            let (mut n, mut modified, mut upserted, mut errors) = (0, 0, Vec::new(), Vec::new());
            for (i, u) in docs_of(cmd, "updates").into_iter().enumerate() {
                if b.already_done(&st, i as i32) {
                    // Retryable updates are single-document, so the first execution touched one.
                    n += 1;
                    modified += 1;
                    continue;
                }
                let q = u.get_document("q").cloned().unwrap_or_default();
                let Some(change) = u.get_document("u").ok() else {
                    errors.push(Bson::Document(doc! { "index": i as i32, "code": 9, "errmsg": "pipeline updates are not modelled" }));
                    if ordered {
                        break;
                    } else {
                        continue;
                    }
                };
                let multi = u.get_bool("multi").unwrap_or(false);
                let mut hits = Vec::new();
                for d in st.data.coll(&ns).map(|c| c.iter().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                    if matches(&d, &q)? {
                        hits.push(d);
                        if !multi {
                            break;
                        }
                    }
                }
                if hits.is_empty() && u.get_bool("upsert").unwrap_or(false) {
                    let seed: Document = q
                        .iter()
                        .filter(|(k, v)| !k.starts_with('$') && !matches!(v, Bson::Document(d) if d.keys().any(|k| k.starts_with('$'))))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let new = with_id(apply_update(&seed, change)?);
                    upserted.push(Bson::Document(doc! { "index": i as i32, "_id": new.get("_id").cloned().unwrap_or(Bson::Null) }));
                    b.log(&mut st, "i", &ns, new, None, i as i32);
                    n += 1;
                    continue;
                }
                for old in hits {
                    n += 1;
                    let new = apply_update(&old, change)?;
                    if new != old {
                        modified += 1;
                        let id = doc! { "_id": old.get("_id").cloned().unwrap_or(Bson::Null) };
                        b.log(&mut st, "u", &ns, new, Some(id), i as i32);
                    }
                }
            }
            let mut reply = doc! { "n": n, "nModified": modified };
            if !upserted.is_empty() {
                reply.insert("upserted", upserted);
            }
            if !errors.is_empty() {
                reply.insert("writeErrors", errors);
            }
            Ok(reply)
        })();
        let at = b.commit(member, &st)?;
        (b, reply, at)
    };
    batch.finish(member, at, reply, cmd).await
}

pub async fn delete(member: &Arc<Member>, db: &str, cmd: &Document) -> CmdResult {
    let ns = format!("{db}.{}", cmd.get_str("delete").unwrap_or(""));
    let (batch, reply, at) = {
        let mut st = member.lock();
        check_primary(member, &st, session(cmd).is_some())?;
        let mut b = Batch::new(&st, cmd)?;
        let reply = (|| -> CmdResult {
            let mut n = 0;
            for (i, del) in docs_of(cmd, "deletes").into_iter().enumerate() {
                if b.already_done(&st, i as i32) {
                    n += 1;
                    continue;
                }
                let q = del.get_document("q").cloned().unwrap_or_default();
                let one = del.get("limit").and_then(as_i64).unwrap_or(0) == 1;
                let mut ids = Vec::new();
                for d in st.data.coll(&ns).map(|c| c.iter().collect::<Vec<_>>()).unwrap_or_default() {
                    if matches(d, &q)? {
                        ids.push(d.get("_id").cloned().unwrap_or(Bson::Null));
                        if one {
                            break;
                        }
                    }
                }
                for id in ids {
                    b.log(&mut st, "d", &ns, doc! { "_id": id }, None, i as i32);
                    n += 1;
                }
            }
            Ok(doc! { "n": n })
        })();
        let at = b.commit(member, &st)?;
        (b, reply, at)
    };
    batch.finish(member, at, reply, cmd).await
}

pub async fn ddl(member: &Arc<Member>, name: &str, db: &str, cmd: &Document) -> CmdResult {
    let (batch, reply, at) = {
        let mut st = member.lock();
        check_primary(member, &st, false)?;
        let mut b = Batch::new(&st, &Document::new())?;
        let ns = format!("{db}.$cmd");
        let reply = match name {
            "create" => {
                let coll = cmd.get_str("create").unwrap_or("");
                if st.data.coll(&format!("{db}.{coll}")).is_some() {
                    return Err(CmdError::new(48, "NamespaceExists", format!("Collection {db}.{coll} already exists.")));
                }
                b.log(&mut st, "c", &ns, doc! { "create": coll }, None, 0);
                doc! {}
            }
            "drop" => {
                let coll = cmd.get_str("drop").unwrap_or("");
                let full = format!("{db}.{coll}");
                if st.data.coll(&full).is_some() {
                    b.log(&mut st, "c", &ns, doc! { "drop": coll }, None, 0);
                }
                doc! { "ns": full, "nIndexesWas": 1 }
            }
            _ => {
                b.log(&mut st, "c", &ns, doc! { "dropDatabase": 1 }, None, 0);
                doc! { "dropped": db }
            }
        };
        let at = b.commit(member, &st)?;
        (b, Ok(reply), at)
    };
    batch.finish(member, at, reply, cmd).await
}
