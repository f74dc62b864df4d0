//! Node-to-node frames: versioned, compact, authenticated, and bound to both nodes' current
//! sessions so that no frame of an earlier run of either node is ever accepted again.
//!
//! ```text
//! hello: "RDT" | 2 | sender u8 | 0 | my nonce (16)                               | tag (32)
//! data:  "RDT" | 2 | sender u8 | 1 | my nonce (16) | your nonce (16) | counter u64 BE | payload | tag (32)
//! ```
//! Each node draws a fresh random nonce when it starts. A data frame's tag is HMAC-SHA256
//! under a session key derived from the cluster key and both nonces (sender's, then the
//! receiver's as the sender knows it), and its counter starts at 1 per session. The receiver
//! takes only frames addressed to its own current nonce (a frame captured before it restarted
//! names an older one), only increasing counters within a peer session, and never a peer
//! session it has seen superseded (a frame of the peer's previous run). No wall clock and
//! nothing persisted: a restarted peer, or one whose clock jumped, is heard at its first frame
//! once it knows our nonce, which it learns from any authentic frame of ours (or a hello, sent
//! while it knows none). While a session works, frames naming other sessions change nothing,
//! so replaying old frames cannot disturb it. Payloads are postcard (serde), behind the version byte.

use crate::codec::MessageCodec;
use hmac::{Hmac, Mac};
use ridondato_core::Message;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 3] = b"RDT";
const VERSION: u8 = 2;
const HELLO: u8 = 0;
const DATA: u8 = 1;
const NONCE: usize = 16;
/// Magic, version, sender, kind.
const PREFIX: usize = 6;
const HELLO_LEN: usize = PREFIX + NONCE + TAG;
const DATA_HEADER: usize = PREFIX + 2 * NONCE + 8;
const TAG: usize = 32;
/// Larger frames are refused before any work: a heartbeat is well under 200 bytes.
const MAX_FRAME: usize = 4096;
/// A peer session counts as working while its frames keep arriving within this (ten
/// heartbeats): until then, frames naming other sessions are ignored.
const WORKING: Duration = Duration::from_secs(1);
/// Peer sessions remembered as superseded (the peer restarts rarely).
const RETIRED: usize = 16;

type Nonce = [u8; NONCE];
/// The key derived from the shared secret file.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Derives the frame key from a secret of at least 16 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Key, String> {
        if secret.len() < 16 {
            return Err(format!("the shared secret has {} bytes; it needs at least 16", secret.len()));
        }
        let mut h = Sha256::new();
        h.update(b"ridondato frame key v1\0");
        h.update(secret);
        Ok(Key(h.finalize().into()))
    }

    /// A password for another channel (`purpose`, e.g. "rsync") derived from this key: hex, so
    /// safe in any password file, and distinct per purpose, so one leaking reveals no other.
    pub fn derived_password(&self, purpose: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"ridondato derived password v1\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(self.0);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the secret file (trailing newline ignored). Refuses a file others can read.
    pub fn from_file(path: &Path) -> Result<Key, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("{}: readable by group or others (mode {:o}); chmod 600 it", path.display(), meta.permissions().mode() & 0o777));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        Key::from_secret(trimmed).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Why a frame was refused (each reason counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    TooShort,
    TooLong,
    BadMagic,
    UnsupportedVersion,
    WrongSender,
    BadTag,
    Replayed,
    Undecodable,
    /// Authentic, but addressed to an earlier run of this node.
    OtherSession,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::TooShort,
        Reject::TooLong,
        Reject::BadMagic,
        Reject::UnsupportedVersion,
        Reject::WrongSender,
        Reject::BadTag,
        Reject::Replayed,
        Reject::Undecodable,
        Reject::OtherSession,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooShort => "too short",
            Reject::TooLong => "too long",
            Reject::BadMagic => "bad magic",
            Reject::UnsupportedVersion => "unsupported version",
            Reject::WrongSender => "unexpected sender",
            Reject::BadTag => "bad authentication tag",
            Reject::Replayed => "replayed or reordered",
            Reject::Undecodable => "undecodable payload",
            Reject::OtherSession => "addressed to an earlier run of this node",
        }
    }

    fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Sessions {
    /// The peer's nonce we address our data frames to (None: we send hellos).
    send_to: Option<Nonce>,
    /// The peer session we accept frames from: its nonce, highest counter, when last heard.
    peer: Option<(Nonce, u64, Instant)>,
    retired: std::collections::VecDeque<Nonce>,
}

impl Sessions {
    fn working(&self) -> bool {
        self.peer.is_some_and(|(_, _, at)| at.elapsed() < WORKING)
    }

    fn retired(&self, n: &Nonce) -> bool {
        self.retired.contains(n)
    }

    /// An authentic frame told us the peer's nonce: address it, unless a working session says
    /// otherwise (a replayed old frame must not disturb it) or that run is known to be over.
    fn learn(&mut self, n: Nonce) {
        if !self.working() && !self.retired(&n) {
            self.send_to = Some(n);
        }
    }
}

/// Seals our frames and opens the peer's.
#[derive(Debug)]
pub struct AuthCodec {
    key: Key,
    me: u8,
    peer: u8,
    nonce: Nonce,
    counter: AtomicU64,
    sessions: Mutex<Sessions>,
    rejected: [AtomicU64; 9],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl AuthCodec {
    /// A codec for this run of node `me`, with a fresh random nonce.
    pub fn new(key: Key, me: u8, peer: u8) -> Result<AuthCodec, String> {
        let mut nonce = [0u8; NONCE];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness for the session nonce: {e}"))?;
        Ok(AuthCodec::with_nonce(key, me, peer, nonce))
    }

    /// With a given nonce (tests: a "restart" is a new nonce).
    pub fn with_nonce(key: Key, me: u8, peer: u8, nonce: [u8; 16]) -> AuthCodec {
        AuthCodec { key, me, peer, nonce, counter: AtomicU64::new(1), sessions: Mutex::default(), rejected: Default::default() }
    }

    /// Whether we know a run of the peer to address (our frames are data frames, not hellos).
    pub fn knows_peer(&self) -> bool {
        self.sessions().send_to.is_some()
    }

    /// How many frames were refused for `why`.
    pub fn rejected(&self, why: Reject) -> u64 {
        self.rejected[why.index()].load(Ordering::Relaxed)
    }

    fn session_key(&self, from: &Nonce, to: &Nonce) -> [u8; 32] {
        hmac(&self.key.0, &[b"ridondato session v2\0", from, to])
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let send_to = self.sessions().send_to;
        let mut f = Vec::with_capacity(DATA_HEADER + payload.len() + TAG);
        f.extend_from_slice(MAGIC);
        f.extend_from_slice(&[VERSION, self.me]);
        match send_to {
            // We know no run of the peer yet: say who we are; the message waits for the next
            // round (heartbeats repeat).
            None => {
                f.push(HELLO);
                f.extend_from_slice(&self.nonce);
                let tag = hmac(&self.key.0, &[&f]);
                f.extend_from_slice(&tag);
            }
            Some(to) => {
                f.push(DATA);
                f.extend_from_slice(&self.nonce);
                f.extend_from_slice(&to);
                f.extend_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
                f.extend_from_slice(payload);
                let tag = hmac(&self.session_key(&self.nonce, &to), &[&f]);
                f.extend_from_slice(&tag);
            }
        }
        f
    }

    /// Checks a frame; a data frame's payload, or `None` for a hello.
    pub fn open_bytes(&self, f: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
        let r = self.check(f);
        if let Err(why) = r {
            self.rejected[why.index()].fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn check(&self, f: &[u8]) -> Result<Option<Vec<u8>>, Reject> {
        if f.len() > MAX_FRAME {
            return Err(Reject::TooLong);
        }
        if f.len() < HELLO_LEN {
            return Err(Reject::TooShort);
        }
        if &f[..3] != MAGIC {
            return Err(Reject::BadMagic);
        }
        if f[3] != VERSION {
            return Err(Reject::UnsupportedVersion);
        }
        if f[4] != self.peer {
            return Err(Reject::WrongSender);
        }
        let (body, tag) = f.split_at(f.len() - TAG);
        let verify = |key: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| Reject::BadTag)?;
            mac.update(body);
            // Constant-time comparison, so the tag cannot be guessed byte by byte.
            mac.verify_slice(tag).map_err(|_| Reject::BadTag)
        };
        let nonce_at = |i: usize| -> Nonce {
            let mut n = [0u8; NONCE];
            n.copy_from_slice(&f[i..i + NONCE]);
            n
        };
        let from = nonce_at(PREFIX);
        match f[5] {
            HELLO if f.len() == HELLO_LEN => {
                verify(&self.key.0)?;
                self.sessions().learn(from);
                Ok(None)
            }
            DATA if f.len() >= DATA_HEADER + TAG => {
                let to = nonce_at(PREFIX + NONCE);
                verify(&self.session_key(&from, &to))?;
                let mut s = self.sessions();
                if to != self.nonce {
                    // Authentic, for an earlier run of ours: a replay, or a peer that has not
                    // heard of this run yet; it tells us the peer's nonce all the same.
                    s.learn(from);
                    return Err(Reject::OtherSession);
                }
                if s.retired(&from) {
                    return Err(Reject::Replayed);
                }
                let mut counter = [0u8; 8];
                counter.copy_from_slice(&f[PREFIX + 2 * NONCE..DATA_HEADER]);
                let counter = u64::from_be_bytes(counter);
                match s.peer {
                    Some((n, last, _)) if n == from && counter <= last => return Err(Reject::Replayed),
                    Some((n, _, _)) if n != from => {
                        // The peer started a new run: its previous one is over for good.
                        if s.retired.len() == RETIRED {
                            s.retired.pop_front();
                        }
                        s.retired.push_back(n);
                    }
                    _ => {}
                }
                s.peer = Some((from, counter, Instant::now()));
                s.send_to = Some(from);
                Ok(Some(body[DATA_HEADER..].to_vec()))
            }
            _ => Err(Reject::TooShort),
        }
    }
}

impl MessageCodec for AuthCodec {
    fn seal(&self, msg: &Message) -> Vec<u8> {
        let payload = postcard::to_stdvec(msg).unwrap_or_default();
        self.seal_bytes(&payload)
    }

    fn open(&self, datagram: &[u8]) -> Result<Option<Message>, String> {
        let Some(payload) = self.open_bytes(datagram).map_err(|r| r.as_str().to_string())? else { return Ok(None) };
        decode(&payload).map(Some).map_err(|_| {
            self.rejected[Reject::Undecodable.index()].fetch_add(1, Ordering::Relaxed);
            Reject::Undecodable.as_str().to_string()
        })
    }
}

/// Decodes a payload. A heartbeat of a node that predates its last field (`mongo`, an
/// `Option`) ends one byte early: read as that field absent, so a rolling upgrade keeps the
/// pair talking. (A newer field at the end is ignored by an older node: postcard leaves
/// trailing bytes unread.)
fn decode(payload: &[u8]) -> Result<Message, postcard::Error> {
    postcard::from_bytes(payload).or_else(|e| {
        let mut padded = payload.to_vec();
        padded.push(0);
        postcard::from_bytes(&padded).map_err(|_| e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ridondato_core::NodeId;

    fn key() -> Key {
        Key::from_secret(b"0123456789abcdef-cluster").expect("key")
    }

    /// Node 1's or node 2's run number `run` (a restart is a new run, a new nonce).
    fn node(me: u8, run: u8) -> AuthCodec {
        AuthCodec::with_nonce(key(), me, 3 - me, [me * 16 + run; 16])
    }

    /// Two runs that know each other (a hello from b, a data frame from a).
    fn pair() -> (AuthCodec, AuthCodec) {
        let (a, b) = (node(1, 0), node(2, 0));
        handshake(&a, &b);
        (a, b)
    }

    fn handshake(a: &AuthCodec, b: &AuthCodec) {
        assert_eq!(a.open(&b.seal(&msg())), Ok(None), "b knows no run of a: a hello");
        assert_eq!(b.open(&a.seal(&msg())), Ok(Some(msg())), "a addresses b's run");
        assert_eq!(a.open(&b.seal(&msg())), Ok(Some(msg())), "and b now addresses a's");
    }

    fn msg() -> Message {
        Message::SwitchoverRequest { from: NodeId(1), epoch: 7 }
    }

    fn heartbeat(mongo: Option<ridondato_core::MongoBeat>) -> Message {
        use ridondato_core::{Heartbeat, Maintenance, Millis, Position, Role};
        let p = Position(9);
        Message::Heartbeat(Heartbeat {
            from: NodeId(1),
            boot: 2,
            seq: 3,
            run: 4,
            sent_at: Millis(5),
            epoch: 6,
            role: Role::Master,
            position: p,
            needs_resync: false,
            maintenance: Maintenance::default(),
            was_master: true,
            handing_over: false,
            busy: false,
            replicating: false,
            received: p,
            db_ok: true,
            semi_sync: false,
            promotable: true,
            mongo,
        })
    }

    #[test]
    fn a_heartbeat_of_a_node_predating_the_mongo_field_still_opens() {
        let (a, b) = pair();
        let with = heartbeat(Some(ridondato_core::MongoBeat { optime: (3, 500, 7), healthy: true }));
        assert_eq!(b.open(&a.seal(&with)), Ok(Some(with)), "the field travels");
        // The older node's encoding: the same fields, without the last one.
        let mut old = postcard::to_stdvec(&heartbeat(None)).expect("encodes");
        assert_eq!(old.pop(), Some(0), "an absent Option is one zero byte at the end");
        assert_eq!(b.open(&a.seal_bytes(&old)), Ok(Some(heartbeat(None))));
        // Anything else short stays undecodable.
        old.truncate(old.len() - 3);
        assert_eq!(b.open(&a.seal_bytes(&old)).expect_err("short"), Reject::Undecodable.as_str());
    }

    #[test]
    fn a_sealed_message_opens_once() {
        let (a, b) = pair();
        let f = a.seal(&msg());
        assert_eq!(b.open(&f), Ok(Some(msg())));
        assert_eq!(b.open(&f).expect_err("an error"), "replayed or reordered");
        assert_eq!(b.rejected(Reject::Replayed), 1);
    }

    #[test]
    fn a_frame_captured_before_the_receiver_restarted_is_refused() {
        let (a, _b) = pair();
        let captured = a.seal(&msg());
        // b restarts: a new run with a new nonce, nothing persisted.
        let b2 = node(2, 1);
        assert_eq!(b2.open(&captured).expect_err("an error"), "addressed to an earlier run of this node");
        // Authentic all the same: b's new run now knows a's, a hears it at once, and back.
        assert_eq!(a.open(&b2.seal(&msg())), Ok(Some(msg())));
        assert_eq!(b2.open(&a.seal(&msg())), Ok(Some(msg())));
        assert_eq!(b2.open(&captured).expect_err("an error"), "addressed to an earlier run of this node", "still refused");
    }

    #[test]
    fn a_restarted_sender_is_heard_at_its_first_frame_and_its_old_frames_never_again() {
        let (a, b) = pair();
        let old = a.seal(&msg());
        let older = a.seal(&msg());
        assert_eq!(b.open(&old), Ok(Some(msg())));
        // a restarts (its state file may be gone, its clock set back an hour: neither is used).
        let a2 = node(1, 1);
        // It learns b's run from b's next frame (authentic, though addressed to a's old run).
        assert_eq!(a2.open(&b.seal(&msg())).expect_err("an error"), "addressed to an earlier run of this node");
        assert_eq!(b.open(&a2.seal(&msg())), Ok(Some(msg())), "the new run is heard at once");
        assert_eq!(b.open(&older).expect_err("an error"), "replayed or reordered", "the old run is over for good");
        assert_eq!(a2.open(&b.seal(&msg())), Ok(Some(msg())));
    }

    #[test]
    fn replayed_old_frames_do_not_disturb_a_working_session() {
        let (a, b) = pair();
        // Frames of an older run of b, authentic, replayed to a while its session with b works.
        let b_old = node(2, 9);
        let (stray_a, _) = (node(1, 9), ());
        handshake(&stray_a, &b_old);
        let replay = b_old.seal(&msg());
        for _ in 0..100 {
            assert!(a.open(&replay).is_err());
        }
        assert_eq!(b.open(&a.seal(&msg())), Ok(Some(msg())), "a still addresses b's current run");
    }

    #[test]
    fn a_forged_frame_is_refused() {
        let (a, b) = pair();
        let other = AuthCodec::with_nonce(Key::from_secret(b"another secret of 16+ bytes").expect("key"), 1, 2, [1; 16]);
        assert_eq!(b.open(&other.seal(&msg())).expect_err("an error"), "bad authentication tag");
        let mut f = a.seal(&msg());
        f[40] ^= 1;
        assert_eq!(b.open(&f).expect_err("an error"), "bad authentication tag");
        assert_eq!(b.rejected(Reject::BadTag), 2);
    }

    #[test]
    fn frames_from_ourselves_are_refused() {
        let (a, _) = pair();
        assert_eq!(a.open(&a.seal(&msg())).expect_err("an error"), "unexpected sender");
    }

    #[test]
    fn derived_passwords_differ_by_purpose_and_by_secret() {
        let a = Key::from_secret(b"0123456789abcdef").expect("key");
        let b = Key::from_secret(b"0123456789abcdeF").expect("key");
        let p = a.derived_password("rsync");
        assert_eq!(p.len(), 64);
        assert!(p.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p, a.derived_password("rsync"));
        assert_ne!(p, a.derived_password("other"));
        assert_ne!(p, b.derived_password("rsync"));
    }

    #[test]
    fn short_secrets_and_open_files_are_refused() {
        assert!(Key::from_secret(b"short").expect_err("an error").contains("at least 16"));
        let dir = std::env::temp_dir().join(format!("ridondato-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("secret");
        std::fs::write(&p, b"0123456789abcdef\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(Key::from_file(&p).expect_err("an error").contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(Key::from_file(&p).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn random_bytes_never_open_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (_, b) = pair();
            prop_assert!(b.open(&bytes).is_err());
        }

        #[test]
        fn any_flipped_bit_is_refused(bit in 0usize..(8 * 120)) {
            let (a, b) = pair();
            let mut f = a.seal(&msg());
            let i = (bit / 8) % f.len();
            f[i] ^= 1 << (bit % 8);
            prop_assert!(b.open(&f).is_err());
        }
    }
}
