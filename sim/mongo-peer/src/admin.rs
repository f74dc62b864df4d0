//! Replica-set administration: `replSetInitiate`
//! (<https://www.mongodb.com/docs/manual/reference/command/replSetInitiate/>), `replSetGetConfig`,
//! `replSetReconfig` (<https://www.mongodb.com/docs/manual/reference/command/replSetReconfig/>),
//! `replSetStepDown` (<https://www.mongodb.com/docs/manual/reference/command/replSetStepDown/>)
//! and `replSetFreeze` (<https://www.mongodb.com/docs/manual/reference/command/replSetFreeze/>).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};

use crate::config::ReplConfig;
use crate::error::{CmdError, CmdResult};
use crate::member::{state_str, Member, Role};
use crate::oplog::{next_ts, Entry};
use crate::query::{as_f64, as_i64};

pub async fn run(member: &Arc<Member>, name: &str, cmd: &Document) -> CmdResult {
    match name {
        "replSetInitiate" => initiate(member, cmd),
        "replSetGetConfig" => {
            let st = member.lock();
            let cfg = st.config.as_ref().ok_or_else(|| CmdError::NotYetInitialized("no replset config has been received"))?;
            Ok(doc! { "config": cfg.to_doc(st.term) })
        }
        "replSetReconfig" => reconfig(member, cmd).await,
        "replSetStepDown" => step_down(member, cmd).await,
        "replSetFreeze" => freeze(member, cmd),
        _ => crate::election::step_up(member).await,
    }
}

fn initiate(member: &Member, cmd: &Document) -> CmdResult {
    let mut st = member.lock();
    if st.config.is_some() {
        return Err(CmdError::AlreadyInitialized("already initialized"));
    }
    // Without a config document mongod initiates a one-member set of itself.
    let raw = match cmd.get("replSetInitiate") {
        Some(Bson::Document(d)) if !d.is_empty() => d.clone(),
        _ => doc! { "_id": member.set_name.clone(), "version": 1, "members": [{"_id": 0, "host": member.me.clone()}] },
    };
    let cfg = ReplConfig::parse(&raw)?;
    if cfg.set_name != member.set_name {
        return Err(CmdError::InvalidReplicaSetConfig(format!(
            "Attempting to initiate a replica set with name {}, but command line reports {}; rejecting",
            cfg.set_name, member.set_name
        )));
    }
    if cfg.member(&member.me).is_none() {
        return Err(CmdError::InvalidReplicaSetConfig(format!(
            "No host described in new configuration with {{version: {}, term: 0}} for replica set {} maps to this node",
            cfg.version, cfg.set_name
        )));
    }
    let e = Entry {
        ts: next_ts(st.last_ts),
        t: st.term,
        op: "n".into(),
        ns: String::new(),
        o: doc! {"msg": "initiating set"},
        o2: None,
        wall: DateTime::now(),
        lsid: None,
        txn_number: None,
        stmt_id: None,
    };
    member.persist(&[doc! {"k": "synced", "v": true}, doc! {"k": "op", "e": e.to_doc()}], true)?;
    st.synced = true;
    st.apply_entry(e);
    member.adopt_config(&mut st, cfg)?;
    Ok(doc! {})
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

async fn reconfig(member: &Arc<Member>, cmd: &Document) -> CmdResult {
    let raw = cmd.get_document("replSetReconfig").map_err(|_| CmdError::TypeMismatch("replSetReconfig needs a config document"))?;
    let force = cmd.get_bool("force").unwrap_or(false);
    let mut cfg = ReplConfig::parse(raw)?;
    {
        let st = member.lock();
        let cur = st.config.as_ref().ok_or_else(|| CmdError::NotYetInitialized("no replset config has been received"))?;
        if !force && st.role != Role::Primary {
            return Err(CmdError::NotWritablePrimary(format!(
                "replSetReconfig should only be run on a writable PRIMARY. Current state {};",
                state_str(st.role.code())
            )));
        }
        if cfg.set_name != cur.set_name {
            return Err(CmdError::NewReplicaSetConfigurationIncompatible(format!(
                "New and old configurations differ in replica set name; old was {}, and new is {}",
                cur.set_name, cfg.set_name
            )));
        }
        if cfg.member(&member.me).is_none() {
            return Err(CmdError::NodeNotFound(format!(
                "No host described in new configuration with {{version: {}, term: {}}} for replica set {} maps to this node",
                cfg.version, st.term, cfg.set_name
            )));
        }
        if force {
            // As mongod does: a forced config's version jumps by 10,000 plus a random amount
            // below 100,000, so that it beats any config a lost majority may still produce.
            cfg.version = cfg.version.max(cur.version) + 10_000 + (random_u64() % 100_000) as i64;
        } else {
            if cfg.version <= cur.version {
                return Err(CmdError::NewReplicaSetConfigurationIncompatible(format!(
                    "New replica set configuration version must be greater than old, but {} is not greater than {} for replica set {}",
                    cfg.version, cur.version, cfg.set_name
                )));
            }
            let old: HashSet<&str> = cur.voters().map(|m| m.host.as_str()).collect();
            let new: HashSet<&str> = cfg.voters().map(|m| m.host.as_str()).collect();
            if old.symmetric_difference(&new).count() > 1 {
                return Err(CmdError::NewReplicaSetConfigurationIncompatible("Non-force replica set reconfig can only add or remove at most 1 voting member."));
            }
        }
    }
    if !force {
        quorum_check(member, &cfg).await?;
    }
    let mut st = member.lock();
    if st.config.as_ref().is_some_and(|c| c.version >= cfg.version) {
        return Err(CmdError::NewReplicaSetConfigurationIncompatible("a newer config arrived meanwhile"));
    }
    if !force && st.role != Role::Primary {
        return Err(CmdError::NotWritablePrimary("stepped down during reconfig"));
    }
    member.adopt_config(&mut st, cfg)?;
    Ok(doc! {})
}

/// A non-forced reconfig needs a majority of the new config's voters to answer a heartbeat.
async fn quorum_check(member: &Arc<Member>, cfg: &ReplConfig) -> CmdResult<()> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for m in cfg.voters() {
        if m.host == member.me {
            ok.push(m.host.clone());
            continue;
        }
        let req = crate::replication::heartbeat_request(member);
        let link = member.link(&m.host);
        match link.call(member, &req, Duration::from_secs(1)).await {
            Ok(r) if r.get("ok").and_then(as_f64) == Some(1.0) => ok.push(m.host.clone()),
            _ => failed.push(m.host.clone()),
        }
    }
    if ok.len() < cfg.majority() {
        return Err(CmdError::NodeNotFound(format!(
            "Quorum check failed because not enough voting nodes responded; required {} but only the following {} voting nodes responded: {}; the following nodes did not respond affirmatively: {}",
            cfg.majority(), ok.len(), ok.join(", "), failed.join(", "))));
    }
    Ok(())
}

async fn step_down(member: &Arc<Member>, cmd: &Document) -> CmdResult {
    let secs = cmd.get("replSetStepDown").and_then(as_f64).unwrap_or(60.0);
    let catch_up = cmd.get("secondaryCatchUpPeriodSecs").and_then(as_f64).unwrap_or(10.0);
    let force = cmd.get_bool("force").unwrap_or(false);
    if catch_up > secs {
        return Err(CmdError::BadValue("stepdown period must be longer than secondaryCatchUpPeriodSecs"));
    }
    let freeze = Duration::from_secs_f64(secs.max(0.0));
    let deadline = Instant::now() + Duration::from_secs_f64(catch_up.max(0.0));
    let mut rx = member.positions.subscribe();
    loop {
        rx.borrow_and_update();
        let handoff = {
            let mut st = member.lock();
            if st.role != Role::Primary {
                return Err(CmdError::NotWritablePrimary("not primary so can't step down"));
            }
            let last = st.last_optime();
            let cfg = st.config.clone();
            let target = cfg.as_ref().and_then(|c| {
                c.members.iter().find(|m| {
                    m.host != member.me && m.electable() && st.fresh(&m.host) && st.peers.get(&m.host).is_some_and(|p| p.state == 2 && p.applied >= last)
                })
            });
            match target {
                Some(m) => {
                    member.step_down(&mut st, Some(freeze));
                    Some(m.host.clone())
                }
                None if Instant::now() >= deadline => {
                    if !force {
                        return Err(CmdError::ExceededTimeLimit(format!(
                            "No electable secondaries caught up as of {}. Please use the replSetStepDown command with the argument {{force: true}} to force node to step down.",
                            DateTime::now())));
                    }
                    member.step_down(&mut st, Some(freeze));
                    return Ok(doc! {});
                }
                None => None,
            }
        };
        if let Some(host) = handoff {
            // Election handoff: mongod asks the caught-up secondary to run for election at once.
            let member = member.clone();
            tokio::spawn(async move {
                let req = doc! { "replSetStepUp": 1, "$db": "admin" };
                let _ = member.link(&host).call(&member, &req, Duration::from_secs(2)).await;
            });
            return Ok(doc! {});
        }
        let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn freeze(member: &Member, cmd: &Document) -> CmdResult {
    let secs = cmd.get("replSetFreeze").and_then(as_i64).ok_or_else(|| CmdError::TypeMismatch("replSetFreeze needs a number of seconds"))?;
    let mut st = member.lock();
    if st.config.is_none() {
        return Err(CmdError::NotYetInitialized("no replset config has been received"));
    }
    if st.role == Role::Primary {
        return Err(CmdError::NotSecondary("cannot freeze node when primary or running for election. state: Primary"));
    }
    if secs <= 0 {
        st.frozen_until = None;
        return Ok(doc! { "info": "unfreezing" });
    }
    st.frozen_until = Some(Instant::now() + Duration::from_secs(secs as u64));
    Ok(doc! {})
}
