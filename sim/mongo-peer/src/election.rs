//! Elections, kept simple (see the crate docs): a sole electable voter takes office as soon as
//! it has heard from its peers once; otherwise a secondary that has seen no primary for
//! `electionTimeoutMillis` asks the other voters for their vote in term + 1 and wins with a
//! majority. `replSetStepUp` (<https://www.mongodb.com/docs/manual/reference/command/replSetStepUp/>)
//! runs the same election at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};

use crate::error::{CmdError, CmdResult};
use crate::member::{Member, Role, State};
use crate::oplog::OpTime;
use crate::query::as_i64;

pub fn unelectable_reason(st: &State, me: &str) -> Option<String> {
    let Some(m) = st.my_config(me) else { return Some("not a member of the current config".into()) };
    if m.arbiter_only {
        return Some("member is an arbiter".into());
    }
    if m.votes == 0 {
        return Some("member is not a voter (votes: 0)".into());
    }
    if m.priority <= 0.0 {
        return Some("member has priority 0".into());
    }
    if st.role != Role::Secondary || !st.synced {
        return Some(format!("member is in state {}", crate::member::state_str(st.role.code())));
    }
    if st.frozen_until.is_some_and(|t| t > Instant::now()) {
        return Some("member is frozen (replSetFreeze or a recent step-down)".into());
    }
    None
}

pub fn on_request_vote(member: &Member, cmd: &Document) -> CmdResult {
    let term = cmd.get("term").and_then(as_i64).unwrap_or(-1);
    let candidate = cmd.get_str("candidate").unwrap_or("").to_string();
    let last = OpTime::from_bson(cmd.get("lastApplied")).unwrap_or(OpTime::NULL);
    let mut st = member.lock();
    if cmd.get_str("ridondatoRequestVote").ok() != Some(member.set_name.as_str()) {
        return Err(CmdError::InvalidReplicaSetConfig("replica set name mismatch"));
    }
    let deny = |st: &State, reason: &str| Ok(doc! { "voteGranted": false, "term": st.term, "reason": reason });
    if term < st.term {
        return deny(&st, "candidate's term is lower than mine");
    }
    member.adopt_term(&mut st, term);
    if st.voted.as_ref().is_some_and(|(t, who)| *t == term && *who != candidate) {
        return deny(&st, "already voted for another candidate in this term");
    }
    if st.role == Role::Primary {
        return deny(&st, "I am primary in this term");
    }
    if last < st.last_optime() {
        return deny(&st, "candidate's data is staler than mine");
    }
    st.voted = Some((term, candidate));
    Ok(doc! { "voteGranted": true, "term": st.term })
}

/// Asks every other voter for its vote in term + 1; true if this member won.
pub async fn run_election(member: &Arc<Member>) -> bool {
    let (term, voters, last, majority) = {
        let mut st = member.lock();
        if unelectable_reason(&st, &member.me).is_some() {
            return false;
        }
        let Some(cfg) = st.config.clone() else { return false };
        let term = st.term + 1;
        st.voted = Some((term, member.me.clone()));
        let voters: Vec<String> = cfg.voters().filter(|m| m.host != member.me).map(|m| m.host.clone()).collect();
        (term, voters, st.last_optime(), cfg.majority())
    };
    let mut votes = 1;
    for host in voters {
        let req = doc! { "ridondatoRequestVote": member.set_name.clone(), "from": member.me.clone(),
        "term": term, "candidate": member.me.clone(), "lastApplied": last.to_doc(), "$db": "admin" };
        match member.link(&host).call(member, &req, Duration::from_secs(1)).await {
            Ok(r) if r.get_bool("voteGranted").unwrap_or(false) => votes += 1,
            Ok(r) => {
                let their = r.get("term").and_then(as_i64).unwrap_or(0);
                if their > term {
                    let mut st = member.lock();
                    member.adopt_term(&mut st, their);
                }
            }
            Err(_) => {}
        }
    }
    let mut st = member.lock();
    if votes < majority || st.term >= term || unelectable_reason(&st, &member.me).is_some() {
        tracing::info!(me = %member.me, term, votes, majority, "election lost");
        return false;
    }
    match member.become_primary(&mut st, term) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot persist election");
            false
        }
    }
}

pub async fn step_up(member: &Arc<Member>) -> CmdResult {
    {
        let st = member.lock();
        if st.role == Role::Primary {
            return Ok(doc! { "info": "already primary" });
        }
        if let Some(why) = unelectable_reason(&st, &member.me) {
            return Err(CmdError::CommandFailed(format!("Election failed. ({why})")));
        }
    }
    if run_election(member).await {
        Ok(doc! {})
    } else {
        Err(CmdError::CommandFailed("Election failed."))
    }
}

/// Called after every heartbeat round.
pub async fn tick(member: &Arc<Member>) {
    let vote = {
        let mut st = member.lock();
        let Some(cfg) = st.config.clone() else { return };
        if st.role == Role::Primary {
            // A primary that cannot see a majority of voters for an election timeout steps down.
            let seen = cfg.voters().filter(|m| m.host == member.me || st.fresh(&m.host)).count();
            if seen >= cfg.majority() {
                st.majority_lost_since = None;
            } else {
                let since = *st.majority_lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > cfg.election_timeout() {
                    tracing::info!(me = %member.me, "stepping down: cannot see a majority of voters");
                    member.step_down(&mut st, None);
                }
            }
            return;
        }
        if st.primary_host(&member.me).is_some() {
            st.last_primary_seen = Instant::now();
            return;
        }
        if !st.first_round_done || unelectable_reason(&st, &member.me).is_some() {
            return;
        }
        if cfg.voters().count() == 1 {
            let term = st.term + 1;
            if let Err(e) = member.become_primary(&mut st, term) {
                tracing::error!(error = %e, "cannot persist election");
            }
            return;
        }
        st.last_primary_seen.elapsed() > cfg.election_timeout()
    };
    if vote && !run_election(member).await {
        member.lock().last_primary_seen = Instant::now();
    }
}
