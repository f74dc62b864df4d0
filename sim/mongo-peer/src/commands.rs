//! Command dispatch, the reply envelope (`ok`, `$clusterTime`, `operationTime`), and the small
//! commands a driver or shell sends that need no replica-set logic.

use std::sync::Arc;

use bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document};

use crate::auth::Session;
use crate::error::{CmdError, CmdResult};
use crate::member::Member;

pub const VERSION: &str = "7.0.0-ridondato-peer";

#[derive(Debug)]
pub enum Outcome {
    Reply(Document),
    /// Drop the connection without a reply (a partitioned member's traffic).
    Close,
}

fn admin_only(name: &str, db: &str) -> CmdResult<()> {
    if db == "admin" {
        Ok(())
    } else {
        Err(CmdError::new(13, "Unauthorized", format!("{name} may only be run against the admin database.")))
    }
}

pub async fn dispatch(member: &Arc<Member>, conn_id: i64, session: &mut Session, cmd: Document) -> Outcome {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let db = cmd.get_str("$db").unwrap_or("admin").to_string();
    let internal = name.starts_with("ridondato");
    let cut = |m: &Member| cmd.get_str("from").is_ok_and(|from| m.is_partitioned(from));
    if internal && cut(member) {
        return Outcome::Close;
    }
    let res = match member.auth.check(session, &name) {
        Ok(()) => run(member, conn_id, session, &name, &db, &cmd).await,
        Err(e) => Err(e),
    };
    if internal && cut(member) {
        return Outcome::Close;
    }
    let mut reply = match res {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(command = %name, error = %e, "command failed");
            e.to_doc()
        }
    };
    if !reply.contains_key("ok") {
        reply.insert("ok", 1.0);
    }
    let ts = member.lock().last_ts;
    reply.insert(
        "$clusterTime",
        doc! { "clusterTime": ts, "signature": {
        "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0i64 } },
    );
    reply.insert("operationTime", ts);
    Outcome::Reply(reply)
}

async fn run(member: &Arc<Member>, conn_id: i64, session: &mut Session, name: &str, db: &str, cmd: &Document) -> CmdResult {
    match name {
        "hello" | "isMaster" | "ismaster" => {
            let mut reply = crate::status::hello(member, conn_id, name, cmd).await?;
            member.auth.on_hello(session, cmd, &mut reply);
            Ok(reply)
        }
        "saslStart" => member.auth.sasl_start(session, db, cmd),
        "saslContinue" => member.auth.sasl_continue(session, cmd),
        "replSetGetStatus" => {
            admin_only(name, db)?;
            crate::status::repl_status(member, cmd)
        }
        "replSetInitiate" | "replSetGetConfig" | "replSetReconfig" | "replSetStepDown" | "replSetFreeze" | "replSetStepUp" => {
            admin_only(name, db)?;
            crate::admin::run(member, name, cmd).await
        }
        "insert" | "update" | "delete" | "find" | "getMore" | "killCursors" | "count" | "aggregate" | "listDatabases" | "listCollections" | "drop"
        | "create" | "dropDatabase" | "listIndexes" | "createIndexes" | "collStats" => crate::crud::run(member, name, db, cmd).await,
        "ridondatoHeartbeat" => crate::replication::on_heartbeat(member, cmd),
        "ridondatoOplogFetch" => crate::replication::on_fetch(member, cmd).await,
        "ridondatoRequestVote" => crate::election::on_request_vote(member, cmd),
        "ping" | "endSessions" | "killSessions" | "killAllSessions" | "refreshSessions" | "abortTransaction" => Ok(doc! {}),
        "commitTransaction" => Err(CmdError::new(251, "NoSuchTransaction", "transactions are not modelled by this peer")),
        "buildInfo" | "buildinfo" => Ok(doc! { "version": VERSION, "gitVersion": "ridondato",
        "versionArray": [7, 0, 0, 0], "bits": 64, "debug": false,
        "maxBsonObjectSize": crate::status::MAX_BSON, "storageEngines": ["ridondato"] }),
        "getParameter" => Ok(get_parameter(cmd)),
        "serverStatus" => Ok(server_status(member)),
        "connectionStatus" => Ok(member.auth.connection_status(session)),
        _ => Err(CmdError::CommandNotFound(format!("no such command: '{name}'"))),
    }
}

fn get_parameter(cmd: &Document) -> Document {
    let all = matches!(cmd.get("getParameter"), Some(Bson::String(s)) if s == "*");
    let mut out = Document::new();
    let known = [
        ("featureCompatibilityVersion", Bson::Document(doc! {"version": "7.0"})),
        ("logicalSessionTimeoutMinutes", Bson::Int32(30)),
        ("maxBSONObjectSize", Bson::Int32(crate::status::MAX_BSON)),
    ];
    for (k, v) in known {
        if all || cmd.contains_key(k) {
            out.insert(k, v);
        }
    }
    out
}

fn server_status(member: &Member) -> Document {
    let st = member.lock();
    let up = member.started.elapsed();
    doc! { "host": member.me.clone(), "version": VERSION, "process": "mongod",
    "pid": i64::from(std::process::id()), "uptime": up.as_secs_f64(),
    "uptimeMillis": up.as_millis() as i64, "localTime": DateTime::now(),
    "repl": { "setName": member.set_name.clone(), "me": member.me.clone(),
        "isWritablePrimary": st.role == crate::member::Role::Primary,
        "primary": st.primary_host(&member.me) },
    "storageEngine": { "name": "ridondato", "persistent": true } }
}
