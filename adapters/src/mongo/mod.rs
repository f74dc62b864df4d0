//! MongoDB (S6) on the official driver: a two-member replica set that follows ridondato's
//! decision. Two voting members would lose their primary with either one, so the Master's
//! member is the only voter and the Slave's a non-voting, priority-0 secondary that replicates
//! and serves reports; ridondato is the arbiter MongoDB lacks here.
//!
//! - `promote` (the core has made its epoch durable and passed its arbiter): this member takes
//!   the vote. From a secondary that is a forced reconfiguration (the old Master is stepped
//!   down or dead: the core's fencing decided that), then `replSetStepUp`, then `hello` must
//!   say writable primary.
//! - `demote`: with the peer's member healthy, a planned hand-over loses nothing: the peer's
//!   member gets a vote and priority (a normal reconfig, which needs both members), then this
//!   one steps down with a catch-up period, so the peer's member is elected only once it has
//!   every write. Otherwise (isolation, a dead peer) a forced step-down fences at once. Either
//!   way this member is then frozen so that it cannot be re-elected behind the core's back.
//! - `report`: state, optime, lag behind the primary, rollbacks seen, for the status.

mod resync;

pub use resync::ResyncSetup;

use crate::traits::{AdapterError, AdapterResult, Mongo, ProgressFn};
use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{AuthMechanism, ClientOptions, Credential};
use mongodb::Client;
use std::time::{Duration, Instant};

/// How long the planned hand-over's reconfig (which needs the peer's member) may take before
/// the Master fences by a forced step-down instead.
const HAND_OVER_RECONFIG_WITHIN: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// The local member, reached directly (`directConnection=true` is added).
    pub uri: String,
    pub replica_set: String,
    /// This member's and the peer's `host:port` as named in the replica-set configuration.
    pub me: String,
    pub peer: String,
    /// How long a promotion waits to be writable primary, and a hand-over for the catch-up.
    pub timeout: Duration,
    /// SCRAM-SHA-256 credentials (user, password, authentication database), read by the
    /// daemon from `mongo.password_file`: passwords stay out of the URI and the config file.
    pub credential: Option<MongoCredential>,
}

#[derive(Clone)]
pub struct MongoCredential {
    pub user: String,
    pub password: String,
    pub source: String,
}

impl std::fmt::Debug for MongoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: configs are logged at start-up.
        write!(f, "MongoCredential {{ user: {:?}, source: {:?}, password: <hidden> }}", self.user, self.source)
    }
}

pub use ridondato_core::MongoReport;

#[derive(Debug)]
pub struct MongoMember {
    client: Client,
    cfg: MongoConfig,
    resync: Option<ResyncSetup>,
}

/// A client of one member alone (no replica-set discovery: this node's member, or the peer's
/// for `check-mongo`), every wait bounded by `timeout_ms`, with SCRAM-SHA-256 credentials.
pub async fn direct_client(member_uri: &str, credential: Option<&MongoCredential>, timeout_ms: u64) -> Result<Client, String> {
    let sep = if member_uri.contains('?') { '&' } else { '?' };
    let uri = format!("{member_uri}{sep}directConnection=true&serverSelectionTimeoutMS={timeout_ms}&connectTimeoutMS={timeout_ms}");
    let mut options = ClientOptions::parse(&uri).await.map_err(|e| format!("URI: {e}"))?;
    if let Some(c) = credential {
        options.credential = Some(
            Credential::builder().username(c.user.clone()).password(c.password.clone()).source(c.source.clone()).mechanism(AuthMechanism::ScramSha256).build(),
        );
    }
    Client::with_options(options).map_err(|e| format!("options: {e}"))
}

fn err(what: &str, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::new(format!("mongo: {what}: {e}"))
}

impl MongoMember {
    pub async fn connect(cfg: MongoConfig) -> AdapterResult<MongoMember> {
        let client = direct_client(&cfg.uri, cfg.credential.as_ref(), 2000).await.map_err(|e| err("the local member", e))?;
        Ok(MongoMember { client, cfg, resync: None })
    }

    /// Enables the resync job (how to stop and start the member, where its data lives).
    pub fn with_resync(mut self, setup: ResyncSetup) -> MongoMember {
        self.resync = Some(setup);
        self
    }

    async fn admin(&self, cmd: Document) -> AdapterResult<Document> {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        self.client.database("admin").run_command(cmd).await.map_err(|e| err(&name, e))
    }

    async fn hello(&self) -> AdapterResult<Document> {
        self.admin(doc! { "hello": 1 }).await
    }

    async fn writable(&self) -> bool {
        self.hello().await.is_ok_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false))
    }

    /// The current configuration with new votes and priorities: `voters` get 1/1, the others 0/0.
    async fn config_with(&self, voters: &[&str]) -> AdapterResult<Document> {
        let got = self.admin(doc! { "replSetGetConfig": 1 }).await?;
        let mut config = got.get_document("config").map_err(|e| err("replSetGetConfig", e))?.clone();
        let version = config.get_i32("version").map(i64::from).or_else(|_| config.get_i64("version")).unwrap_or(1);
        let members = config.get_array("members").map_err(|e| err("replSetGetConfig", e))?.clone();
        let members: Vec<Bson> = members
            .into_iter()
            .filter_map(|m| m.as_document().cloned())
            .map(|mut m| {
                let vote = voters.contains(&m.get_str("host").unwrap_or_default());
                m.insert("votes", i32::from(vote));
                m.insert("priority", i32::from(vote));
                Bson::Document(m)
            })
            .collect();
        config.insert("members", members);
        config.insert("version", version + 1);
        Ok(config)
    }

    /// Polls `hello` until `want` holds of it, or the timeout.
    async fn until(&self, what: &str, want: impl Fn(&Document) -> bool) -> AdapterResult<()> {
        let t = Instant::now();
        loop {
            if self.hello().await.is_ok_and(|h| want(&h)) {
                return Ok(());
            }
            if t.elapsed() > self.cfg.timeout {
                return Err(AdapterError::new(format!("mongo: not {what} within {} ms", self.cfg.timeout.as_millis())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self) -> AdapterResult<Document> {
        self.admin(doc! { "replSetGetStatus": 1 }).await
    }

    fn member<'a>(status: &'a Document, host: &str) -> Option<&'a Document> {
        status.get_array("members").ok()?.iter().filter_map(Bson::as_document).find(|m| m.get_str("name") == Ok(host))
    }

    async fn peer_healthy(&self) -> bool {
        let Ok(s) = self.status().await else { return false };
        Self::member(&s, &self.cfg.peer).is_some_and(|m| m.get_f64("health").map(|h| h > 0.0).or_else(|_| m.get_i32("health").map(|h| h > 0)).unwrap_or(false))
    }

    pub async fn member_report(&self) -> AdapterResult<MongoReport> {
        let s = self.status().await?;
        let me = Self::member(&s, &self.cfg.me).ok_or_else(|| AdapterError::new(format!("mongo: {} is not in the replica set's status", self.cfg.me)))?;
        let optime = |m: &Document| {
            let o = m.get_document("optime").ok();
            let t = o.and_then(|o| o.get_i64("t").ok()).unwrap_or(0);
            let ts = o.and_then(|o| o.get_timestamp("ts").ok()).map_or((0, 0), |ts| (ts.time, ts.increment));
            (t, ts.0, ts.1)
        };
        let mine = optime(me);
        let primary = s.get_array("members").ok().and_then(|ms| ms.iter().filter_map(Bson::as_document).find(|m| m.get_i32("state") == Ok(1)));
        let lag_ms = match primary {
            Some(p) if p.get_str("name") != Ok(self.cfg.me.as_str()) => Some(u64::from(optime(p).1.saturating_sub(mine.1)) * 1000),
            _ => None,
        };
        Ok(MongoReport {
            state: me.get_str("stateStr").unwrap_or("UNKNOWN").to_string(),
            optime: mine,
            lag_ms,
            rollbacks: s.get_i64("rollbackCount").map(|n| n.max(0) as u64).or_else(|_| s.get_i32("rollbackCount").map(|n| n.max(0) as u64)).unwrap_or(0),
            error: None,
        })
    }

    /// The planned hand-over: the peer's member gets a vote, this one steps down once the peer
    /// has caught up, the peer's member is elected.
    async fn hand_over(&self) -> AdapterResult<()> {
        let config = self.config_with(&[&self.cfg.me, &self.cfg.peer]).await?;
        // A peer just cut off still looks healthy for a heartbeat or two; the reconfig then
        // waits for its quorum. Fencing must not wait that long.
        match tokio::time::timeout(HAND_OVER_RECONFIG_WITHIN, self.admin(doc! { "replSetReconfig": config })).await {
            Ok(r) => r?,
            Err(_) => return Err(AdapterError::new("mongo: the peer's member did not confirm the hand-over reconfig in time")),
        };
        let secs = self.cfg.timeout.as_secs().max(1) as i64;
        self.admin(doc! { "replSetStepDown": secs * 6, "secondaryCatchUpPeriodSecs": secs }).await?;
        Ok(())
    }
}

#[async_trait]
impl Mongo for MongoMember {
    async fn promote(&self) -> AdapterResult<()> {
        // A member frozen by an earlier demotion could not stand.
        let _ = self.admin(doc! { "replSetFreeze": 0 }).await;
        if self.writable().await {
            // Already primary (a hand-over elected it): take the peer's vote away.
            let config = self.config_with(&[&self.cfg.me]).await?;
            return self.admin(doc! { "replSetReconfig": config }).await.map(|_| ());
        }
        let config = self.config_with(&[&self.cfg.me]).await?;
        self.admin(doc! { "replSetReconfig": config, "force": true }).await?;
        // The sole voter may elect itself; asking makes it at once.
        let _ = self.admin(doc! { "replSetStepUp": 1 }).await;
        self.until("writable primary", |h| h.get_bool("isWritablePrimary").unwrap_or(false)).await
    }

    async fn demote(&self) -> AdapterResult<()> {
        if self.writable().await {
            let planned = if self.peer_healthy().await { self.hand_over().await } else { Err(AdapterError::new("the peer's member is not healthy")) };
            if let Err(e) = planned {
                tracing::warn!("{e}; stepping down at once (writes the peer's member lacks will be rolled back when it returns)");
                // Forced with no catch-up period: mongod otherwise waits for one (10 s by default) even when forced.
                self.admin(doc! { "replSetStepDown": 60, "secondaryCatchUpPeriodSecs": 0, "force": true }).await?;
            }
        }
        // Frozen: this member does not stand for election until a promotion unfreezes it.
        let _ = self.admin(doc! { "replSetFreeze": 86_400 }).await;
        self.until("a secondary", |h| !h.get_bool("isWritablePrimary").unwrap_or(true)).await
    }

    async fn report(&self) -> AdapterResult<Option<MongoReport>> {
        self.member_report().await.map(Some)
    }

    async fn resync(&self, progress: ProgressFn) -> AdapterResult<()> {
        match &self.resync {
            Some(setup) => self.run_resync(setup, progress).await,
            None => Err(AdapterError::new("mongo resync: set [mongo] unit (or start_hook and stop_hook) and data_dir to let ridondato rebuild this member")),
        }
    }
}
