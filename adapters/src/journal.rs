//! The input journal (B9): every input the driver hands the core, with its `now` and a digest of
//! the actions the core answered, so that `ridondato replay` can run a core again from it and
//! check that it decides the same, and turn an incident into a simulator scenario.
//!
//! Files live in `<state_dir>/journal/`, one run of the daemon after another, each run split in
//! segments named `<unix start>-<run>-<segment>.rdj` (names sort in time order). The oldest
//! segments are deleted once the directory holds more than the configured bound; a replay needs
//! its run's first segment (the core starts from `Input::Start`).
//!
//! ```text
//! segment: "RDJ3" | header record | record | record | ...
//! record:  length u32 LE | check u32 LE (SHA-256 of the payload, first 4 bytes) | payload
//! header payload:  postcard(Header)           record payload: postcard(Record)
//! ```
//! Each record goes to the file in one `write` on an append-only file: a daemon that dies loses
//! nothing it wrote; a power cut may leave the last record torn or zero-filled, which the length
//! and the check reveal. The reader stops there and says how many bytes it skipped: a torn tail
//! is never misread as a record.

use ridondato_core::{Action, Config, Input, Millis};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format's mark; its digit is the version. Records are postcard, which does not describe
/// itself: a change to the core's inputs, operations or configuration (format 2: the arbiters
/// behind one interface; 3: the ARP probe's length in the configuration) needs a new digit, or
/// an older journal would be misread instead of refused.
const MAGIC: &[u8; 4] = b"RDJ3";
/// A record longer than this is not one (a heartbeat input is about 100 bytes).
const MAX_RECORD: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub run: u64,
    pub segment: u32,
    /// Wall-clock seconds when the run started (for names and for people; the core never sees it).
    pub started_unix: u64,
    pub config: Config,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub now: Millis,
    pub input: Input,
    /// `digest(actions)` of what the core answered.
    pub digest: u64,
}

/// A digest of a list of actions: equal lists, equal digests.
pub fn digest(actions: &[Action]) -> u64 {
    let bytes = postcard::to_stdvec(actions).unwrap_or_default();
    let h = Sha256::digest(&bytes);
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn check(payload: &[u8]) -> u32 {
    let h = Sha256::digest(payload);
    u32::from_le_bytes([h[0], h[1], h[2], h[3]])
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&check(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Writes the journal of one run. Errors never reach the core: the first one is logged and the
/// journal stops (a full disk must not stop a failover).
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    header: Header,
    file: std::fs::File,
    written: u64,
    failed: bool,
}

impl JournalWriter {
    /// Opens the run's first segment. `max_bytes` bounds the whole directory (at least 1 MiB).
    pub fn open(dir: &Path, max_bytes: u64, run: u64, started_unix: u64, config: Config) -> std::io::Result<JournalWriter> {
        std::fs::create_dir_all(dir)?;
        let max_bytes = max_bytes.max(1 << 20);
        let header = Header { run, segment: 0, started_unix, config };
        let (file, written) = Self::create(dir, &header)?;
        let mut w = JournalWriter { dir: dir.to_path_buf(), max_bytes, segment_bytes: (max_bytes / 8).max(256 << 10), header, file, written, failed: false };
        w.prune();
        Ok(w)
    }

    fn name(h: &Header) -> String {
        format!("{:012}-{:016x}-{:05}.rdj", h.started_unix, h.run, h.segment)
    }

    fn create(dir: &Path, h: &Header) -> std::io::Result<(std::fs::File, u64)> {
        let mut f = std::fs::OpenOptions::new().create_new(true).append(true).open(dir.join(Self::name(h)))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend(frame(&postcard::to_stdvec(h).map_err(std::io::Error::other)?));
        f.write_all(&bytes)?;
        Ok((f, bytes.len() as u64))
    }

    /// Appends one input and the digest of the core's answer.
    pub fn record(&mut self, now: Millis, input: &Input, actions: &[Action]) {
        self.record_digest(now, input, digest(actions));
    }

    fn record_digest(&mut self, now: Millis, input: &Input, digest: u64) {
        if self.failed {
            return;
        }
        if let Err(e) = self.try_record(now, input, digest) {
            self.failed = true;
            tracing::error!("journal {}: {e}; no more inputs are journaled until the daemon restarts", self.dir.display());
        }
    }

    fn try_record(&mut self, now: Millis, input: &Input, digest: u64) -> std::io::Result<()> {
        if self.written >= self.segment_bytes {
            self.header.segment += 1;
            (self.file, self.written) = Self::create(&self.dir, &self.header)?;
            self.prune();
        }
        let rec = Record { now, input: input.clone(), digest };
        let bytes = frame(&postcard::to_stdvec(&rec).map_err(std::io::Error::other)?);
        self.file.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Deletes the oldest segments (never the one being written) while the directory is over
    /// its bound.
    fn prune(&mut self) {
        let current = Self::name(&self.header);
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(String, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name.ends_with(".rdj")).then(|| (name, e.metadata().map_or(0, |m| m.len())))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|(_, l)| l).sum();
        for (name, len) in files {
            if total <= self.max_bytes || name == current {
                break;
            }
            if std::fs::remove_file(self.dir.join(&name)).is_ok() {
                total -= len;
            }
        }
    }
}

/// The journal behind a thread of its own: the driver's loop never waits for the disk (a slow
/// or hung disk must not delay a failover). If the thread falls more than `QUEUE` records
/// behind, the journal ends there (logged): what it holds stays a replayable prefix.
#[derive(Debug)]
pub struct JournalHandle {
    tx: Option<std::sync::mpsc::SyncSender<Record>>,
}

const QUEUE: usize = 4096;

impl JournalHandle {
    pub fn spawn(mut w: JournalWriter) -> JournalHandle {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(QUEUE);
        let spawned = std::thread::Builder::new().name("journal".into()).spawn(move || {
            for r in rx {
                w.record_digest(r.now, &r.input, r.digest);
            }
        });
        JournalHandle { tx: spawned.ok().map(|_| tx) }
    }

    pub fn record(&mut self, now: Millis, input: &Input, actions: &[Action]) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Record { now, input: input.clone(), digest: digest(actions) }).is_err() {
            tracing::error!("the journal's disk is {QUEUE} records behind (or its thread ended): no more inputs are journaled until the daemon restarts");
            self.tx = None;
        }
    }
}

/// One segment as read back.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    pub header: Header,
    pub records: Vec<Record>,
    /// Bytes at the end that were not a whole, intact record (a torn write), and why.
    pub torn: Option<(u64, String)>,
}

/// Reads a segment. A torn or corrupt tail ends it (reported in `torn`); a file that is not a
/// journal segment, or whose header is damaged, is an error naming the file.
pub fn read_segment(path: &Path) -> Result<Segment, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() >= 4 && &bytes[..3] == b"RDJ" && bytes[3] != MAGIC[3] {
        let v = char::from(bytes[3]);
        return Err(format!(
            "{}: a journal of format {v}, written by another version of ridondato (this one reads format {}): replay it with that version",
            path.display(),
            char::from(MAGIC[3])
        ));
    }
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(format!("{}: not a ridondato journal segment (no RDJ{} mark)", path.display(), char::from(MAGIC[3])));
    }
    let mut at = 4;
    let header_payload = match next(&bytes, at) {
        Ok((p, end)) => {
            at = end;
            p
        }
        Err(why) => return Err(format!("{}: damaged header: {why}", path.display())),
    };
    let header: Header = postcard::from_bytes(header_payload).map_err(|e| format!("{}: undecodable header: {e}", path.display()))?;
    let mut records = Vec::new();
    let mut torn = None;
    while at < bytes.len() {
        let rec = next(&bytes, at).and_then(|(p, end)| postcard::from_bytes::<Record>(p).map(|r| (r, end)).map_err(|e| format!("undecodable record: {e}")));
        match rec {
            Ok((r, end)) => {
                records.push(r);
                at = end;
            }
            Err(why) => {
                torn = Some(((bytes.len() - at) as u64, format!("{why} at byte {at}")));
                break;
            }
        }
    }
    Ok(Segment { path: path.to_path_buf(), header, records, torn })
}

/// The payload of the record at `at`, and where the next one starts.
fn next(bytes: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let word = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let (Some(len), Some(sum)) = (word(at), word(at + 4)) else { return Err("a record cut short in its frame".into()) };
    let len = len as usize;
    if len == 0 || len > MAX_RECORD {
        return Err(format!("an impossible record length {len}"));
    }
    let payload = bytes.get(at + 8..at + 8 + len).ok_or_else(|| format!("a record of {len} bytes cut short"))?;
    if check(payload) != sum {
        return Err("a record whose check does not match".into());
    }
    Ok((payload, at + 8 + len))
}

/// The segments of a journal directory (or the files given), grouped by run in time order.
pub fn runs(paths: &[PathBuf]) -> Result<Vec<Vec<Segment>>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
            files.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|f| f.extension().is_some_and(|x| x == "rdj")));
        } else {
            files.push(p.clone());
        }
    }
    let mut segs = files.iter().map(|f| read_segment(f)).collect::<Result<Vec<_>, _>>()?;
    segs.sort_by_key(|s| (s.header.started_unix, s.header.run, s.header.segment));
    let mut out: Vec<Vec<Segment>> = Vec::new();
    for s in segs {
        match out.last_mut() {
            Some(run) if run[0].header.run == s.header.run => run.push(s),
            _ => out.push(vec![s]),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridondato_core::{Node, NodeId};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ridondato-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn cfg() -> Config {
        Config::lan(NodeId(1), NodeId(2))
    }

    /// Journals `n` ticks of a real core, as the driver does.
    fn write(d: &Path, max: u64, n: u64) -> Vec<Record> {
        let mut w = JournalWriter::open(d, max, 7, 1_700_000_000, cfg()).expect("open");
        let mut node = Node::new(cfg());
        let mut out = Vec::new();
        let first = Input::Start { persisted: None, run: 7 };
        for (i, input) in std::iter::once(first).chain((1..n).map(|_| Input::Tick)).enumerate() {
            let now = Millis(i as u64 * 100);
            let o = node.handle(now, input.clone());
            w.record(now, &input, &o.actions);
            out.push(Record { now, input, digest: digest(&o.actions) });
        }
        out
    }

    #[test]
    fn records_read_back_as_written_across_segments() {
        let d = dir("rw");
        let written = write(&d, 1 << 20, 20_000);
        let runs = runs(std::slice::from_ref(&d)).expect("read");
        assert_eq!(runs.len(), 1);
        assert!(runs[0].len() > 1, "rotated into segments: {}", runs[0].len());
        let read: Vec<Record> = runs[0].iter().flat_map(|s| s.records.clone()).collect();
        assert_eq!(read, written);
        assert!(runs[0].iter().all(|s| s.torn.is_none() && s.header.config == cfg()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_directory_stays_within_its_bound() {
        let d = dir("bound");
        let _ = write(&d, 1 << 20, 200_000);
        let total: u64 = std::fs::read_dir(&d).expect("dir").filter_map(Result::ok).map(|e| e.metadata().map_or(0, |m| m.len())).sum();
        assert!(total <= (1 << 20) + (256 << 10) + 4096, "{total} bytes");
        let runs = runs(std::slice::from_ref(&d)).expect("read");
        assert!(runs[0][0].header.segment > 0, "the oldest segments went");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_or_zero_filled_tail_is_skipped_and_said_never_misread() {
        let d = dir("torn");
        let written = write(&d, 64 << 20, 50);
        let seg = std::fs::read_dir(&d).expect("dir").filter_map(Result::ok).map(|e| e.path()).next().expect("a segment");
        let full = std::fs::read(&seg).expect("read");
        // Cut the last record anywhere in it: every cut is seen, none yields a wrong record.
        let last = frame(&postcard::to_stdvec(written.last().expect("last")).expect("enc")).len();
        for cut in 1..last {
            std::fs::write(&seg, &full[..full.len() - cut]).expect("write");
            let s = read_segment(&seg).expect("readable");
            assert_eq!(s.records, written[..written.len() - 1], "cut {cut}");
            assert_eq!(s.torn.as_ref().map(|t| t.0), Some((last - cut) as u64), "cut {cut}");
        }
        // A power cut that left zeros after the last good record.
        let mut zeros = full.clone();
        zeros.extend([0u8; 300]);
        std::fs::write(&seg, &zeros).expect("write");
        let s = read_segment(&seg).expect("readable");
        assert_eq!(s.records, written);
        assert!(s.torn.as_ref().is_some_and(|(n, why)| *n == 300 && why.contains("impossible record length 0")), "{:?}", s.torn);
        // A flipped byte inside a record: the check catches it.
        let mut flipped = full.clone();
        let at = full.len() - 3;
        flipped[at] ^= 0x40;
        std::fs::write(&seg, &flipped).expect("write");
        let s = read_segment(&seg).expect("readable");
        assert_eq!(s.records, written[..written.len() - 1]);
        assert!(s.torn.is_some_and(|(_, why)| why.contains("check does not match")));
        std::fs::write(&seg, b"not a journal").expect("write");
        assert!(read_segment(&seg).expect_err("refused").contains("not a ridondato journal segment"));
        std::fs::write(&seg, b"RDJ1older records").expect("write");
        assert!(read_segment(&seg).expect_err("refused").contains("a journal of format 1, written by another version"));
        std::fs::write(&seg, b"RDJ2older records").expect("write");
        assert!(read_segment(&seg).expect_err("refused").contains("a journal of format 2, written by another version"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
