//! The replica-set configuration document
//! (<https://www.mongodb.com/docs/manual/reference/replica-configuration/>) and the checks
//! `replSetInitiate`/`replSetReconfig` apply to it.

use std::collections::HashSet;
use std::time::Duration;

use bson::{doc, Bson, Document};

use crate::error::{CmdError, CmdResult};
use crate::query::{as_f64, as_i64};

#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    pub id: i64,
    pub host: String,
    pub votes: i64,
    pub priority: f64,
    pub hidden: bool,
    pub arbiter_only: bool,
}

impl MemberConfig {
    /// Can stand for election: a voter with priority > 0 (the manual's "electable").
    pub fn electable(&self) -> bool {
        self.votes > 0 && self.priority > 0.0 && !self.arbiter_only
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplConfig {
    pub set_name: String,
    pub version: i64,
    pub members: Vec<MemberConfig>,
    pub settings: Document,
}

impl ReplConfig {
    pub fn parse(d: &Document) -> CmdResult<ReplConfig> {
        let invalid = |m: String| CmdError::InvalidReplicaSetConfig(m);
        let set_name = d.get_str("_id").map_err(|_| invalid("replica set configuration must have a string _id".into()))?.to_string();
        let version = d.get("version").and_then(as_i64).unwrap_or(1);
        if version < 1 {
            return Err(invalid(format!("version field value of {version} is out of range")));
        }
        let Some(Bson::Array(raw)) = d.get("members") else {
            return Err(invalid("replica set configuration must have a members array".into()));
        };
        if raw.is_empty() {
            return Err(invalid("Replica set configuration must contain at least one member".into()));
        }
        let mut members = Vec::new();
        let (mut ids, mut hosts) = (HashSet::new(), HashSet::new());
        for m in raw {
            let Bson::Document(m) = m else {
                return Err(invalid("members entries must be documents".into()));
            };
            let id = m.get("_id").and_then(as_i64).ok_or_else(|| invalid("member without _id".into()))?;
            let host = m.get_str("host").map_err(|_| invalid(format!("member {id} has no host")))?;
            let host = if host.contains(':') { host.to_string() } else { format!("{host}:27017") };
            let arbiter_only = m.get_bool("arbiterOnly").unwrap_or(false);
            let votes = m.get("votes").and_then(as_i64).unwrap_or(1);
            let priority = m.get("priority").and_then(as_f64).unwrap_or(if arbiter_only { 0.0 } else { 1.0 });
            if !(0..=1).contains(&votes) {
                return Err(invalid(format!("member {host}: votes must be 0 or 1")));
            }
            if votes == 0 && priority > 0.0 {
                return Err(invalid(format!("member {host}: priority must be 0 when non-voting (votes:0)")));
            }
            if !ids.insert(id) || !hosts.insert(host.clone()) {
                return Err(invalid(format!("duplicate member _id {id} or host {host}")));
            }
            let hidden = m.get_bool("hidden").unwrap_or(false);
            members.push(MemberConfig { id, host, votes, priority, hidden, arbiter_only });
        }
        if !members.iter().any(|m| m.votes > 0) {
            return Err(invalid("Replica set configuration must contain at least one voting member".into()));
        }
        let settings = d.get_document("settings").cloned().unwrap_or_default();
        Ok(ReplConfig { set_name, version, members, settings })
    }

    pub fn member(&self, host: &str) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.host == host)
    }

    pub fn voters(&self) -> impl Iterator<Item = &MemberConfig> {
        self.members.iter().filter(|m| m.votes > 0)
    }

    /// Votes needed to win an election or to commit a `w: "majority"` write.
    pub fn majority(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    /// `settings.electionTimeoutMillis`, default 10 s as in mongod.
    pub fn election_timeout(&self) -> Duration {
        let ms = self.settings.get("electionTimeoutMillis").and_then(as_i64).unwrap_or(10_000);
        Duration::from_millis(ms.max(1) as u64)
    }

    /// The document `replSetGetConfig` returns, with mongod's defaults filled in.
    pub fn to_doc(&self, term: i64) -> Document {
        let members: Vec<Bson> = self
            .members
            .iter()
            .map(|m| {
                Bson::Document(doc! { "_id": m.id as i32, "host": m.host.clone(),
                "arbiterOnly": m.arbiter_only, "buildIndexes": true, "hidden": m.hidden,
                "priority": m.priority, "tags": {}, "secondaryDelaySecs": 0i64,
                "votes": m.votes as i32 })
            })
            .collect();
        let mut settings = doc! { "chainingAllowed": true, "heartbeatIntervalMillis": 2000,
        "heartbeatTimeoutSecs": 10, "electionTimeoutMillis": 10000,
        "catchUpTimeoutMillis": -1, "catchUpTakeoverDelayMillis": 30000,
        "getLastErrorModes": {}, "getLastErrorDefaults": {"w": 1, "wtimeout": 0} };
        for (k, v) in &self.settings {
            settings.insert(k.clone(), v.clone());
        }
        doc! { "_id": self.set_name.clone(), "version": self.version as i32, "term": term,
        "members": members, "protocolVersion": 1i64, "writeConcernMajorityJournalDefault": true,
        "settings": settings }
    }
}
