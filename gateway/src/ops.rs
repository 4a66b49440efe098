//! Operator commands that work on the store: token revocation (ACL-ACCT-1), the subject
//! block list, the access records (verify, export, review report, purge: LOG-ACC-1,
//! LOG-PROT-1, LOG-RET-1) and the record keys (rotation, crypto-shredding: DATA-ENC-2,
//! 情報の破棄). Each reads the same config file as `run`, so it talks to the same store
//! with the same keys.

use crate::audit::crypto::CryptoError;
use crate::audit::export::{export_with, ExportFormat, ExportQuery};
use crate::audit::startup::{load_kek, load_signer, open_store, AuditStartError};
use crate::audit::time::parse_rfc3339;
use crate::audit::AuditError;
use crate::config::{Config, LoadError};
use crate::store::StoreError;
use std::path::Path;

/// Why an operator command failed. Printed as is, then the command exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The configuration does not load.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The store or a record key could not be opened.
    #[error(transparent)]
    Open(#[from] AuditStartError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An access-record operation failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The new key-encryption key file could not be created.
    #[error(transparent)]
    NewKek(#[from] CryptoError),
    /// `tokens revoke` needs exactly one of `--jti` and `--subject`.
    #[error("give exactly one of --jti and --subject")]
    RevokeWhat,
    /// `subjects unblock` named a subject that was not blocked.
    #[error("{0} was not blocked")]
    NotBlocked(String),
    /// `audit verify` found a broken chain or checkpoint; the verification report.
    #[error("{0}")]
    NotIntact(String),
    /// A `--from`/`--to` value is not an RFC 3339 time.
    #[error("{0:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z")]
    BadTime(String),
    /// The export contains damaged records (DATA-INT-1).
    #[error(
        "{summary}. {damaged} records are DAMAGED: their ciphertext does not open with a key that exists, or their \
         data key is gone without a signed destruction record (the lines with \"reason\": \"damaged\" \
         name them). Run `phr-gateway audit verify` to locate the alteration, and restore those rows \
         from a backup"
    )]
    DamagedExport {
        /// The export's summary line.
        summary: String,
        /// How many records are damaged.
        damaged: u64,
    },
    /// The operation is done but its checkpoint could not be appended to
    /// `audit.checkpoint_file` (LOG-PROT-1).
    #[error(
        "{done}, but its signed checkpoint was not published: {source}. The database holds it; fix the file \
         and the gateway's next checkpoint vouches for the chain"
    )]
    NotPublished {
        /// What already happened.
        done: String,
        /// Why the file was not written.
        #[source]
        source: AuditError,
    },
    /// `keys destroy` named no existing data key.
    #[error("no data key {0}")]
    NoDataKey(String),
}

fn config(path: &Path) -> Result<Config, OpsError> {
    Ok(crate::config::load(path)?)
}

/// Revokes one token (`jti`) or every token of a subject issued before now.
pub async fn revoke(path: &Path, issuer: &str, jti: Option<&str>, subject: Option<&str>) -> Result<String, OpsError> {
    let store = open_store(&config(path)?)?;
    match (jti, subject) {
        (Some(jti), None) => {
            store.revoke_jti(issuer, jti).await?;
            Ok(format!(
                "revoked token {jti} of {issuer}; every instance refuses it within 2 s"
            ))
        }
        (None, Some(sub)) => {
            store
                .revoke_subject(issuer, sub, crate::util::clock::unix_now())
                .await?;
            Ok(format!(
                "revoked every token of subject {sub} ({issuer}) issued before now"
            ))
        }
        _ => Err(OpsError::RevokeWhat),
    }
}

/// Blocks `subject` on every instance sharing the store, with `note` as the reason shown
/// to operators, until someone unblocks it (EX-IDS-1 response).
pub async fn block(path: &Path, subject: &str, note: &str) -> Result<String, OpsError> {
    let store = open_store(&config(path)?)?;
    store.block_subject(subject, note).await?;
    Ok(format!("blocked {subject}"))
}

/// Lifts a block, typically after the bulk-access review (LOG-ACC-1); an error if the
/// subject was not blocked.
pub async fn unblock(path: &Path, subject: &str) -> Result<String, OpsError> {
    let store = open_store(&config(path)?)?;
    match store.unblock_subject(subject).await? {
        true => Ok(format!(
            "unblocked {subject}; every instance lets it through within 2 s"
        )),
        false => Err(OpsError::NotBlocked(subject.to_string())),
    }
}

/// The blocked subjects, one tab-separated line each: subject, when, reason.
pub async fn list_blocked(path: &Path) -> Result<String, OpsError> {
    let store = open_store(&config(path)?)?;
    let list = store.list_blocked().await?;
    Ok(list
        .iter()
        .map(|b| format!("{}\t{}\t{}\n", b.subject, b.created_at, b.reason))
        .collect())
}

/// Checks every chain and signed checkpoint; `Err` names the first bad record.
pub async fn verify(path: &Path) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let signer = load_signer(&cfg)?;
    let a = &cfg.audit;
    // LOG-PROT-1: a tail a running gateway would already have checkpointed fails.
    let interval_ms = i64::try_from(a.checkpoint_interval.as_millis()).unwrap_or(i64::MAX / 4);
    let grace_ms = i64::try_from(a.checkpoint_grace.as_millis()).unwrap_or(i64::MAX / 4);
    let options = crate::audit::verify::VerifyOptions {
        tail_bound: Some(crate::audit::verify::TailBound {
            max_records: a.checkpoint_every,
            max_age_ms: interval_ms.saturating_mul(2).saturating_add(grace_ms),
            now_ms: crate::audit::time::now_ms(),
        }),
        published: match &a.checkpoint_file {
            Some(file) => {
                let log = crate::audit::checkpoint_log::CheckpointLog::new(file.clone());
                Some((file.display().to_string(), log.read()?))
            }
            None => None,
        },
    };
    let report = crate::audit::verify::verify_with(&store, &[signer.verifying_key()], &options).await?;
    match report.is_intact() {
        true => Ok(report.to_string()),
        false => Err(OpsError::NotIntact(report.to_string())),
    }
}

/// "Until now" with room for clock skew, without overflowing time arithmetic.
fn far_future() -> i64 {
    crate::audit::time::now_ms() + 86_400_000
}

fn time_ms(value: Option<&str>, default: i64) -> Result<i64, OpsError> {
    match value {
        None => Ok(default),
        Some(v) => parse_rfc3339(v).map_err(|_| OpsError::BadTime(v.to_string())),
    }
}

/// Decrypts records of a time range (optionally one patient or subject) to `out`.
pub async fn export_records(
    path: &Path,
    from: Option<&str>,
    to: Option<&str>,
    patient: Option<String>,
    subject: Option<String>,
    fhir: bool,
    out: &mut dyn std::io::Write,
) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let kek = load_kek(&cfg, false)?;
    let query = ExportQuery {
        from_ms: time_ms(from, 0)?,
        to_ms: time_ms(to, far_future())?,
        patient,
        subject,
    };
    let format = if fhir { ExportFormat::Fhir } else { ExportFormat::Jsonl };
    let signer = load_signer(&cfg)?;
    let trusted = [signer.verifying_key()];
    let summary = export_with(&store, &*kek, &query, format, out, Some(&trusted)).await?;
    let text = format!(
        "{} records exported, {} unreadable ({} destroyed keys, {} damaged)",
        summary.exported,
        summary.unreadable,
        summary.unreadable - summary.damaged,
        summary.damaged
    );
    // DATA-INT-1: damaged evidence must not pass as a complete export.
    match summary.damaged {
        0 => Ok(text),
        n => Err(OpsError::DamagedExport {
            summary: text,
            damaged: n,
        }),
    }
}

/// The periodic review (LOG-ACC-1): top subjects, off-hours access, many patients, refusals.
pub async fn report(path: &Path, from: Option<&str>, to: Option<&str>) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let kek = load_kek(&cfg, false)?;
    let review = crate::audit::report::ReviewConfig::default();
    Ok(
        crate::audit::report::review_report(&store, &*kek, time_ms(from, 0)?, time_ms(to, far_future())?, &review)
            .await?,
    )
}

/// Ids of the checkpoints in the store, when `audit.checkpoint_file` is set (else empty).
async fn checkpoint_ids(cfg: &Config, store: &crate::store::Store) -> Result<Vec<String>, OpsError> {
    if cfg.audit.checkpoint_file.is_none() {
        return Ok(Vec::new());
    }
    let all = store.audit_checkpoints().await?;
    Ok(all.into_iter().map(|c| c.checkpoint_id).collect())
}

/// Appends the checkpoints an operator command added (purge, key destruction) to
/// `audit.checkpoint_file`, as the writer does with its own (LOG-PROT-1). `done` says
/// what already happened, since a publication failure cannot undo it.
async fn publish_new(cfg: &Config, store: &crate::store::Store, before: &[String], done: &str) -> Result<(), OpsError> {
    let Some(file) = &cfg.audit.checkpoint_file else {
        return Ok(());
    };
    let all = store.audit_checkpoints().await?;
    let new: Vec<_> = all.into_iter().filter(|c| !before.contains(&c.checkpoint_id)).collect();
    crate::audit::checkpoint_log::CheckpointLog::new(file.clone())
        .append(&new)
        .map_err(|source| OpsError::NotPublished {
            done: done.to_string(),
            source,
        })
}

/// Removes records older than `audit.retention_days`, with a signed checkpoint.
pub async fn purge(path: &Path) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let signer = load_signer(&cfg)?;
    let now = crate::audit::time::now_ms();
    let before = checkpoint_ids(&cfg, &store).await?;
    let r = crate::audit::purge::purge(&store, &signer, cfg.audit.retention_days, now).await?;
    publish_new(&cfg, &store, &before, "the purge is done").await?;
    Ok(format!("{r:?}"))
}

/// Adds a new key-encryption key and re-wraps every data key under it; records are not
/// rewritten. Then point `audit.kek_file` at the new file and retire the old one.
pub async fn rotate_key(path: &Path, new_key_file: &Path) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let old = load_kek(&cfg, false)?;
    let new = crate::audit::crypto::LocalKek::generate_file(new_key_file)?;
    let r = crate::audit::keys::rotate_kek(&store, &*old, &new).await?;
    Ok(format!(
        "re-wrapped {} data keys under {} ({} already were). Now set audit.kek_file = {:?} and restart.",
        r.rewrapped,
        new_key_file.display(),
        r.already_new,
        new_key_file.display()
    ))
}

/// Crypto-shredding: destroys one data key; its records become unreadable for good.
pub async fn destroy_key(path: &Path, key_id: &str) -> Result<String, OpsError> {
    let cfg = config(path)?;
    let store = open_store(&cfg)?;
    let signer = load_signer(&cfg)?;
    let before = checkpoint_ids(&cfg, &store).await?;
    match crate::audit::keys::destroy_data_key(&store, &signer, key_id).await? {
        true => {
            publish_new(&cfg, &store, &before, &format!("data key {key_id} is destroyed")).await?;
            Ok(format!(
                "data key {key_id} destroyed; its records can no longer be decrypted"
            ))
        }
        false => Err(OpsError::NoDataKey(key_id.to_string())),
    }
}
