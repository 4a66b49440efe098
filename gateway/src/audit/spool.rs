//! Local spool for access records while the database is unreachable
//! (LOG-ACC-1, LOG-PROT-1, DATA-ENC-1).
//!
//! The gateway must not serve a request it cannot record, yet a database
//! outage should not take the medical APIs down. So when a commit fails the
//! writer appends the batch here and fsyncs before acknowledging: an
//! acknowledged record is either committed or on disk, also across `kill -9`.
//! The spool is encrypted like the database (same data key, associated data
//! without a sequence number), so it leaves no readable PHI on the host
//! (DATA-RES-1). Records get their sequence numbers and chain hashes when
//! replayed, in spool order, so the chain has no holes.
//!
//! Format: frames of `len: u32 BE ‖ SHA-256(payload)[..4] ‖ payload (JSON)`.
//! A frame cut short by a crash was never acknowledged and is dropped; a
//! frame with a wrong checksum is an error (the spool is kept for an operator).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuditError;

/// Bytes as base64 inside the JSON frame.
mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        B64.decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One spooled item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum SpoolEntry {
    /// A data key, wrapped by the KEK, needed to read the records after it.
    Key {
        /// Data key id.
        key_id: String,
        /// KEK that wrapped it.
        kek_id: String,
        /// Wrapped key bytes.
        #[serde(with = "b64")]
        wrapped: Vec<u8>,
    },
    /// An encrypted access record awaiting its sequence number.
    Record {
        /// Record id (also bound into the ciphertext).
        record_id: String,
        /// Data key that sealed it.
        key_id: String,
        /// AES-GCM nonce.
        #[serde(with = "b64")]
        nonce: Vec<u8>,
        /// Sealed record JSON.
        #[serde(with = "b64")]
        ciphertext: Vec<u8>,
    },
}

/// Test hook: appends to these paths fail with ENOSPC (disk full), so the
/// "neither database nor spool" path can be tested without filling a disk.
#[cfg(test)]
pub(crate) static FAIL_APPENDS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The spool file. Not shared between processes: one per instance.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    records: u64,
    keys: HashSet<String>,
}

impl Spool {
    /// Opens (creating with mode 0600) the spool at `path`, dropping a torn
    /// final frame left by a crash.
    pub fn open(path: &Path) -> Result<Spool, AuditError> {
        let io = |source| AuditError::Spool {
            path: path.to_path_buf(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let mut spool = Spool {
            path: path.to_path_buf(),
            file,
            records: 0,
            keys: HashSet::new(),
        };
        let (entries, good_len) = spool.read_frames()?;
        if spool.file.metadata().map_err(io)?.len() > good_len {
            tracing::warn!(path = %path.display(), "dropping torn final frame of the audit spool");
            spool.file.set_len(good_len).map_err(io)?;
            spool.file.sync_all().map_err(io)?;
        }
        for e in &entries {
            match e {
                SpoolEntry::Record { .. } => spool.records += 1,
                SpoolEntry::Key { key_id, .. } => {
                    spool.keys.insert(key_id.clone());
                }
            }
        }
        Ok(spool)
    }

    /// Path of the spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when nothing waits for replay.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Whether a key frame for `key_id` is already in the spool.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keys.contains(key_id)
    }

    fn read_frames(&mut self) -> Result<(Vec<SpoolEntry>, u64), AuditError> {
        let path = self.path.clone();
        let io = |source| AuditError::Spool {
            path: path.clone(),
            source,
        };
        let mut buf = Vec::new();
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.read_to_end(&mut buf).map_err(io)?;
        let mut entries = Vec::new();
        let mut at = 0usize;
        while buf.len() - at >= 8 {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if buf.len() - at - 8 < len {
                break; // torn tail: never acknowledged
            }
            let payload = &buf[at + 8..at + 8 + len];
            if Sha256::digest(payload)[..4] != buf[at + 4..at + 8] {
                return Err(AuditError::SpoolCorrupt {
                    path: self.path.clone(),
                    offset: at as u64,
                    detail: "checksum mismatch".into(),
                });
            }
            entries.push(serde_json::from_slice(payload).map_err(|e| AuditError::SpoolCorrupt {
                path: self.path.clone(),
                offset: at as u64,
                detail: e.to_string(),
            })?);
            at += 8 + len;
        }
        Ok((entries, at as u64))
    }

    /// Everything in the spool, in the order it was written.
    pub fn read_all(&mut self) -> Result<Vec<SpoolEntry>, AuditError> {
        Ok(self.read_frames()?.0)
    }

    /// Appends entries and fsyncs; only after `Ok` may the records be acknowledged.
    pub fn append(&mut self, entries: &[SpoolEntry]) -> Result<(), AuditError> {
        let mut buf = Vec::new();
        for e in entries {
            let payload = serde_json::to_vec(e)?;
            buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            buf.extend_from_slice(&Sha256::digest(&payload)[..4]);
            buf.extend_from_slice(&payload);
        }
        let io = |source| AuditError::Spool {
            path: self.path.clone(),
            source,
        };
        #[cfg(test)]
        if FAIL_APPENDS.lock().unwrap().contains(&self.path) {
            return Err(io(std::io::Error::from_raw_os_error(28)));
        }
        self.file.seek(SeekFrom::End(0)).map_err(io)?;
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        for e in entries {
            match e {
                SpoolEntry::Record { .. } => self.records += 1,
                SpoolEntry::Key { key_id, .. } => {
                    self.keys.insert(key_id.clone());
                }
            }
        }
        Ok(())
    }

    /// Empties the spool after a complete replay.
    pub fn clear(&mut self) -> Result<(), AuditError> {
        let io = |source| AuditError::Spool {
            path: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        self.records = 0;
        self.keys.clear();
        Ok(())
    }
}
