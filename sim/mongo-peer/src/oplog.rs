//! Oplog entries as in `local.oplog.rs`
//! (<https://www.mongodb.com/docs/manual/core/replica-set-oplog/>): `{ts, t, op, ns, o, o2,
//! wall}` plus the session fields (`lsid`, `txnNumber`, `stmtId`) that let any member that
//! replicated a retryable write recognise its retry.
//!
//! Peer simplification: an update is logged as the full post-image (`op: "u"`, `o2: {_id}`), not
//! as mongod's `$v: 2` diff; applying it is a replacement, which keeps application idempotent.

use bson::{doc, Bson, DateTime, Document, Timestamp};

/// Ordered as mongod orders OpTimes: by term, then timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpTime {
    pub t: i64,
    pub ts: Timestamp,
}

impl OpTime {
    pub const NULL: OpTime = OpTime { t: -1, ts: Timestamp { time: 0, increment: 0 } };

    pub fn to_doc(self) -> Document {
        doc! { "ts": self.ts, "t": self.t }
    }

    pub fn from_bson(v: Option<&Bson>) -> Option<OpTime> {
        let d = v?.as_document()?;
        let ts = match d.get("ts")? {
            Bson::Timestamp(ts) => *ts,
            _ => return None,
        };
        let t = crate::query::as_i64(d.get("t")?)?;
        Some(OpTime { t, ts })
    }

    pub fn date(self) -> DateTime {
        DateTime::from_millis(i64::from(self.ts.time) * 1000)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: Timestamp,
    pub t: i64,
    /// "i" insert, "u" update (post-image), "d" delete, "c" command, "n" no-op.
    pub op: String,
    pub ns: String,
    pub o: Document,
    pub o2: Option<Document>,
    pub wall: DateTime,
    pub lsid: Option<Document>,
    pub txn_number: Option<i64>,
    pub stmt_id: Option<i32>,
}

impl Entry {
    pub fn optime(&self) -> OpTime {
        OpTime { t: self.t, ts: self.ts }
    }

    pub fn to_doc(&self) -> Document {
        let mut d = doc! { "ts": self.ts, "t": self.t, "v": 2, "op": self.op.clone(),
        "ns": self.ns.clone(), "wall": self.wall, "o": self.o.clone() };
        if let Some(o2) = &self.o2 {
            d.insert("o2", o2.clone());
        }
        if let (Some(lsid), Some(n)) = (&self.lsid, self.txn_number) {
            d.insert("lsid", lsid.clone());
            d.insert("txnNumber", n);
            d.insert("stmtId", self.stmt_id.unwrap_or(0));
        }
        d
    }

    pub fn from_doc(d: &Document) -> Option<Entry> {
        let ts = match d.get("ts")? {
            Bson::Timestamp(ts) => *ts,
            _ => return None,
        };
        Some(Entry {
            ts,
            t: crate::query::as_i64(d.get("t")?)?,
            op: d.get_str("op").ok()?.to_string(),
            ns: d.get_str("ns").ok()?.to_string(),
            o: d.get_document("o").ok()?.clone(),
            o2: d.get_document("o2").ok().cloned(),
            wall: d.get_datetime("wall").ok().copied().unwrap_or_else(DateTime::now),
            lsid: d.get_document("lsid").ok().cloned(),
            txn_number: d.get("txnNumber").and_then(crate::query::as_i64),
            stmt_id: d.get_i32("stmtId").ok(),
        })
    }

    /// Rough size, for initial-sync byte accounting and lag figures.
    pub fn approx_bytes(&self) -> usize {
        bson::to_vec(&self.o).map(|v| v.len()).unwrap_or(0) + 64
    }
}

/// The next timestamp after `last`: wall-clock seconds, with an increment within the second.
pub fn next_ts(last: Timestamp) -> Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
    if now > last.time {
        Timestamp { time: now, increment: 1 }
    } else {
        Timestamp { time: last.time, increment: last.increment + 1 }
    }
}
