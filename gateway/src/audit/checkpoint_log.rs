//! External publication of signed checkpoints (LOG-PROT-1, DATA-INT-1).
//!
//! Checkpoints in the database vouch for the chain only as long as nobody
//! who can delete records can also delete checkpoints. Someone with write
//! access to the database can do both: drop the last checkpoints and the
//! records they covered, and the shorter chain still verifies. With
//! `audit.checkpoint_file` every checkpoint the gateway signs is also
//! appended here, one JSON line each, fsync'd, to a file that should live
//! where the database administrator cannot write (another volume, a WORM
//! bucket mount, a log shipper's input). `audit verify` then requires every
//! published checkpoint to match the database's chain, so a chain that ends
//! before the last published checkpoint is reported as a cut tail.
//!
//! The file is append-only by use: lines are never rewritten. A line is
//! self-contained and signed, so copying it elsewhere (or a shipper reading
//! it) needs no other state.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::super::store::CheckpointRow;
use super::AuditError;

/// The checkpoint file at one path.
#[derive(Debug, Clone)]
pub struct CheckpointLog {
    path: PathBuf,
}

impl CheckpointLog {
    /// The file at `path` (not opened yet).
    pub fn new(path: PathBuf) -> CheckpointLog {
        CheckpointLog { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, detail: impl Into<String>) -> AuditError {
        AuditError::CheckpointFile {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn open_append(&self) -> Result<std::fs::File, AuditError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                self.err(format!(
                    "cannot open for appending: {e}. Fix: create its directory and let the gateway's user \
                     write to it, or remove audit.checkpoint_file"
                ))
            })
    }

    /// Creates the file if needed and checks that it can be appended to.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        let f = self.open_append()?;
        // A new file's directory entry must survive a crash too.
        f.sync_all().map_err(|e| self.err(format!("cannot fsync: {e}")))
    }

    /// Appends `checkpoints`, one line each, and fsyncs. Blocking.
    pub fn append(&self, checkpoints: &[CheckpointRow]) -> Result<(), AuditError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for c in checkpoints {
            text.push_str(&line(c).to_string());
            text.push('\n');
        }
        let mut f = self.open_append()?;
        f.write_all(text.as_bytes())
            .map_err(|e| self.err(format!("cannot append: {e}")))?;
        f.sync_data().map_err(|e| self.err(format!("cannot fsync: {e}")))
    }

    /// Every published checkpoint, in file order. A missing file or a line
    /// that is not a checkpoint is an error: what was published must be read
    /// back whole, or the check it enables is silently weaker.
    pub fn read(&self) -> Result<Vec<CheckpointRow>, AuditError> {
        let f = std::fs::File::open(&self.path).map_err(|e| {
            self.err(format!(
                "cannot read it: {e}. The gateway creates it at start when audit.checkpoint_file is set; \
                 if it was deleted, the checkpoints it held are lost (restore it from a backup)"
            ))
        })?;
        let mut out = Vec::new();
        for (i, l) in std::io::BufReader::new(f).lines().enumerate() {
            let l = l.map_err(|e| self.err(format!("cannot read line {}: {e}", i + 1)))?;
            if l.trim().is_empty() {
                continue;
            }
            let c = parse(&l).map_err(|why| {
                self.err(format!(
                    "line {} is not a checkpoint ({why}); the file was edited or an append was cut short. \
                     Fix: compare it with its backup; a cut-short last line can be removed by hand",
                    i + 1
                ))
            })?;
            out.push(c);
        }
        Ok(out)
    }
}

/// One checkpoint as a JSON object (binary fields as hex).
pub fn line(c: &CheckpointRow) -> Value {
    json!({
        "checkpoint_id": c.checkpoint_id,
        "instance": c.instance,
        "seq": c.seq,
        "hash": hex::encode(&c.hash),
        "created_ms": c.created_ms,
        "kind": c.kind,
        "detail": c.detail,
        "public_key_id": c.public_key_id,
        "signature": hex::encode(&c.signature),
    })
}

/// Why a line of the checkpoint file is not a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A string member is missing.
    #[error("no string {0:?}")]
    NoString(&'static str),
    /// An integer member is missing.
    #[error("no integer {0:?}")]
    NoInteger(&'static str),
    /// A hash or signature member is not hex.
    #[error("{0:?} is not hex")]
    NotHex(&'static str),
}

/// Parses one line written by [`line()`].
pub fn parse(text: &str) -> Result<CheckpointRow, LineError> {
    let v: Value = serde_json::from_str(text).map_err(LineError::NotJson)?;
    let s = |k: &'static str| v[k].as_str().map(str::to_string).ok_or(LineError::NoString(k));
    let n = |k: &'static str| v[k].as_i64().ok_or(LineError::NoInteger(k));
    let h = |k: &'static str| hex::decode(s(k)?).map_err(|_| LineError::NotHex(k));
    Ok(CheckpointRow {
        checkpoint_id: s("checkpoint_id")?,
        instance: s("instance")?,
        seq: n("seq")?,
        hash: h("hash")?,
        created_ms: n("created_ms")?,
        kind: s("kind")?,
        detail: s("detail")?,
        public_key_id: s("public_key_id")?,
        signature: h("signature")?,
    })
}
