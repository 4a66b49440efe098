//! What the running gateway and the operator commands open before any access record is
//! written: the store, the key-encryption key, the checkpoint signer, the start-up check
//! of that key against the store, and the group-commit writer (LOG-ACC-1, DATA-ENC-1).

use super::chain::CheckpointSigner;
use super::crypto::{CryptoError, KeyEncryptionKey, LocalKek};
use super::keys::IndexKey;
use super::writer::{AuditHandle, AuditWriter, DurabilityMode, WriterConfig};
use super::AuditError;
use crate::config::{AuditMode, Config};
use crate::residency::storage_check::StorageCheckError;
use crate::store::{Store, StoreError, StoreOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store, a key or the writer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditStartError {
    /// The residency check for the store's connections could not be built.
    #[error(transparent)]
    StoreResidency(#[from] StorageCheckError),
    /// The store URL is unusable.
    #[error("store {url}: {source}")]
    Store {
        /// The store URL, password redacted.
        url: String,
        /// Why it cannot be used.
        #[source]
        source: StoreError,
    },
    /// The key-encryption key named by `audit.kek_env` could not be read.
    #[error("audit.kek_env {var}: {source}")]
    KekEnv {
        /// The environment variable.
        var: String,
        /// Why its value is not a key.
        #[source]
        source: CryptoError,
    },
    /// The key-encryption key file could not be read or created.
    #[error(transparent)]
    KekFile(CryptoError),
    /// No key-encryption key exists and none may be created here.
    #[error("{}: no audit key-encryption key", file.display())]
    NoKek {
        /// `audit.kek_file`.
        file: PathBuf,
    },
    /// The checkpoint signing key could not be loaded or created.
    #[error("{}: {source}", file.display())]
    Signer {
        /// `audit.signing_key_file`.
        file: PathBuf,
        /// Why.
        #[source]
        source: CryptoError,
    },
    /// The store's keys are wrapped by another key-encryption key
    /// ([`AuditError::ForeignKek`]).
    #[error(transparent)]
    ForeignKek(AuditError),
    /// The writer could not start (its spool, typically).
    #[error(transparent)]
    Writer(AuditError),
}

/// Opens the store (lazily: the writer spools while it is down).
pub fn open_store(config: &Config) -> Result<Store, AuditStartError> {
    open_store_with(config, StoreOptions::default())
}

fn open_store_with(config: &Config, mut options: StoreOptions) -> Result<Store, AuditStartError> {
    // Every new PostgreSQL connection is checked against the residency policy too.
    options.server_address_check = crate::residency::storage_check::store_address_check(config)?;
    let url = config
        .store
        .url
        .as_deref()
        .unwrap_or("sqlite://phr-gateway.db?mode=rwc");
    Store::connect_lazy(url, options).map_err(|source| AuditStartError::Store {
        url: crate::util::redact::redact_url(url),
        source,
    })
}

/// The key-encryption key: from the environment, the key file, or a new key file.
pub fn load_kek(config: &Config, create: bool) -> Result<Arc<dyn KeyEncryptionKey>, AuditStartError> {
    let a = &config.audit;
    let kek = match &a.kek_env {
        Some(var) => LocalKek::from_env(var).map_err(|source| AuditStartError::KekEnv {
            var: var.clone(),
            source,
        })?,
        None if a.kek_file.exists() => LocalKek::from_file(&a.kek_file).map_err(AuditStartError::KekFile)?,
        None if create => {
            tracing::warn!(file = %a.kek_file.display(), "no audit key-encryption key: created a new one; back it up, records cannot be read without it");
            LocalKek::generate_file(&a.kek_file).map_err(AuditStartError::KekFile)?
        }
        None => {
            return Err(AuditStartError::NoKek {
                file: a.kek_file.clone(),
            })
        }
    };
    Ok(Arc::new(kek))
}

/// The checkpoint signing key (`audit.signing_key_file`), created when missing.
pub fn load_signer(config: &Config) -> Result<Arc<CheckpointSigner>, AuditStartError> {
    CheckpointSigner::load_or_generate(&config.audit.signing_key_file)
        .map(Arc::new)
        .map_err(|source| AuditStartError::Signer {
            file: config.audit.signing_key_file.clone(),
            source,
        })
}

/// Start-up check (DATA-ENC-1, and "a bad config never starts a
/// half-working gateway"): when the store already holds the index secret,
/// this gateway's key-encryption key must unwrap it. A gateway with another
/// instance's KEK, or a replaced KEK file, would otherwise serve while every
/// commit failed and every record went to the spool, never to the store.
/// A store that cannot be reached now is not an error here: records are
/// spooled until it returns, as the writer documents.
pub async fn check_kek(config: &Config, store: &Store) -> Result<(), AuditStartError> {
    if !config.audit.enabled {
        return Ok(());
    }
    let kek = load_kek(config, true)?;
    match IndexKey::check_kek(store, kek.as_ref()).await {
        Ok(_) => Ok(()),
        Err(e @ AuditError::ForeignKek { .. }) => Err(AuditStartError::ForeignKek(e)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the audit key-encryption key against the store now; records are spooled until the store is reachable");
            Ok(())
        }
    }
}

/// Starts the writer; `None` when `audit.enabled = false`.
pub fn start_writer(config: &Config) -> Result<Option<AuditHandle>, AuditStartError> {
    if !config.audit.enabled {
        tracing::warn!("access records are DISABLED (audit.enabled = false); never run medical traffic like this");
        return Ok(None);
    }
    let kek = load_kek(config, true)?;
    let signer = load_signer(config)?;
    let mut wc = WriterConfig::new(config.gateway.instance_id.clone(), config.audit.spool_file.clone());
    wc.checkpoint_every = config.audit.checkpoint_every;
    wc.checkpoint_interval = config.audit.checkpoint_interval;
    wc.checkpoint_file = config.audit.checkpoint_file.clone();
    wc.mode = match config.audit.mode {
        AuditMode::Durable => DurabilityMode::Durable,
        AuditMode::Relaxed => DurabilityMode::Relaxed,
    };
    // The writer gets a connection of its own (same database as the shared
    // store): a pool would hand each commit a different connection, and SQLite
    // then re-reads the pages another connection's commit made stale.
    let writer_store = open_store_with(
        config,
        StoreOptions {
            max_connections: 1,
            ..StoreOptions::default()
        },
    )?;
    let (handle, _task) = AuditWriter::start(writer_store, kek, signer, wc).map_err(AuditStartError::Writer)?;
    Ok(Some(handle))
}
