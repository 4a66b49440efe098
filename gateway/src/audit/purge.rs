//! Retention: deleting expired records without breaking verification
//! (LOG-RET-1, LOG-PROT-1, 情報の破棄).
//!
//! LOG-RET-1: the guidelines give no number for access-log retention; the
//! 5 years of 診療録 (医師法24条) is the closest anchor. [`DEFAULT_RETENTION_DAYS`]
//! (1825) is therefore *this project's* default, a policy choice to be stated
//! in the service's disclosure documents, not a guideline figure.
//!
//! Purging deletes a prefix of each chain (records are never deleted before
//! their own retention ends, even if replayed out of time order) and, in the
//! same transaction, stores a signed `purge` checkpoint naming the last
//! deleted `(seq, hash)`: `verify` starts the chain there, so it stays green,
//! while a deletion without such a checkpoint is still caught. Afterwards the
//! data keys no remaining record uses are destroyed (情報の破棄: nothing
//! readable stays behind, also not in backups made after this point).

use serde_json::json;

use super::super::store::Store;
use super::chain::{CheckpointKind, CheckpointSigner};
use super::keys::destroy_data_key;
use super::AuditError;

/// This project's default retention (5 years, matching 診療録); a policy
/// choice, configurable as `audit.retention_days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 1825;

/// What one instance's purge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedChain {
    /// Instance.
    pub instance: String,
    /// Records deleted.
    pub deleted: u64,
    /// Last deleted sequence number: the chain now starts after it.
    pub through_seq: i64,
}

/// What [`purge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Chains that lost records.
    pub chains: Vec<PurgedChain>,
    /// Data keys destroyed because no record uses them any more.
    pub keys_destroyed: Vec<String>,
}

/// Deletes records older than `retention_days` before `now_ms`.
pub async fn purge(
    store: &Store,
    signer: &CheckpointSigner,
    retention_days: u32,
    now_ms: i64,
) -> Result<PurgeReport, AuditError> {
    if retention_days == 0 {
        return Err(AuditError::Config("audit.retention_days must be at least 1".into()));
    }
    let cutoff = now_ms - i64::from(retention_days) * 86_400_000;
    let mut report = PurgeReport::default();
    for instance in store.audit_instances().await? {
        let Some((head_seq, _)) = store.audit_chain_head(&instance).await? else {
            continue;
        };
        let through = match store.audit_first_unexpired_seq(&instance, cutoff).await? {
            Some(first_kept) => first_kept - 1,
            None => head_seq,
        };
        // Nothing stored at or below `through` (already purged, or no records).
        let Some(last) = store.audit_row_at(&instance, through).await? else {
            continue;
        };
        let detail = json!({ "cutoff_ms": cutoff, "retention_days": retention_days }).to_string();
        let checkpoint = signer.checkpoint(&instance, last.seq, &last.hash, CheckpointKind::Purge, &detail)?;
        let deleted = store.audit_purge_prefix(&instance, through, &checkpoint).await?;
        tracing::info!(%instance, deleted, through, "purged expired access records");
        report.chains.push(PurgedChain {
            instance,
            deleted,
            through_seq: through,
        });
    }
    for key_id in store.audit_unused_data_keys(cutoff).await? {
        if destroy_data_key(store, signer, &key_id).await? {
            report.keys_destroyed.push(key_id);
        }
    }
    Ok(report)
}
