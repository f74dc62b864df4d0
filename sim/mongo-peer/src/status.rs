//! `hello` (<https://www.mongodb.com/docs/manual/reference/command/hello/>) and
//! `replSetGetStatus` (<https://www.mongodb.com/docs/manual/reference/command/replSetGetStatus/>).

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, DateTime, Document};

use crate::error::{CmdError, CmdResult};
use crate::member::{election_id, state_str, Member, Role, State};
use crate::query::as_i64;

pub const MAX_BSON: i32 = 16 * 1024 * 1024;
/// MongoDB 7.0. 17+ also makes the driver order primaries by electionId before setVersion,
/// which is what lets it prefer the newer primary during a forced-reconfig split brain.
pub const MAX_WIRE_VERSION: i32 = 21;

pub async fn hello(member: &Arc<Member>, conn_id: i64, name: &str, cmd: &Document) -> CmdResult {
    // Awaitable hello: the driver's monitor sends back the topologyVersion it last saw and we
    // hold the reply until it changes or maxAwaitTimeMS passes. Replies are never streamed with
    // moreToCome (we ignore exhaustAllowed); the driver then sends the next hello itself.
    if let (Some(Bson::Document(tv)), Some(max)) = (cmd.get("topologyVersion"), cmd.get("maxAwaitTimeMS").and_then(as_i64)) {
        let mut rx = member.topology.subscribe();
        let current = *rx.borrow_and_update();
        let same = tv.get_object_id("processId").ok() == Some(member.process_id) && tv.get("counter").and_then(as_i64) == Some(current);
        if same {
            let _ = tokio::time::timeout(Duration::from_millis(max.max(0) as u64), rx.changed()).await;
        }
    }
    let st = member.lock();
    let mut d = doc! { "topologyVersion": { "processId": member.process_id, "counter": st.counter } };
    let writable = st.role == Role::Primary;
    d.insert(if name == "hello" { "isWritablePrimary" } else { "ismaster" }, writable);
    if cmd.contains_key("helloOk") {
        d.insert("helloOk", true);
    }
    match st.config.as_ref().filter(|c| c.member(&member.me).is_some()) {
        Some(cfg) => {
            let list = |f: &dyn Fn(&crate::config::MemberConfig) -> bool| -> Vec<Bson> {
                cfg.members.iter().filter(|m| f(m)).map(|m| Bson::from(m.host.clone())).collect()
            };
            d.insert("hosts", list(&|m| !m.arbiter_only && !m.hidden && m.priority > 0.0));
            let passives = list(&|m| !m.arbiter_only && !m.hidden && m.priority == 0.0);
            if !passives.is_empty() {
                d.insert("passives", passives);
            }
            let arbiters = list(&|m| m.arbiter_only);
            if !arbiters.is_empty() {
                d.insert("arbiters", arbiters);
            }
            d.insert("setName", cfg.set_name.clone());
            d.insert("setVersion", cfg.version as i32);
            d.insert("secondary", st.role == Role::Secondary);
            if let Some(p) = st.primary_host(&member.me) {
                d.insert("primary", p);
            }
            d.insert("me", member.me.clone());
            if let Some(mine) = cfg.member(&member.me) {
                if mine.priority == 0.0 && !mine.arbiter_only {
                    d.insert("passive", true);
                }
                if mine.hidden {
                    d.insert("hidden", true);
                }
            }
            if writable {
                d.insert("electionId", election_id(st.term));
            }
            let last = st.last_optime();
            let committed = commit_point(&st, &member.me);
            d.insert(
                "lastWrite",
                doc! { "opTime": last.to_doc(), "lastWriteDate": last.date(),
                "majorityOpTime": committed.to_doc(), "majorityWriteDate": committed.date() },
            );
        }
        None => {
            d.insert("secondary", false);
            d.insert("isreplicaset", true);
            d.insert("info", "Does not have a valid replica set config");
        }
    }
    d.insert("maxBsonObjectSize", MAX_BSON);
    d.insert("maxMessageSizeBytes", crate::wire::MAX_MESSAGE_BYTES as i32);
    d.insert("maxWriteBatchSize", 100_000);
    d.insert("localTime", DateTime::now());
    d.insert("logicalSessionTimeoutMinutes", 30);
    d.insert("connectionId", conn_id);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", MAX_WIRE_VERSION);
    d.insert("readOnly", false);
    Ok(d)
}

pub fn commit_point(st: &State, me: &str) -> crate::oplog::OpTime {
    if st.role == Role::Primary {
        st.majority_optime(me)
    } else {
        st.commit_point
    }
}

/// Peer extensions beyond mongod's fields: `rollbackCount` and `lastRollback {at, entries, dir,
/// commonPoint, files}` tell an observer that (and when) this member rolled back.
pub fn repl_status(member: &Arc<Member>, cmd: &Document) -> CmdResult {
    let st = member.lock();
    let Some(cfg) = &st.config else {
        return Err(CmdError::NotYetInitialized("no replset config has been received"));
    };
    if st.role == Role::Removed {
        return Err(CmdError::InvalidReplicaSetConfig("Our replica set config is invalid or we are not a member of it"));
    }
    let me = &member.me;
    let sync = st.sync_source.clone().filter(|_| st.role != Role::Primary).unwrap_or_default();
    let id_of = |host: &str| cfg.member(host).map_or(-1, |m| m.id);
    let mut members = Vec::new();
    for m in &cfg.members {
        let mut d = doc! { "_id": m.id as i32, "name": m.host.clone() };
        if m.host == *me {
            let last = st.last_optime();
            d.insert("health", 1.0);
            d.insert("state", st.role.code());
            d.insert("stateStr", state_str(st.role.code()));
            d.insert("uptime", member.started.elapsed().as_secs() as i64);
            d.insert("optime", last.to_doc());
            d.insert("optimeDate", last.date());
            d.insert("lastAppliedWallTime", last.date());
            d.insert("syncSourceHost", sync.clone());
            d.insert("syncSourceId", id_of(&sync) as i32);
            d.insert("infoMessage", "");
            if let Some((ts, date)) = st.election {
                d.insert("electionTime", ts);
                d.insert("electionDate", date);
            }
            d.insert("configVersion", cfg.version as i32);
            d.insert("configTerm", st.term);
            d.insert("self", true);
            d.insert("lastHeartbeatMessage", "");
        } else {
            let view = st.peers.get(&m.host).cloned().unwrap_or_default();
            let up = st.fresh(&m.host);
            let state = if up { view.state } else { 8 };
            d.insert("health", if up { 1.0 } else { 0.0 });
            d.insert("state", state);
            d.insert("stateStr", state_str(state));
            d.insert("uptime", view.up_since.filter(|_| up).map_or(0, |t| t.elapsed().as_secs() as i64));
            d.insert("optime", view.applied.to_doc());
            d.insert("optimeDurable", view.applied.to_doc());
            d.insert("optimeDate", view.applied.date());
            d.insert("optimeDurableDate", view.applied.date());
            d.insert("lastHeartbeat", view.last_ok_date.unwrap_or_else(|| DateTime::from_millis(0)));
            d.insert("lastHeartbeatRecv", view.last_ok_date.unwrap_or_else(|| DateTime::from_millis(0)));
            d.insert("pingMs", view.ping_ms);
            d.insert("lastHeartbeatMessage", view.last_err.clone().unwrap_or_default());
            d.insert("syncSourceHost", view.sync_source.clone());
            d.insert("syncSourceId", id_of(&view.sync_source) as i32);
            d.insert("infoMessage", "");
            d.insert("configVersion", view.config_version as i32);
            d.insert("configTerm", view.term);
        }
        members.push(Bson::Document(d));
    }
    let last = st.last_optime();
    let committed = commit_point(&st, me);
    let voters = cfg.voters().count() as i32;
    let mut out = doc! { "set": cfg.set_name.clone(), "date": DateTime::now(), "myState": st.role.code(),
    "term": st.term, "syncSourceHost": sync.clone(), "syncSourceId": id_of(&sync) as i32,
    "heartbeatIntervalMillis": member.tuning.heartbeat_interval.as_millis() as i64,
    "majorityVoteCount": cfg.majority() as i32, "writeMajorityCount": cfg.majority() as i32,
    "votingMembersCount": voters, "writableVotingMembersCount": voters,
    "optimes": { "lastCommittedOpTime": committed.to_doc(), "lastCommittedWallTime": committed.date(),
        "appliedOpTime": last.to_doc(), "durableOpTime": last.to_doc(),
        "lastAppliedWallTime": last.date(), "lastDurableWallTime": last.date() },
    "members": members };
    let want_sync = cmd.get("initialSync").and_then(as_i64).unwrap_or(0) != 0;
    if let Some(p) = &st.initial_sync {
        if st.role == Role::Startup2 || want_sync {
            out.insert("initialSyncStatus", p.to_doc());
        }
    }
    out.insert("rollbackCount", st.rollback_count);
    if let Some(r) = &st.last_rollback {
        out.insert("lastRollback", r.clone());
    }
    Ok(out)
}
