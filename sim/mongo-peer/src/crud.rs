//! Data commands: dispatch, and the checks every read or write makes first (a write needs the
//! primary, a read on a secondary needs a non-primary read preference) plus server cursors.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{doc, Bson, Document};

use crate::error::{CmdError, CmdResult};
use crate::member::{Member, Role, State};
use crate::query::as_i64;

/// A server-side cursor: the rest of a result, materialised at `find`/`aggregate` time.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub ns: String,
    pub docs: VecDeque<Document>,
}

/// Bytes per batch, kept well under the 48 MB message limit.
const BATCH_BYTES: usize = 8 << 20;

pub async fn run(member: &Arc<Member>, name: &str, db: &str, cmd: &Document) -> CmdResult {
    if cmd.get_bool("startTransaction").unwrap_or(false) || cmd.contains_key("autocommit") {
        return Err(CmdError::new(20, "IllegalOperation", "multi-document transactions are not modelled by this peer"));
    }
    match name {
        "insert" => crate::writes::insert(member, db, cmd).await,
        "update" => crate::writes::update(member, db, cmd).await,
        "delete" => crate::writes::delete(member, db, cmd).await,
        "drop" | "create" | "dropDatabase" => crate::writes::ddl(member, name, db, cmd).await,
        "createIndexes" => {
            check_primary(member, &member.lock(), false)?;
            Ok(doc! { "numIndexesBefore": 1, "numIndexesAfter": 1,
            "note": "secondary indexes are accepted but not modelled by this peer" })
        }
        _ => crate::reads::run(member, name, db, cmd),
    }
}

fn topology_version(member: &Member, st: &State) -> Document {
    doc! { "processId": member.process_id, "counter": st.counter }
}

/// Writes go to the primary only. mongod labels the error RetryableWriteError when the command
/// was a retryable write (it carried a txnNumber), and adds its topologyVersion so the driver can
/// tell whether its view of this server is already newer than the error.
pub fn check_primary(member: &Member, st: &State, retryable: bool) -> CmdResult<()> {
    if st.role == Role::Primary {
        return Ok(());
    }
    let mut e = CmdError::NotWritablePrimary("not primary").with_extra("topologyVersion", topology_version(member, st));
    if retryable {
        e = e.with_label("RetryableWriteError");
    }
    Err(e)
}

fn secondary_ok(cmd: &Document) -> bool {
    let by_pref = cmd.get_document("$readPreference").ok().and_then(|p| p.get_str("mode").ok()).is_some_and(|m| m != "primary");
    let flag = |k: &str| cmd.get(k).is_some_and(|v| v.as_bool().unwrap_or_else(|| as_i64(v) == Some(1)));
    by_pref || flag("secondaryOk") || flag("slaveOk")
}

pub fn check_read(member: &Member, st: &State, cmd: &Document) -> CmdResult<()> {
    match st.role {
        Role::Primary => Ok(()),
        Role::Secondary if secondary_ok(cmd) => Ok(()),
        Role::Secondary => {
            Err(CmdError::NotPrimaryNoSecondaryOk("not primary and secondaryOk=false").with_extra("topologyVersion", topology_version(member, st)))
        }
        _ => Err(CmdError::NotPrimaryOrSecondary("node is not in primary or recovering state").with_extra("topologyVersion", topology_version(member, st))),
    }
}

/// Splits off a first batch and parks the rest as a cursor (id 0 when nothing is left).
pub fn open_cursor(st: &mut State, ns: &str, docs: Vec<Document>, batch: Option<i64>, single: bool) -> (Vec<Bson>, i64) {
    let mut rest: VecDeque<Document> = docs.into();
    let first = take_batch(&mut rest, Some(batch.unwrap_or(101)));
    if rest.is_empty() || single {
        return (first, 0);
    }
    let id = st.next_cursor;
    st.next_cursor += 1;
    st.cursors.insert(id, Cursor { ns: ns.to_string(), docs: rest });
    (first, id)
}

pub fn take_batch(rest: &mut VecDeque<Document>, batch: Option<i64>) -> Vec<Bson> {
    let max = batch.filter(|b| *b > 0).map_or(usize::MAX, |b| b as usize);
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    while out.len() < max && bytes < BATCH_BYTES {
        let Some(d) = rest.pop_front() else { break };
        bytes += bson::to_vec(&d).map_or(0, |v| v.len());
        out.push(Bson::Document(d));
    }
    out
}

/// `(lsid, txnNumber)` of a retryable write.
pub fn session(cmd: &Document) -> Option<(Document, i64)> {
    let lsid = cmd.get_document("lsid").ok()?.clone();
    let n = cmd.get("txnNumber").and_then(as_i64)?;
    Some((lsid, n))
}
