//! `find`, `getMore`, `killCursors`, `count`, `aggregate` (the stages `count_documents` and simple
//! pipelines use), and the catalogue commands `listDatabases`, `listCollections`, `listIndexes`,
//! `collStats`. `local.oplog.rs` is readable like any collection.

use bson::{doc, Bson, Document};

use crate::crud::{check_read, open_cursor, take_batch};
use crate::error::{CmdError, CmdResult};
use crate::member::{Member, State};
use crate::query::{as_i64, get_path, matches, project, sort_docs};

pub const OPLOG_NS: &str = "local.oplog.rs";

pub fn run(member: &Member, name: &str, db: &str, cmd: &Document) -> CmdResult {
    let mut st = member.lock();
    match name {
        "getMore" => return get_more(&mut st, cmd),
        "killCursors" => return kill_cursors(&mut st, cmd),
        "listDatabases" => return Ok(list_databases(&st, cmd)),
        _ => {}
    }
    check_read(member, &st, cmd)?;
    let coll = cmd.get_str(name).unwrap_or("");
    let ns = format!("{db}.{coll}");
    match name {
        "find" => {
            let mut docs = scan(&st, &ns, cmd.get_document("filter").ok())?;
            sort_docs(&mut docs, &cmd.get_document("sort").cloned().unwrap_or_default());
            let skip = cmd.get("skip").and_then(as_i64).unwrap_or(0).max(0) as usize;
            let limit = cmd.get("limit").and_then(as_i64).unwrap_or(0);
            let proj = cmd.get_document("projection").cloned().unwrap_or_default();
            let mut docs: Vec<Document> = docs.into_iter().skip(skip).map(|d| project(&d, &proj)).collect();
            if limit != 0 {
                docs.truncate(limit.unsigned_abs() as usize);
            }
            let single = limit < 0 || cmd.get_bool("singleBatch").unwrap_or(false);
            let (first, id) = open_cursor(&mut st, &ns, docs, cmd.get("batchSize").and_then(as_i64), single);
            Ok(doc! { "cursor": { "firstBatch": first, "id": id, "ns": ns } })
        }
        "count" => {
            let docs = scan(&st, &ns, cmd.get_document("query").ok())?;
            let skip = cmd.get("skip").and_then(as_i64).unwrap_or(0).max(0) as usize;
            let mut n = docs.len().saturating_sub(skip);
            if let Some(l) = cmd.get("limit").and_then(as_i64).filter(|l| *l != 0) {
                n = n.min(l.unsigned_abs() as usize);
            }
            Ok(doc! { "n": n as i32 })
        }
        "aggregate" => {
            let Ok(pipeline) = cmd.get_array("pipeline") else {
                return Err(CmdError::FailedToParse("'pipeline' option must be specified as an array"));
            };
            let docs = aggregate(scan(&st, &ns, None)?, pipeline)?;
            let batch = cmd.get_document("cursor").ok().and_then(|c| c.get("batchSize")).and_then(as_i64);
            let (first, id) = open_cursor(&mut st, &ns, docs, batch, false);
            Ok(doc! { "cursor": { "firstBatch": first, "id": id, "ns": ns } })
        }
        "listCollections" => {
            let mut names: Vec<String> = st.data.colls.keys().filter_map(|n| n.strip_prefix(&format!("{db}.")).map(str::to_string)).collect();
            if db == "local" {
                names.push("oplog.rs".into());
            }
            let filter = cmd.get_document("filter").cloned().unwrap_or_default();
            let mut out = Vec::new();
            for n in names {
                let d = doc! { "name": n, "type": "collection", "options": {}, "info": { "readOnly": false },
                "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } };
                if matches(&d, &filter)? {
                    out.push(d);
                }
            }
            let (first, id) = open_cursor(&mut st, &format!("{db}.$cmd.listCollections"), out, None, false);
            Ok(doc! { "cursor": { "firstBatch": first, "id": id, "ns": format!("{db}.$cmd.listCollections") } })
        }
        "listIndexes" => {
            if st.data.coll(&ns).is_none() {
                return Err(CmdError::NamespaceNotFound(format!("ns does not exist: {ns}")));
            }
            Ok(doc! { "cursor": { "firstBatch": [{ "v": 2, "key": { "_id": 1 }, "name": "_id_" }], "id": 0i64, "ns": ns } })
        }
        _ => {
            let (count, size) = st.data.coll(&ns).map_or((0, 0), |c| (c.len(), c.bytes));
            Ok(doc! { "ns": ns, "count": count as i64, "size": size as i64,
            "avgObjSize": size.checked_div(count).unwrap_or(0) as i64,
            "storageSize": size as i64, "nindexes": 1, "totalIndexSize": 0i64 })
        }
    }
}

fn scan(st: &State, ns: &str, filter: Option<&Document>) -> CmdResult<Vec<Document>> {
    let empty = Document::new();
    let filter = filter.unwrap_or(&empty);
    let mut out = Vec::new();
    if ns == OPLOG_NS {
        for e in &st.oplog {
            let d = e.to_doc();
            if matches(&d, filter)? {
                out.push(d);
            }
        }
    } else if let Some(c) = st.data.coll(ns) {
        for d in c.iter() {
            if matches(d, filter)? {
                out.push(d.clone());
            }
        }
    }
    Ok(out)
}

fn get_more(st: &mut State, cmd: &Document) -> CmdResult {
    let id = cmd.get("getMore").and_then(as_i64).unwrap_or(0);
    let batch = cmd.get("batchSize").and_then(as_i64);
    let Some(cursor) = st.cursors.get_mut(&id) else {
        return Err(CmdError::CursorNotFound(format!("cursor id {id} not found")));
    };
    let next = take_batch(&mut cursor.docs, batch);
    let ns = cursor.ns.clone();
    let left = if cursor.docs.is_empty() {
        st.cursors.remove(&id);
        0
    } else {
        id
    };
    Ok(doc! { "cursor": { "nextBatch": next, "id": left, "ns": ns } })
}

fn kill_cursors(st: &mut State, cmd: &Document) -> CmdResult {
    let (mut killed, mut missing) = (Vec::new(), Vec::new());
    for id in cmd.get_array("cursors").map(|a| a.iter().filter_map(as_i64).collect::<Vec<_>>()).unwrap_or_default() {
        if st.cursors.remove(&id).is_some() {
            killed.push(id)
        } else {
            missing.push(id)
        }
    }
    Ok(doc! { "cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": [] })
}

fn list_databases(st: &State, cmd: &Document) -> Document {
    let name_only = cmd.get_bool("nameOnly").unwrap_or(false);
    let mut dbs = st.data.databases();
    let oplog_bytes: usize = st.oplog.iter().map(|e| e.approx_bytes()).sum();
    *dbs.entry("local".into()).or_insert(0) += oplog_bytes;
    let total: usize = dbs.values().sum();
    let list: Vec<Bson> = dbs
        .into_iter()
        .map(|(name, size)| {
            if name_only {
                doc! {"name": name}
            } else {
                doc! { "name": name, "sizeOnDisk": size as i64, "empty": size == 0 }
            }
        })
        .map(Bson::Document)
        .collect();
    if name_only {
        doc! { "databases": list }
    } else {
        doc! { "databases": list, "totalSize": total as i64, "totalSizeMb": (total >> 20) as i64 }
    }
}

/// `$match`, `$sort`, `$skip`, `$limit`, `$project`, `$count`, and `$group` with `$sum`/`$count`
/// accumulators: enough for the driver's `count_documents` (`$match` + `$group {n: {$sum: 1}}`).
fn aggregate(mut docs: Vec<Document>, pipeline: &[Bson]) -> CmdResult<Vec<Document>> {
    for stage in pipeline {
        let Some((name, arg)) = stage.as_document().and_then(|d| d.iter().next()) else {
            return Err(CmdError::FailedToParse("a pipeline stage must be a one-field document"));
        };
        match (name.as_str(), arg) {
            ("$match", Bson::Document(f)) => {
                let mut kept = Vec::new();
                for d in docs {
                    if matches(&d, f)? {
                        kept.push(d);
                    }
                }
                docs = kept;
            }
            ("$sort", Bson::Document(s)) => sort_docs(&mut docs, s),
            ("$skip", n) => docs = docs.into_iter().skip(as_i64(n).unwrap_or(0).max(0) as usize).collect(),
            ("$limit", n) => docs.truncate(as_i64(n).unwrap_or(0).max(0) as usize),
            ("$project", Bson::Document(p)) => docs = docs.iter().map(|d| project(d, p)).collect(),
            ("$count", Bson::String(field)) => docs = vec![doc! { field.clone(): docs.len() as i32 }],
            ("$group", Bson::Document(g)) => docs = group(&docs, g)?,
            (other, _) => return Err(CmdError::new(40324, "Location40324", format!("Unrecognized pipeline stage name: '{other}'"))),
        }
    }
    Ok(docs)
}

fn eval(d: &Document, e: &Bson) -> Bson {
    match e {
        Bson::String(s) if s.starts_with('$') => get_path(d, &s[1..]).cloned().unwrap_or(Bson::Null),
        other => other.clone(),
    }
}

fn group(docs: &[Document], spec: &Document) -> CmdResult<Vec<Document>> {
    let key = spec.get("_id").cloned().unwrap_or(Bson::Null);
    let mut groups: Vec<(Bson, Document)> = Vec::new();
    for d in docs {
        let k = eval(d, &key);
        let idx = match groups.iter().position(|(g, _)| crate::query::compare(g, &k).is_eq()) {
            Some(i) => i,
            None => {
                groups.push((k.clone(), doc! { "_id": k }));
                groups.len() - 1
            }
        };
        let out = &mut groups[idx].1;
        for (field, acc) in spec.iter().filter(|(f, _)| *f != "_id") {
            let Some((op, arg)) = acc.as_document().and_then(|a| a.iter().next()) else {
                return Err(CmdError::FailedToParse(format!("accumulator for {field} must be an object")));
            };
            let add = match op.as_str() {
                "$sum" => eval(d, arg),
                "$count" => Bson::Int32(1),
                other => return Err(CmdError::new(15952, "Location15952", format!("unknown group operator '{other}'"))),
            };
            let cur = out.get(field).cloned().unwrap_or(Bson::Int32(0));
            let sum = match (&cur, &add) {
                (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(a + b),
                (Bson::Double(_), _) | (_, Bson::Double(_)) => {
                    Bson::Double(crate::query::as_f64(&cur).unwrap_or(0.0) + crate::query::as_f64(&add).unwrap_or(0.0))
                }
                _ => Bson::Int64(as_i64(&cur).unwrap_or(0) + crate::query::as_f64(&add).map_or(0, |f| f as i64)),
            };
            out.insert(field.clone(), sum);
        }
    }
    Ok(groups.into_iter().map(|(_, d)| d).collect())
}
