//! `ridondato check-mongo --config FILE`: checks a live pair's replica set against the layout
//! ridondato drives (S6), from the node's `[mongo]` section and with its credentials. Run it
//! once on a real pair: MongoDB is tested here against our wire-protocol peer, not `mongod`.
//!
//! The layout: two members named as `mongo.member` and `mongo.peer_member`, no arbiter, one
//! voter with a priority (the Master's member, the primary), the other a non-voting,
//! priority-0 secondary that replicates. Every check prints `ok` or `FAIL` with what it saw.

use crate::client::Failure;
use crate::config::{self, MongoSection};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use std::path::Path;

/// A secondary further behind than this is reported (its promotion would be refused).
const LAG_WARN_S: u32 = 10;

/// One member as it answered: its `hello` and its replica-set configuration.
struct Seen {
    hello: Document,
    config: Option<Document>,
    status: Option<Document>,
}

pub fn run(file: &Path) -> Result<(), Failure> {
    let c = config::load(file).map_err(Failure::Refused)?;
    let m = c.file.mongo.clone().ok_or_else(|| Failure::Usage(format!("{}: no [mongo] section: nothing to check", file.display())))?;
    let cred = crate::daemon::mongo_credential(&m).map_err(Failure::Refused)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::Refused(format!("runtime: {e}")))?;
    let (lines, failed) = rt.block_on(check(&m, cred))?;
    println!("check-mongo {}: this member {}, the peer's {}", m.replica_set, m.member, m.peer_member);
    for l in &lines {
        println!("  {l}");
    }
    match failed {
        0 => Ok(()),
        n => Err(Failure::Refused(format!("{n} check(s) failed: the replica set is not the layout ridondato drives (docs/mongodb.md)"))),
    }
}

async fn client(host_uri: &str, cred: &Option<ridondato_adapters::mongo::MongoCredential>) -> Result<Client, String> {
    ridondato_adapters::mongo::direct_client(host_uri, cred.as_ref(), 3000).await
}

async fn look(c: &Client) -> Result<Seen, String> {
    let admin = c.database("admin");
    let hello = admin.run_command(doc! {"hello": 1}).await.map_err(|e| e.to_string())?;
    let config = admin.run_command(doc! {"replSetGetConfig": 1}).await.ok().and_then(|d| d.get_document("config").ok().cloned());
    let status = admin.run_command(doc! {"replSetGetStatus": 1}).await.ok();
    Ok(Seen { hello, config, status })
}

fn num(d: &Document, key: &str) -> f64 {
    match d.get(key) {
        Some(Bson::Int32(v)) => f64::from(*v),
        Some(Bson::Int64(v)) => *v as f64,
        Some(Bson::Double(v)) => *v,
        _ => 0.0,
    }
}

fn members(config: &Document) -> Vec<Document> {
    config.get_array("members").map(|a| a.iter().filter_map(Bson::as_document).cloned().collect()).unwrap_or_default()
}

fn writable(s: &Seen) -> bool {
    s.hello.get_bool("isWritablePrimary").unwrap_or(false)
}

/// The member's optime seconds in a `replSetGetStatus`.
fn optime_secs(status: &Document, host: &str) -> Option<u32> {
    let m = status.get_array("members").ok()?.iter().filter_map(Bson::as_document).find(|m| m.get_str("name") == Ok(host))?;
    m.get_document("optime").ok()?.get_timestamp("ts").ok().map(|t| t.time)
}

async fn check(m: &MongoSection, cred: Option<ridondato_adapters::mongo::MongoCredential>) -> Result<(Vec<String>, usize), Failure> {
    let local = client(&m.uri, &cred).await.map_err(|e| Failure::Usage(format!("mongo.uri: {e}")))?;
    let here = look(&local).await.map_err(|e| Failure::Unreachable(format!("this member ({}) does not answer: {e}", m.uri)))?;
    let peer = match client(&format!("mongodb://{}/", m.peer_member), &cred).await {
        Ok(c) => look(&c).await,
        Err(e) => Err(e),
    };
    let mut lines = Vec::new();
    let mut failed = 0;
    let mut say = |ok: bool, what: String| {
        failed += usize::from(!ok);
        lines.push(format!("{} {what}", if ok { "ok  " } else { "FAIL" }));
    };
    let there = match peer {
        Ok(s) => {
            say(true, format!("both members answer ({} and {})", m.member, m.peer_member));
            Some(s)
        }
        Err(e) => {
            say(false, format!("the peer's member {} does not answer: {e}", m.peer_member));
            None
        }
    };
    for (who, s) in [(m.member.as_str(), Some(&here)), (m.peer_member.as_str(), there.as_ref())] {
        let Some(s) = s else { continue };
        let name = s.hello.get_str("setName").unwrap_or("(none: not initiated, or not started with --replSet)");
        say(name == m.replica_set, format!("{who} is in replica set `{name}` (mongo.replica_set = `{}`)", m.replica_set));
    }
    let Some(config) = here.config.clone() else {
        say(false, format!("{} gives no replica-set configuration (replSetGetConfig failed: not initiated?)", m.member));
        return Ok((lines, failed));
    };
    let ms = members(&config);
    let mut hosts: Vec<&str> = ms.iter().filter_map(|d| d.get_str("host").ok()).collect();
    hosts.sort_unstable();
    let mut want = vec![m.member.as_str(), m.peer_member.as_str()];
    want.sort_unstable();
    say(hosts == want, format!("the configuration's members are {hosts:?} (expected exactly {want:?})"));
    let arbiters: Vec<&str> = ms.iter().filter(|d| d.get_bool("arbiterOnly").unwrap_or(false)).filter_map(|d| d.get_str("host").ok()).collect();
    say(
        arbiters.is_empty(),
        format!("no arbiter (ridondato is the arbiter){}", if arbiters.is_empty() { String::new() } else { format!(": found {arbiters:?}") }),
    );
    let voters: Vec<&Document> = ms.iter().filter(|d| num(d, "votes") > 0.0).collect();
    let voter = voters.first().and_then(|d| d.get_str("host").ok()).unwrap_or("none");
    say(voters.len() == 1, format!("exactly one voting member: {} ({voter})", voters.len()));
    let layout = ms.iter().all(|d| (num(d, "votes") > 0.0) == (num(d, "priority") > 0.0));
    say(layout, "the voter has a priority, the other member votes 0 with priority 0".into());
    let primaries: Vec<&str> = [(m.member.as_str(), Some(&here)), (m.peer_member.as_str(), there.as_ref())]
        .into_iter()
        .filter_map(|(h, s)| s.filter(|s| writable(s)).map(|_| h))
        .collect();
    say(primaries.len() == 1 && primaries[0] == voter, format!("one primary, the voter: primaries {primaries:?}, voter {voter}"));
    if let Some(p) = there.as_ref().and_then(|s| s.config.as_ref()) {
        let (v1, v2) = (num(&config, "version"), num(p, "version"));
        say(v1 == v2, format!("both members have configuration version {v1} (the peer's: {v2})"));
    }
    let local_is_primary = primaries.first() == Some(&m.member.as_str());
    let secondary = if local_is_primary { m.peer_member.as_str() } else { m.member.as_str() };
    // The secondary's own view of itself first: the primary's lags by a heartbeat.
    let own = if local_is_primary { there.as_ref().and_then(|s| s.status.as_ref()) } else { here.status.as_ref() };
    let status = own.or(here.status.as_ref()).or(there.as_ref().and_then(|s| s.status.as_ref()));
    if let (Some(st), Some(p)) = (status, primaries.first()) {
        let state = st
            .get_array("members")
            .ok()
            .and_then(|a| a.iter().filter_map(Bson::as_document).find(|d| d.get_str("name") == Ok(secondary)).and_then(|d| d.get_str("stateStr").ok()))
            .unwrap_or("unknown");
        say(state == "SECONDARY", format!("{secondary} is {state} (a replicating secondary serves the reports, S8)"));
        if let (Some(ps), Some(ss)) = (optime_secs(st, p), optime_secs(st, secondary)) {
            let lag = ps.saturating_sub(ss);
            say(lag <= LAG_WARN_S, format!("{secondary} is {lag} s behind the primary (at most {LAG_WARN_S})"));
        }
    }
    Ok((lines, failed))
}
