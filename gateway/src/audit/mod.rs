//! Access records: what is recorded, how it is protected, and how it is
//! reviewed, exported and eventually destroyed.
//!
//! Requirements (shared/guidelines/requirements.md, and the 技術的安全管理対策
//! items アクセス記録の取得 / データの暗号化 and 情報の破棄 of the MHLW/METI
//! guideline seed in shared/seed/):
//!
//! | file | serves |
//! | --- | --- |
//! | [`record`] | LOG-ACC-1, LOG-ACC-2 (アクセス記録の取得), DATA-INT-1, DATA-RES-1 |
//! | [`record_codec`] | LOG-ACC-1, LOG-PROT-1, DATA-ENC-1 (the sealed bytes of a record, versioned) |
//! | [`time`] | LOG-TIME-1 |
//! | [`crypto`], [`keys`] | DATA-ENC-1, DATA-ENC-2 (データの暗号化), INC-APPI-1, 情報の破棄 |
//! | [`chain`], [`verify`], [`checkpoint_log`] | LOG-PROT-1, DATA-INT-1 |
//! | [`writer`], [`group_commit`], [`spool`], [`replay`] | LOG-ACC-1 (no unrecorded request), LOG-PROT-1 |
//! | [`export`], [`fhir`] | LOG-ACC-1, INC-MHLW-1, INC-APPI-1 (evidence for authorities) |
//! | [`report`] | LOG-ACC-1 (periodic review), ACL-ACCT-1 |
//! | [`purge`] | LOG-RET-1, 情報の破棄 |
//! | [`startup`], [`request_record`] | LOG-ACC-1 (the store, keys and writer of a running gateway; one record per request) |
//! | [`store_sync`] | ACL-ACCT-1 (revocations and blocks reach every instance) |
//!
//! The module uses the database layer only through `super::super::store`,
//! so it can live beside `store/` under any crate root.

pub mod chain;
pub mod checkpoint_log;
pub mod crypto;
pub mod export;
pub mod fhir;
pub mod group_commit;
pub mod keys;
pub mod purge;
pub mod record;
pub mod record_codec;
pub mod replay;
pub mod report;
pub mod request_record;
pub mod spool;
pub mod startup;
pub mod store_sync;
pub mod time;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use super::store::StoreError;
use crypto::CryptoError;

/// Why an audit operation failed. On the request path any error from
/// [`writer::AuditHandle::record`] means "not recorded": refuse with 503.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be loaded, or sealing/opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The spool file could not be read or written.
    #[error("audit spool {path}: {source}")]
    Spool {
        /// Spool file.
        path: PathBuf,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The spool holds a damaged frame; it is kept for an operator to inspect.
    #[error("audit spool {path} is damaged at byte {offset}: {detail}")]
    SpoolCorrupt {
        /// Spool file.
        path: PathBuf,
        /// Offset of the bad frame.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Neither the database nor the spool took the record.
    #[error("access record not stored: database: {db}; spool: {spool}")]
    Unrecorded {
        /// Database (or earlier) failure.
        db: String,
        /// Spool failure.
        spool: String,
    },
    /// The writer task has stopped; nothing can be recorded.
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// A key the operation needs does not exist.
    #[error("audit key {0} does not exist")]
    MissingKey(String),
    /// During rotation, a key is wrapped by a KEK that is neither old nor new.
    #[error("audit key {key_id} is wrapped by KEK {kek_id}, which is neither the old nor the new KEK")]
    UnknownKek {
        /// The key.
        key_id: String,
        /// Its KEK.
        kek_id: String,
    },
    /// The store's keys were wrapped by a key-encryption key this gateway
    /// does not have: another instance sharing the store created them with
    /// its own KEK, or the KEK file was replaced. Nothing it writes could be
    /// committed, so the gateway refuses to start rather than spool forever.
    #[error(
        "audit key {key_id} in the store is wrapped by key-encryption key {stored_kek}, but this gateway's \
         key-encryption key is {our_kek} and cannot unwrap it. Fix: every gateway sharing a store must use the \
         same key-encryption key: copy audit.kek_file from the instance that created the store (mode 0600), \
         or set audit.kek_env to the same value; after `phr-gateway keys rotate` use the new one"
    )]
    ForeignKek {
        /// The key that could not be unwrapped.
        key_id: String,
        /// The KEK id stored with it.
        stored_kek: String,
        /// This gateway's KEK id.
        our_kek: String,
    },
    /// Only data keys can be destroyed (the index key cannot).
    #[error("{0} is not a data key; only data keys can be destroyed")]
    NotADataKey(String),
    /// A record could not be (de)serialised.
    #[error("access record JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Decrypted bytes are not an access record of a known format.
    #[error(transparent)]
    Decode(#[from] record_codec::DecodeError),
    /// Writing an export or report failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    /// The external checkpoint file could not be written or read.
    #[error("audit checkpoint file {path}: {detail}")]
    CheckpointFile {
        /// The file (`audit.checkpoint_file`).
        path: PathBuf,
        /// What went wrong, and how to fix it.
        detail: String,
    },
    /// A setting is out of range.
    #[error("invalid audit configuration: {0}")]
    Config(String),
}
