//! The node an operator command talks to: the local control socket (root on the node), or a
//! node's HTTP API with its token (`--url`, `--token-file`). The same verbs either way; what
//! only root on the node may do (promote past the promotion policy, move the cloud IP by hand)
//! stays on the socket.

use crate::args::Target;
use crate::control::{request, Request, Response};
use ridondato_core::{Command, ResyncKind, Status, Target as Want};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a command did not go through, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Refused or failed; the message says why (exit 1).
    Refused(String),
    /// Bad usage the parser could not see (exit 2).
    Usage(String),
    /// The node did not answer (exit 3).
    Unreachable(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Refused(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Failure {
        Failure::Refused(s.to_string())
    }
}

pub enum Node {
    Local(PathBuf),
    Remote { url: String, token: String, agent: ureq::Agent },
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Local(p) => write!(f, "Local({})", p.display()),
            // Never the token.
            Node::Remote { url, .. } => write!(f, "Remote({url})"),
        }
    }
}

/// A status and the datagrams refused since start, by reason.
pub type StatusAndDrops = (Status, BTreeMap<String, u64>);

impl Node {
    pub fn from_target(t: &Target) -> Result<Node, Failure> {
        if let Some(url) = &t.url {
            let token_file = t.token_file.as_deref().ok_or(Failure::Usage("--url needs --token-file".into()))?;
            let token = read_token(token_file)?;
            let url = url.trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Failure::Usage(format!("--url: `{url}` must start with http:// or https://")));
            }
            return Ok(Node::Remote { url, token, agent: agent(t.ca_file.as_deref())? });
        }
        if t.token_file.is_some() {
            return Err(Failure::Usage("--token-file goes with --url (the control socket needs no token)".into()));
        }
        Ok(Node::Local(socket_of(t)?))
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Node::Local(_))
    }

    pub fn status(&self) -> Result<StatusAndDrops, Failure> {
        match self {
            Node::Local(socket) => match request(socket, &Request::Status).map_err(Failure::Unreachable)? {
                Response::Status(s, dropped) => Ok((*s, dropped)),
                Response::Reply(Err(e)) | Response::BadRequest(e) => Err(Failure::Refused(e)),
                Response::Reply(Ok(m)) => Err(Failure::Refused(m)),
            },
            Node::Remote { .. } => {
                let v = self.http("GET", "/status", None)?;
                let s = serde_json::from_value(v["node"].clone()).map_err(|e| Failure::Refused(format!("the node's status is not understood: {e}")))?;
                let dropped = serde_json::from_value(v["dropped_datagrams"].clone()).unwrap_or_default();
                Ok((s, dropped))
            }
        }
    }

    /// Sends one operator command; `Ok` carries the node's answer.
    pub fn command(&self, cmd: Command) -> Result<String, Failure> {
        match self {
            Node::Local(socket) => self.local(socket, &Request::Command(cmd)),
            Node::Remote { .. } => {
                let name = |t: Want| match t {
                    Want::Master => "master",
                    Want::Slave => "slave",
                    Want::Off => "off",
                };
                let (method, path, body) = match cmd {
                    Command::SetState(t) => ("POST", "/state", Some(serde_json::json!({ "state": name(t) }))),
                    Command::AskPeer(t) => ("POST", "/state", Some(serde_json::json!({ "state": name(t), "node": "peer" }))),
                    Command::Switchover => ("POST", "/switchover", None),
                    Command::Maintenance(on) => ("POST", "/maintenance", Some(serde_json::json!({ "maintenance": if on { "on" } else { "off" } }))),
                    Command::Resync(k) => ("POST", "/resync", Some(serde_json::json!({ "resync": k.as_str() }))),
                    Command::CancelResync => ("DELETE", "/resync", None),
                    Command::ForceMaster => {
                        return Err(Failure::Refused("--accept-data-loss is taken only on the node itself (root, control socket): run it there".into()))
                    }
                    other => return Err(Failure::Refused(format!("{other:?} is not offered by the HTTP API"))),
                };
                result(self.http(method, path, body)?)
            }
        }
    }

    /// A control-socket request that only root on the node may make.
    pub fn local_only(&self, req: &Request, what: &str) -> Result<String, Failure> {
        match self {
            Node::Local(socket) => self.local(socket, req),
            Node::Remote { .. } => Err(Failure::Refused(format!("{what} is done on the node itself (root, control socket), not through --url"))),
        }
    }

    fn local(&self, socket: &Path, req: &Request) -> Result<String, Failure> {
        match request(socket, req).map_err(Failure::Unreachable)? {
            Response::Reply(Ok(m)) => Ok(m),
            Response::Reply(Err(e)) | Response::BadRequest(e) => Err(Failure::Refused(e)),
            Response::Status(..) => Err(Failure::Refused("unexpected answer from the daemon".into())),
        }
    }

    /// One API call: the JSON answer of a 2xx, else the API's own error message.
    pub fn http(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, Failure> {
        let Node::Remote { url, token, agent } = self else { return Err(Failure::Refused("not an HTTP node".into())) };
        let full = format!("{url}{path}");
        let auth = format!("Bearer {token}");
        let sent = match (method, body) {
            ("GET", _) => agent.get(&full).header("Authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&full).header("Authorization", &auth).call(),
            (_, b) => agent.post(&full).header("Authorization", &auth).content_type("application/json").send(b.unwrap_or_default().to_string()),
        };
        let mut answer = sent.map_err(|e| Failure::Unreachable(format!("cannot reach {url}: {e}")))?;
        let code = answer.status().as_u16();
        let text = answer.body_mut().read_to_string().map_err(|e| Failure::Unreachable(format!("{url}: reading the answer: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&code) {
            return Ok(v);
        }
        let why = v["error"].as_str().map_or_else(|| format!("{method} {path}: HTTP {code}"), str::to_string);
        Err(Failure::Refused(why))
    }
}

fn result(v: serde_json::Value) -> Result<String, Failure> {
    Ok(v["result"].as_str().map_or_else(|| v["result"].to_string(), str::to_string))
}

/// The socket named by `--socket`, or the one `--config`'s file names.
pub fn socket_of(t: &Target) -> Result<PathBuf, Failure> {
    match &t.config {
        Some(f) => Ok(crate::config::load(f)?.file.node.control_socket),
        None => Ok(t.socket.clone()),
    }
}

/// The token file: private (it opens every command of the node), one line.
fn read_token(path: &Path) -> Result<String, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Failure::Usage(format!("--token-file {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Failure::Usage(format!(
            "--token-file {}: readable by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("--token-file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Failure::Usage(format!("--token-file {}: expected one token on one line", path.display())));
    }
    Ok(token.to_string())
}

/// An HTTP agent: 60 s for a whole call (a switch-over waits for the node), errors as answers
/// (the API's own JSON message is what the operator needs), and with `--ca-file` that CA alone.
pub fn agent(ca_file: Option<&Path>) -> Result<ureq::Agent, Failure> {
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = ureq::tls::TlsConfig::builder().unversioned_rustls_crypto_provider(provider);
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| Failure::Usage(format!("--ca-file {}: {e}", ca.display())))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(Failure::Usage(format!("--ca-file {}: no PEM certificate in it", ca.display())));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
    }
    let config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(60))).http_status_as_error(false).tls_config(tls.build());
    Ok(config.build().into())
}

/// The resync kinds the CLI and the API name alike.
pub fn resync_kind(k: crate::args::ResyncWhat) -> Option<ResyncKind> {
    match k {
        crate::args::ResyncWhat::Db => Some(ResyncKind::Db),
        crate::args::ResyncWhat::Fs => Some(ResyncKind::Fs),
        crate::args::ResyncWhat::All => Some(ResyncKind::All),
        crate::args::ResyncWhat::Mongo => Some(ResyncKind::Mongo),
        crate::args::ResyncWhat::Cancel => None,
    }
}
