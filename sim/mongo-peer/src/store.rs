//! Persistence in `--dbpath`: one append-only log of BSON records, replayed at start.
//!
//! Each record is `[len u32][crc32 u32][bson]`. A power cut can leave a torn last record; at
//! load it fails its length or checksum and is cut off, because everything before it was
//! written (and fsync'd, for acknowledged writes) in order. Documents are not stored apart from
//! the oplog: replaying the `op` records rebuilds them, as replaying the oplog would in mongod.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bson::Document;

const LOG: &str = "ridondato-peer.log";

#[derive(Debug)]
pub struct Store {
    file: Option<File>,
    len: u64,
    /// Bytes known to be on disk; `power_cut` keeps only these.
    synced: u64,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

impl Store {
    /// Opens (creating) the log and returns the intact records in order.
    pub fn open(dir: &Path) -> io::Result<(Store, Vec<Document>)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos + 8 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
            let crc = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
            let Some(body) = bytes.get(pos + 8..pos + 8 + len) else { break };
            if crc32(body) != crc {
                break;
            }
            match Document::from_reader(body) {
                Ok(d) => records.push(d),
                Err(_) => break,
            }
            pos += 8 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(path = %path.display(), kept = pos, dropped = bytes.len() - pos,
                "dropping a torn record at the end of the log");
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        let len = pos as u64;
        Ok((Store { file: Some(file), len, synced: len }, records))
    }

    pub fn append(&mut self, records: &[Document], sync: bool) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("store is closed"))?;
        let mut buf = Vec::new();
        for r in records {
            let mut body = Vec::new();
            r.to_writer(&mut body).map_err(io::Error::other)?;
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32(&body).to_le_bytes());
            buf.extend_from_slice(&body);
        }
        file.write_all(&buf)?;
        self.len += buf.len() as u64;
        if sync {
            file.sync_data()?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// A clean stop: everything written reaches the disk.
    pub fn close(&mut self) {
        if let Some(f) = self.file.take() {
            if let Err(e) = f.sync_all() {
                tracing::warn!(error = %e, "fsync at close failed");
            }
        }
    }

    /// A power cut: what was written but not fsync'd is lost, as the page cache would be.
    pub fn power_cut(&mut self) {
        if let Some(f) = self.file.take() {
            if self.len > self.synced {
                let _ = f.set_len(self.synced);
            }
        }
    }
}

/// Writes rolled-back documents where mongod puts them:
/// `DIR/rollback/<db>.<coll>/removed.<timestamp>.bson`, concatenated BSON documents.
pub fn write_rollback_file(dbpath: &Path, ns: &str, docs: &[Document]) -> io::Result<PathBuf> {
    let dir = dbpath.join("rollback").join(ns);
    fs::create_dir_all(&dir)?;
    let stamp = bson::DateTime::now().try_to_rfc3339_string().unwrap_or_else(|_| "unknown".into()).replace(':', "-").trim_end_matches('Z').to_string();
    let mut path = dir.join(format!("removed.{stamp}.bson"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("removed.{stamp}.{n}.bson"));
        n += 1;
    }
    let mut f = File::create(&path)?;
    for d in docs {
        d.to_writer(&mut f).map_err(io::Error::other)?;
    }
    f.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn torn_tail_is_dropped() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("mp-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let (mut s, recs) = Store::open(&dir)?;
            assert!(recs.is_empty());
            s.append(&[doc! {"k": "a"}, doc! {"k": "b"}], true)?;
        }
        let mut f = OpenOptions::new().append(true).open(dir.join(LOG))?;
        f.write_all(&[40, 0, 0, 0, 1, 2, 3])?;
        let (_, recs) = Store::open(&dir)?;
        assert_eq!(recs.len(), 2);
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}
