//! The documents, per namespace, in insertion order, and how oplog entries change them.

use std::collections::{BTreeMap, HashMap};

use bson::{doc, Bson, Document};

use crate::error::{CmdError, CmdResult};
use crate::oplog::Entry;

#[derive(Debug, Default, Clone)]
pub struct Collection {
    docs: BTreeMap<u64, Document>,
    by_id: HashMap<Vec<u8>, u64>,
    next: u64,
    pub bytes: usize,
}

/// `_id` values are keyed by their BSON encoding, so 1 and 1.0 are different ids here (mongod
/// would treat them as equal; nothing we test relies on that).
pub fn id_key(id: &Bson) -> Vec<u8> {
    bson::to_vec(&doc! { "": id.clone() }).unwrap_or_default()
}

fn doc_bytes(d: &Document) -> usize {
    bson::to_vec(d).map(|v| v.len()).unwrap_or(0)
}

impl Collection {
    pub fn get(&self, id: &Bson) -> Option<&Document> {
        self.by_id.get(&id_key(id)).and_then(|seq| self.docs.get(seq))
    }

    /// Insert or replace by `_id`; replacing keeps the document's place in natural order.
    pub fn put(&mut self, d: Document) {
        let key = id_key(d.get("_id").unwrap_or(&Bson::Null));
        self.bytes += doc_bytes(&d);
        if let Some(seq) = self.by_id.get(&key) {
            if let Some(old) = self.docs.insert(*seq, d) {
                self.bytes -= doc_bytes(&old);
            }
            return;
        }
        self.next += 1;
        self.by_id.insert(key, self.next);
        self.docs.insert(self.next, d);
    }

    pub fn remove(&mut self, id: &Bson) -> Option<Document> {
        let seq = self.by_id.remove(&id_key(id))?;
        let old = self.docs.remove(&seq)?;
        self.bytes -= doc_bytes(&old);
        Some(old)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Document> {
        self.docs.values()
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }
}

#[derive(Debug, Default, Clone)]
pub struct Data {
    pub colls: BTreeMap<String, Collection>,
}

impl Data {
    pub fn coll(&self, ns: &str) -> Option<&Collection> {
        self.colls.get(ns)
    }

    pub fn coll_mut(&mut self, ns: &str) -> &mut Collection {
        self.colls.entry(ns.to_string()).or_default()
    }

    /// Applies one entry. Idempotent (insert = upsert, delete of a missing id is a no-op), so
    /// that initial sync and rollback may re-apply entries whose effects were already copied.
    pub fn apply(&mut self, e: &Entry) {
        match e.op.as_str() {
            "i" | "u" => self.coll_mut(&e.ns).put(e.o.clone()),
            "d" => {
                if let Some(id) = e.o.get("_id") {
                    if let Some(c) = self.colls.get_mut(&e.ns) {
                        c.remove(id);
                    }
                }
            }
            "c" => {
                let db = e.ns.split('.').next().unwrap_or("");
                if let Ok(coll) = e.o.get_str("drop") {
                    self.colls.remove(&format!("{db}.{coll}"));
                } else if let Ok(coll) = e.o.get_str("create") {
                    self.coll_mut(&format!("{db}.{coll}"));
                } else if e.o.contains_key("dropDatabase") {
                    let prefix = format!("{db}.");
                    self.colls.retain(|ns, _| !ns.starts_with(&prefix));
                }
            }
            _ => {}
        }
    }

    pub fn databases(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (ns, c) in &self.colls {
            let db = ns.split('.').next().unwrap_or("").to_string();
            *out.entry(db).or_insert(0) += c.bytes;
        }
        out
    }
}

/// `$set`, `$unset`, `$inc` on (dotted) top-level fields, or a replacement document.
pub fn apply_update(old: &Document, update: &Document) -> CmdResult<Document> {
    let is_ops = update.keys().next().is_some_and(|k| k.starts_with('$'));
    if !is_ops {
        let mut new = update.clone();
        if let Some(id) = old.get("_id") {
            new.insert("_id", id.clone());
        }
        return Ok(new);
    }
    let mut new = old.clone();
    for (op, fields) in update {
        let Bson::Document(fields) = fields else {
            return Err(CmdError::FailedToParse(format!("{op} needs a document")));
        };
        for (field, value) in fields {
            if field == "_id" {
                return Err(CmdError::new(66, "ImmutableField", "Performing an update on the path '_id' would modify the immutable field '_id'"));
            }
            match op.as_str() {
                "$set" => set_path(&mut new, field, Some(value.clone())),
                "$unset" => set_path(&mut new, field, None),
                "$inc" => {
                    let cur = crate::query::get_path(&new, field).cloned().unwrap_or(Bson::Int32(0));
                    let sum = match (&cur, value) {
                        (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(a + b),
                        (Bson::Double(_), _) | (_, Bson::Double(_)) => {
                            Bson::Double(crate::query::as_f64(&cur).unwrap_or(0.0) + crate::query::as_f64(value).unwrap_or(0.0))
                        }
                        _ => Bson::Int64(crate::query::as_i64(&cur).unwrap_or(0) + crate::query::as_i64(value).unwrap_or(0)),
                    };
                    set_path(&mut new, field, Some(sum));
                }
                other => return Err(CmdError::FailedToParse(format!("Unknown modifier: {other}"))),
            }
        }
    }
    Ok(new)
}

fn set_path(d: &mut Document, path: &str, value: Option<Bson>) {
    match path.split_once('.') {
        None => match value {
            Some(v) => {
                d.insert(path, v);
            }
            None => {
                d.remove(path);
            }
        },
        Some((head, rest)) => {
            if !matches!(d.get(head), Some(Bson::Document(_))) {
                if value.is_none() {
                    return;
                }
                d.insert(head, Document::new());
            }
            if let Some(Bson::Document(sub)) = d.get_mut(head) {
                set_path(sub, rest, value);
            }
        }
    }
}
