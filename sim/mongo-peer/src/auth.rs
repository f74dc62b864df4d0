//! Optional authentication: SCRAM-SHA-256 as mongod speaks it, server side for clients and
//! client side for the members' own link.
//!
//! Modelled on:
//! - RFC 5802 (SCRAM): <https://www.rfc-editor.org/rfc/rfc5802>
//! - RFC 7677 (SCRAM-SHA-256): <https://www.rfc-editor.org/rfc/rfc7677>
//! - MongoDB's SCRAM page: <https://www.mongodb.com/docs/manual/core/security-scram/>
//! - `saslStart` / `saslContinue` and `hello`'s `saslSupportedMechs` / `speculativeAuthenticate`
//!   (<https://www.mongodb.com/docs/manual/reference/command/hello/>), and the drivers' auth
//!   spec (<https://github.com/mongodb/specifications/blob/master/source/auth/auth.md>), which
//!   describes `skipEmptyExchange` and speculative authentication.
//!
//! What mongod does and this module does too:
//! - users live in `admin`; `saslStart` on another database finds no user.
//! - `saslStart {mechanism, payload: BinData, options: {skipEmptyExchange}}` answers
//!   `{conversationId: 1, done: false, payload: server-first}`; `saslContinue` with the client
//!   proof answers the server signature (`v=...`) with `done: true` if the client asked to skip
//!   the empty exchange, else `done: false`, and the client's final empty `saslContinue` then gets
//!   `done: true` and an empty payload. A connection counts as authenticated once `done` is true.
//! - every SCRAM failure (unknown user, malformed message, wrong proof) is reported as
//!   `AuthenticationFailed` (18) "Authentication failed."; only `MechanismUnavailable` (334) and
//!   `ProtocolError` (17, no conversation / mismatched conversation id) come through as such.
//! - `hello {speculativeAuthenticate: {saslStart, mechanism, payload, db}}` runs that `saslStart`
//!   and puts its reply under `speculativeAuthenticate`; a failure just leaves the field out, and
//!   the driver then starts over with `saslStart`.
//! - `hello {saslSupportedMechs: "admin.<user>"}` answers `["SCRAM-SHA-256"]` for a known user and
//!   nothing for an unknown one.
//! - the salt is 28 random bytes and the iteration count 15000 (mongod's defaults for
//!   SCRAM-SHA-256), derived once per user at start.
//! - a `payload` sent as a string is base64 and is answered as a string, as mongod does.
//!
//! Simplifications: SCRAM-SHA-1 is not enabled (as with mongod's
//! `authenticationMechanisms=SCRAM-SHA-256`), every user may run every command (as with the
//! `root` role), there is no `logout`, and SASLprep is limited to ASCII: a printable-ASCII
//! password maps to itself under RFC 4013, and anything else is refused when the peer starts.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{CmdError, CmdResult};

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// mongod's default `scramSHA256IterationCount`.
const ITERATIONS: u32 = 15_000;
/// RFC 7677 asks clients to accept no fewer; the drivers enforce the same floor.
const MIN_ITERATIONS: u32 = 4096;
/// mongod's salt length for SCRAM-SHA-256: the hash length minus 4.
const SALT_LEN: usize = 28;
/// mongod numbers the one conversation a connection may have in flight 1.
const CONVERSATION_ID: i32 = 1;
/// The database users are defined in.
const USER_DB: &str = "admin";

/// Commands a connection may run before it authenticates (mongod's `requiresAuth() == false`,
/// cut down to what this peer implements): the handshake, the SASL conversation itself, a
/// liveness check, the server's identity, `connectionStatus` (to ask whether one is
/// authenticated) and `endSessions`, which a driver sends while shutting down.
const OPEN_COMMANDS: &[&str] =
    &["hello", "isMaster", "ismaster", "saslStart", "saslContinue", "ping", "buildInfo", "buildinfo", "connectionStatus", "endSessions"];

type HmacSha256 = Hmac<Sha256>;
type Key = [u8; 32];
/// SaltedPassword by (salt, iteration count).
type SaltedCache = HashMap<(Vec<u8>, u32), Key>;

fn hmac(key: &[u8], data: &[u8]) -> Key {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `Hi(str, salt, i)` of RFC 5802: PBKDF2-HMAC-SHA-256 (RFC 8018) with one output block, since
/// the derived key is exactly one hash long.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let prf = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: Key = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// SASLprep (RFC 4013) for ASCII only: printable ASCII maps to itself and control characters
/// are prohibited; non-ASCII input, which would need the full stringprep tables, is refused.
fn saslprep(password: &str) -> io::Result<&str> {
    if password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(password)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "passwords must be printable ASCII (this peer's SASLprep handles ASCII only)"))
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(b)
}

/// A printable nonce without ',' (base64 of 24 random bytes, as the drivers and mongod use).
fn nonce() -> io::Result<String> {
    Ok(B64.encode(random::<24>()?))
}

/// `saslname` of RFC 5802: ',' and '=' escaped as "=2C" and "=3D".
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The reverse of [`escape_name`]; `None` if a '=' starts anything but "=2C" or "=3D".
fn unescape_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        out.push(match rest.get(at + 1..at + 3)? {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Splits `a=x,b=y` into its attributes, in order.
fn attributes(msg: &str) -> Option<Vec<(char, &str)>> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            let key = chars.next()?;
            (chars.next()? == '=').then_some((key, chars.as_str()))
        })
        .collect()
}

fn client_key_of(salted: &Key) -> Key {
    hmac(salted, b"Client Key")
}

fn server_key_of(salted: &Key) -> Key {
    hmac(salted, b"Server Key")
}

/// What the server keeps of a user: never the password, only the RFC 5802 verifiers.
struct User {
    name: String,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Key,
    server_key: Key,
}

/// The users (server side) and the credentials the link authenticates with (client side).
pub struct Auth {
    users: Vec<User>,
    /// The first configured user: how this member logs in to the others, which are started with
    /// the same users (mongod would use the keyFile's internal user instead).
    link: Option<(String, String)>,
    /// SaltedPassword per (salt, iterations) of each member the link talks to, so that PBKDF2
    /// runs once per member rather than once per connection. Shared with the blocking task that
    /// computes it, so that a link call timing out meanwhile does not lose the result.
    salted: Arc<Mutex<SaltedCache>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("users", &self.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// One connection's authentication state.
#[derive(Debug, Default)]
pub struct Session {
    user: Option<String>,
    conversation: Option<Conversation>,
}

#[derive(Debug)]
enum Conversation {
    /// After server-first: waiting for the client proof.
    Proof {
        user: usize,
        /// `client-first-message-bare + "," + server-first-message`, the start of AuthMessage.
        transcript: String,
        gs2_header: String,
        nonce: String,
        skip_empty: bool,
        as_string: bool,
    },
    /// After server-final without `skipEmptyExchange`: waiting for the empty last round.
    Empty { user: usize, as_string: bool },
}

fn failed(why: &str) -> CmdError {
    tracing::debug!(reason = why, "authentication failed");
    CmdError::new(18, "AuthenticationFailed", "Authentication failed.")
}

fn protocol_error(msg: &str) -> CmdError {
    CmdError::new(17, "ProtocolError", msg)
}

/// The `payload` field: BinData, or a base64 string (then answered as a string).
fn payload_of(cmd: &Document) -> CmdResult<(Vec<u8>, bool)> {
    match cmd.get("payload") {
        Some(Bson::Binary(b)) => Ok((b.bytes.clone(), false)),
        Some(Bson::String(s)) => B64.decode(s).map(|b| (b, true)).map_err(|_| failed("payload is not base64")),
        _ => Err(failed("no payload")),
    }
}

fn sasl_reply(done: bool, payload: &[u8], as_string: bool) -> Document {
    let payload = if as_string { Bson::String(B64.encode(payload)) } else { Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: payload.to_vec() }) };
    doc! { "conversationId": CONVERSATION_ID, "done": done, "payload": payload }
}

impl Auth {
    /// Derives each user's verifiers (PBKDF2 with mongod's iteration count: call it off the
    /// async threads). Later duplicates of a user name are ignored.
    pub fn new(users: &[(String, String)]) -> io::Result<Auth> {
        let mut out = Vec::new();
        for (name, password) in users {
            if name.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty user name"));
            }
            let prepped = saslprep(password)?;
            if out.iter().any(|u: &User| u.name == *name) {
                continue;
            }
            let salt = random::<SALT_LEN>()?.to_vec();
            let salted = hi(prepped.as_bytes(), &salt, ITERATIONS);
            out.push(User {
                name: name.clone(),
                salt,
                iterations: ITERATIONS,
                stored_key: sha256(&client_key_of(&salted)),
                server_key: server_key_of(&salted),
            });
        }
        Ok(Auth { users: out, link: users.first().cloned(), salted: Arc::default() })
    }

    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    fn user(&self, db: &str, name: &str) -> Option<usize> {
        (db == USER_DB).then(|| self.users.iter().position(|u| u.name == name)).flatten()
    }

    /// The gate in front of every command: with users configured, only [`OPEN_COMMANDS`] run on
    /// a connection that has not authenticated.
    pub fn check(&self, session: &Session, command: &str) -> CmdResult<()> {
        if !self.enabled() || session.user.is_some() || OPEN_COMMANDS.contains(&command) {
            return Ok(());
        }
        Err(CmdError::new(13, "Unauthorized", format!("command {command} requires authentication")))
    }

    /// `saslStart` (also reached through `hello`'s `speculativeAuthenticate`).
    pub fn sasl_start(&self, session: &mut Session, db: &str, cmd: &Document) -> CmdResult {
        session.conversation = None;
        let mechanism = cmd.get_str("mechanism").unwrap_or_default();
        if mechanism != MECHANISM {
            return Err(CmdError::new(
                334,
                "MechanismUnavailable",
                format!("Received authentication for mechanism {mechanism} which is unknown or not enabled"),
            ));
        }
        let (payload, as_string) = payload_of(cmd)?;
        let skip_empty = cmd.get_document("options").ok().and_then(|o| o.get_bool("skipEmptyExchange").ok()).unwrap_or(false);
        let msg = std::str::from_utf8(&payload).map_err(|_| failed("client-first is not UTF-8"))?;
        // client-first-message = gs2-header client-first-message-bare, gs2-header = cbind-flag
        // "," [authzid] ","; no channel binding ("n", or "y": client could but thinks we can't).
        let mut parts = msg.splitn(3, ',');
        let (cbind, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(c), Some(a), Some(b)) => (c, a, b),
            _ => return Err(failed("malformed client-first")),
        };
        if cbind != "n" && cbind != "y" {
            return Err(failed("channel binding is not supported"));
        }
        let attrs = attributes(bare).ok_or_else(|| failed("malformed client-first-bare"))?;
        let (name, client_nonce) = match attrs.as_slice() {
            [('n', n), ('r', r), ..] if !r.is_empty() => (unescape_name(n).ok_or_else(|| failed("bad saslname"))?, *r),
            _ => return Err(failed("client-first needs n= and r= (and no mandatory extension)")),
        };
        if !authzid.is_empty() && authzid != format!("a={}", escape_name(&name)) {
            return Err(failed("authzid differs from the user"));
        }
        let user = self.user(db, &name).ok_or_else(|| failed("no such user"))?;
        let u = &self.users[user];
        let nonce = format!("{client_nonce}{}", nonce().map_err(|e| failed(&e.to_string()))?);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&u.salt), u.iterations);
        let gs2_header = msg[..msg.len() - bare.len()].to_string();
        let transcript = format!("{bare},{server_first}");
        session.conversation = Some(Conversation::Proof { user, transcript, gs2_header, nonce, skip_empty, as_string });
        Ok(sasl_reply(false, server_first.as_bytes(), as_string))
    }

    /// `saslContinue`: the client proof, then (without `skipEmptyExchange`) the empty last round.
    pub fn sasl_continue(&self, session: &mut Session, cmd: &Document) -> CmdResult {
        let conversation = session.conversation.take().ok_or_else(|| protocol_error("No SASL session state found"))?;
        if cmd.get("conversationId").and_then(crate::query::as_i64) != Some(i64::from(CONVERSATION_ID)) {
            return Err(protocol_error("sasl: Mismatched conversation id"));
        }
        let (payload, _) = payload_of(cmd)?;
        match conversation {
            Conversation::Empty { user, as_string } => {
                if !payload.is_empty() {
                    return Err(failed("the last round must be empty"));
                }
                session.user = Some(self.users[user].name.clone());
                Ok(sasl_reply(true, &[], as_string))
            }
            Conversation::Proof { user, transcript, gs2_header, nonce, skip_empty, as_string } => {
                let msg = std::str::from_utf8(&payload).map_err(|_| failed("client-final is not UTF-8"))?;
                let attrs = attributes(msg).ok_or_else(|| failed("malformed client-final"))?;
                let (cbind, r, proof) = match attrs.as_slice() {
                    [('c', c), ('r', r), .., ('p', p)] => (*c, *r, *p),
                    _ => return Err(failed("client-final needs c=, r= and p=")),
                };
                if B64.decode(cbind).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(failed("channel binding data differs from the gs2 header"));
                }
                if r != nonce {
                    return Err(failed("nonce mismatch"));
                }
                let proof = B64.decode(proof).map_err(|_| failed("proof is not base64"))?;
                let without_proof = &msg[..msg.rfind(",p=").unwrap_or(msg.len())];
                let auth_message = format!("{transcript},{without_proof}");
                let u = &self.users[user];
                let signature = hmac(&u.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err(failed("proof has the wrong length"));
                }
                let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                if !ct_eq(&sha256(&client_key), &u.stored_key) {
                    return Err(failed("wrong proof"));
                }
                let server_final = format!("v={}", B64.encode(hmac(&u.server_key, auth_message.as_bytes())));
                if skip_empty {
                    session.user = Some(u.name.clone());
                } else {
                    session.conversation = Some(Conversation::Empty { user, as_string });
                }
                Ok(sasl_reply(skip_empty, server_final.as_bytes(), as_string))
            }
        }
    }

    /// The authentication parts of a `hello` reply.
    pub fn on_hello(&self, session: &mut Session, cmd: &Document, reply: &mut Document) {
        if let Ok(wanted) = cmd.get_str("saslSupportedMechs") {
            if wanted.split_once('.').is_some_and(|(db, name)| self.user(db, name).is_some()) {
                reply.insert("saslSupportedMechs", vec![MECHANISM]);
            }
        }
        if let Ok(spec) = cmd.get_document("speculativeAuthenticate") {
            // mongod only treats it as a saslStart if it names its database in `db`.
            if let Ok(db) = spec.get_str("db") {
                if let Ok(r) = self.sasl_start(session, db, spec) {
                    reply.insert("speculativeAuthenticate", r);
                }
            }
        }
    }

    /// `connectionStatus`: who this connection is (every user acts as `root`).
    pub fn connection_status(&self, session: &Session) -> Document {
        let (users, roles) = match &session.user {
            Some(u) => (vec![Bson::Document(doc! {"user": u.clone(), "db": USER_DB})], vec![Bson::Document(doc! {"role": "root", "db": USER_DB})]),
            None => (vec![], vec![]),
        };
        doc! { "authInfo": { "authenticatedUsers": users, "authenticatedUserRoles": roles } }
    }

    /// The link's side: authenticates a fresh member-to-member connection as the first
    /// configured user, with `saslStart` / `saslContinue` and the final empty round (it does not
    /// ask to skip it, so that the peers exercise that path too). Nothing to do without users.
    pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S, ids: &AtomicI32) -> io::Result<()> {
        let Some((user, password)) = &self.link else { return Ok(()) };
        let denied = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, format!("authentication as {user} failed: {why}"));
        let client_nonce = nonce()?;
        let bare = format!("n={},r={client_nonce}", escape_name(user));
        let start = doc! { "saslStart": 1, "mechanism": MECHANISM, "payload": bin(format!("n,,{bare}").into_bytes()), "$db": USER_DB };
        let (_, server_first) = round(stream, ids, start).await.map_err(denied)?;
        let server_first = String::from_utf8(server_first).map_err(|_| denied("server-first is not UTF-8".into()))?;
        let (nonce, salt, iterations) = match attributes(&server_first).as_deref() {
            Some([('r', r), ('s', s), ('i', i), ..]) => (r.to_string(), B64.decode(s).ok(), i.parse::<u32>().ok()),
            _ => return Err(denied(format!("malformed server-first {server_first:?}"))),
        };
        let (Some(salt), Some(iterations)) = (salt, iterations) else { return Err(denied("bad salt or iteration count".into())) };
        if !nonce.starts_with(&client_nonce) || nonce.len() == client_nonce.len() || iterations < MIN_ITERATIONS {
            return Err(denied("server-first fails validation".into()));
        }
        let salted = self.salted_password(password, salt, iterations).await?;
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_key = client_key_of(&salted);
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        let client_final = format!("{without_proof},p={}", B64.encode(proof));
        let cont = |payload: Vec<u8>| doc! { "saslContinue": 1, "conversationId": CONVERSATION_ID, "payload": bin(payload), "$db": USER_DB };
        let (mut done, server_final) = round(stream, ids, cont(client_final.into_bytes())).await.map_err(denied)?;
        let expected = format!("v={}", B64.encode(hmac(&server_key_of(&salted), auth_message.as_bytes())));
        if !ct_eq(&server_final, expected.as_bytes()) {
            return Err(denied("the server's signature does not verify".into()));
        }
        // RFC 5802's exchange is over; mongod still wants the empty round unless told to skip it.
        for _ in 0..2 {
            if done {
                return Ok(());
            }
            done = round(stream, ids, cont(Vec::new())).await.map_err(denied)?.0;
        }
        Err(denied("the conversation does not end".into()))
    }

    async fn salted_password(&self, password: &str, salt: Vec<u8>, iterations: u32) -> io::Result<Key> {
        let key = (salt, iterations);
        if let Some(k) = self.salted.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*k);
        }
        let prepped = saslprep(password)?.to_string();
        let cache = self.salted.clone();
        tokio::task::spawn_blocking(move || {
            let salted = hi(prepped.as_bytes(), &key.0, key.1);
            cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, salted);
            salted
        })
        .await
        .map_err(io::Error::other)
    }
}

fn bin(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

/// One SASL command on the link: `(done, payload)` or the server's error message.
async fn round<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, ids: &AtomicI32, cmd: Document) -> Result<(bool, Vec<u8>), String> {
    let reply = crate::wire::call(stream, ids.fetch_add(1, Ordering::Relaxed), &cmd).await.map_err(|e| e.to_string())?;
    if reply.get("ok").and_then(crate::query::as_f64) != Some(1.0) {
        return Err(reply.get_str("errmsg").unwrap_or("saslStart/saslContinue failed").to_string());
    }
    if reply.get("conversationId").and_then(crate::query::as_i64) != Some(i64::from(CONVERSATION_ID)) {
        return Err("unexpected conversationId".into());
    }
    match (reply.get_bool("done"), reply.get_binary_generic("payload")) {
        (Ok(done), Ok(p)) => Ok((done, p.clone())),
        _ => Err("malformed SASL reply".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc_7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let salted = hi(b"pencil", &salt, 4096);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_key = client_key_of(&salted);
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        assert_eq!(B64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(B64.encode(hmac(&server_key_of(&salted), auth_message.as_bytes())), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn saslnames_round_trip_and_sasl_prep_is_ascii_only() {
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
        assert_eq!(unescape_name("a=3Db=2Cc").as_deref(), Some("a=b,c"));
        assert_eq!(unescape_name("a=b"), None);
        assert_eq!(attributes("r=a=b,s=,\u{20ac}=x"), Some(vec![('r', "a=b"), ('s', ""), ('\u{20ac}', "x")]));
        assert_eq!(attributes("r=a,\u{20ac}"), None);
        assert!(saslprep("pencil ~!").is_ok());
        assert!(saslprep("pen\tcil").is_err());
        assert!(saslprep("pencil\u{e9}").is_err());
    }

    /// Answers SASL commands on one end of an in-memory pipe as a connection would; returns the
    /// user the connection ended up authenticated as, and how many commands it got.
    fn sasl_server(auth: Arc<Auth>, end: tokio::io::DuplexStream) -> tokio::task::JoinHandle<(Option<String>, usize)> {
        tokio::spawn(async move {
            let mut session = Session::default();
            let (rd, mut wr) = tokio::io::split(end);
            let mut rd = tokio::io::BufReader::new(rd);
            let mut rounds = 0;
            while let Ok(Some(msg)) = crate::wire::read_message(&mut rd).await {
                rounds += 1;
                let start = msg.command.contains_key("saslStart");
                let res = if start { auth.sasl_start(&mut session, "admin", &msg.command) } else { auth.sasl_continue(&mut session, &msg.command) };
                let mut reply = res.unwrap_or_else(|e| e.to_doc());
                if !reply.contains_key("ok") {
                    reply.insert("ok", 1.0);
                }
                let bytes = crate::wire::encode(1, msg.request_id, &reply).expect("encode");
                if tokio::io::AsyncWriteExt::write_all(&mut wr, &bytes).await.is_err() {
                    break;
                }
            }
            (session.user, rounds)
        })
    }

    /// The link's client against the server side, with the empty last round; then a wrong
    /// password.
    #[tokio::test]
    async fn link_client_against_server() {
        let users = vec![("root".to_string(), "s3cret".to_string())];
        let server = Arc::new(Auth::new(&users).expect("auth"));
        let ids = AtomicI32::new(1);

        let (mut client_end, server_end) = tokio::io::duplex(1 << 16);
        let task = sasl_server(server.clone(), server_end);
        Auth::new(&users).expect("auth").login(&mut client_end, &ids).await.expect("login");
        drop(client_end);
        let (user, rounds) = task.await.expect("server task");
        assert_eq!(user.as_deref(), Some("root"));
        assert_eq!(rounds, 3, "saslStart, the proof, and the empty last round");

        let (mut client_end, server_end) = tokio::io::duplex(1 << 16);
        let task = sasl_server(server, server_end);
        let wrong = Auth::new(&[("root".to_string(), "nope".to_string())]).expect("auth");
        let err = wrong.login(&mut client_end, &ids).await.expect_err("wrong password accepted");
        assert!(err.to_string().contains("Authentication failed."), "{err}");
        drop(client_end);
        assert_eq!(task.await.expect("server task").0, None);
    }

    #[test]
    fn gate_and_error_codes() {
        let auth = Auth::new(&[("u".to_string(), "p".to_string())]).expect("auth");
        let mut s = Session::default();
        assert_eq!(auth.check(&s, "find").map_err(|e| e.code), Err(13));
        assert!(auth.check(&s, "hello").is_ok());
        let start = doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-1", "payload": bin(b"n,,n=u,r=abc".to_vec()) };
        assert_eq!(auth.sasl_start(&mut s, "admin", &start).map_err(|e| e.code), Err(334));
        let start = doc! { "saslStart": 1, "mechanism": MECHANISM, "payload": bin(b"n,,n=u,r=abc".to_vec()) };
        assert_eq!(auth.sasl_start(&mut s, "test", &start).map_err(|e| e.code), Err(18), "users live in admin");
        let cont = doc! { "saslContinue": 1, "conversationId": 1, "payload": bin(Vec::new()) };
        assert_eq!(auth.sasl_continue(&mut s, &cont).map_err(|e| e.code), Err(17));
        assert!(Auth::new(&[]).expect("auth").check(&s, "find").is_ok(), "no users, no gate");
    }
}
