//! Node-to-node frames: versioned, compact, authenticated with HMAC-SHA256 under the cluster
//! secret, with a per-sender counter so that replayed or reordered frames are refused.
//!
//! ```text
//! "RDT" | version u8 | sender u8 | counter u64 BE | payload (bincode) | HMAC-SHA256 tag (32)
//! ```
//! The counter starts from the sender's wall clock in microseconds at start-up and grows by one
//! per frame, so a restarted sender still moves forward without persisting anything.

use crate::codec::MessageCodec;
use hmac::{Hmac, Mac};
use ridondato_core::Message;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const MAGIC: &[u8; 3] = b"RDT";
const VERSION: u8 = 1;
const HEADER: usize = 3 + 1 + 1 + 8;
const TAG: usize = 32;
/// Larger frames are refused before any work: a heartbeat is well under 200 bytes.
const MAX_FRAME: usize = 4096;

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
}

impl Reject {
    const ALL: [Reject; 8] = [
        Reject::TooShort,
        Reject::TooLong,
        Reject::BadMagic,
        Reject::UnsupportedVersion,
        Reject::WrongSender,
        Reject::BadTag,
        Reject::Replayed,
        Reject::Undecodable,
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
        }
    }
}

/// Seals our frames and opens the peer's.
#[derive(Debug)]
pub struct AuthCodec {
    key: Key,
    me: u8,
    peer: u8,
    counter: AtomicU64,
    last_seen: Mutex<u64>,
    rejected: [AtomicU64; 8],
}

impl AuthCodec {
    /// `counter_start`: the wall clock in microseconds (see the module doc).
    pub fn new(key: Key, me: u8, peer: u8, counter_start: u64) -> AuthCodec {
        AuthCodec { key, me, peer, counter: AtomicU64::new(counter_start), last_seen: Mutex::new(0), rejected: Default::default() }
    }

    /// With the counter started from the system clock now.
    pub fn starting_now(key: Key, me: u8, peer: u8) -> AuthCodec {
        let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
        AuthCodec::new(key, me, peer, us)
    }

    /// How many frames were refused for `why`.
    pub fn rejected(&self, why: Reject) -> u64 {
        let i = Reject::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn seal_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut f = Vec::with_capacity(HEADER + payload.len() + TAG);
        f.extend_from_slice(MAGIC);
        f.push(VERSION);
        f.push(self.me);
        f.extend_from_slice(&counter.to_be_bytes());
        f.extend_from_slice(payload);
        let tag = self.tag(&f);
        f.extend_from_slice(&tag);
        f
    }

    /// Checks a frame; on success returns its payload.
    pub fn open_bytes(&self, f: &[u8]) -> Result<Vec<u8>, Reject> {
        let r = self.check(f);
        if let Err(why) = r {
            let i = Reject::ALL.iter().position(|x| *x == why).unwrap_or(0);
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn check(&self, f: &[u8]) -> Result<Vec<u8>, Reject> {
        if f.len() > MAX_FRAME {
            return Err(Reject::TooLong);
        }
        if f.len() < HEADER + TAG {
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
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0).expect("HMAC takes any key length");
        mac.update(body);
        // Constant-time comparison, so the tag cannot be guessed byte by byte.
        mac.verify_slice(tag).map_err(|_| Reject::BadTag)?;
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&f[5..13]);
        let counter = u64::from_be_bytes(counter);
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if counter <= *last {
            return Err(Reject::Replayed);
        }
        *last = counter;
        Ok(body[HEADER..].to_vec())
    }
}

impl MessageCodec for AuthCodec {
    fn seal(&self, msg: &Message) -> Vec<u8> {
        let payload = bincode::serialize(msg).unwrap_or_default();
        self.seal_bytes(&payload)
    }

    fn open(&self, datagram: &[u8]) -> Result<Message, String> {
        let payload = self.open_bytes(datagram).map_err(|r| r.as_str().to_string())?;
        bincode::deserialize(&payload).map_err(|_| {
            self.rejected[7].fetch_add(1, Ordering::Relaxed);
            Reject::Undecodable.as_str().to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ridondato_core::NodeId;

    fn pair() -> (AuthCodec, AuthCodec) {
        let k = Key::from_secret(b"0123456789abcdef-cluster").expect("key");
        (AuthCodec::new(k.clone(), 1, 2, 1000), AuthCodec::new(k, 2, 1, 5000))
    }

    fn msg() -> Message {
        Message::SwitchoverRequest { from: NodeId(1), epoch: 7 }
    }

    #[test]
    fn a_sealed_message_opens_once() {
        let (a, b) = pair();
        let f = a.seal(&msg());
        assert_eq!(b.open(&f), Ok(msg()));
        assert_eq!(b.open(&f).expect_err("an error"), "replayed or reordered");
        assert_eq!(b.rejected(Reject::Replayed), 1);
    }

    #[test]
    fn a_forged_frame_is_refused() {
        let (a, b) = pair();
        let other = AuthCodec::new(Key::from_secret(b"another secret of 16+ bytes").expect("key"), 1, 2, 9000);
        assert_eq!(b.open(&other.seal(&msg())).expect_err("an error"), "bad authentication tag");
        let mut f = a.seal(&msg());
        f[14] ^= 1;
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
        fn any_flipped_bit_is_refused(bit in 0usize..(8 * 80)) {
            let (a, b) = pair();
            let mut f = a.seal(&msg());
            let i = (bit / 8) % f.len();
            f[i] ^= 1 << (bit % 8);
            prop_assert!(b.open(&f).is_err());
        }
    }
}
