//! Rows and statements for the access-record tables (LOG-ACC-1, LOG-PROT-1,
//! DATA-ENC-1). The store knows nothing about encryption or hashing: it
//! moves opaque rows in and out, so the cryptography stays in `audit/` and
//! can be reviewed in one place.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::{Store, StoreError};

/// One stored access record: clear search columns, encrypted body, chain link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Gateway instance that wrote the record; each instance has its own chain.
    pub instance: String,
    /// Position in the instance's chain, from 1, without gaps.
    pub seq: i64,
    /// Random id, unique across instances; bound into the ciphertext.
    pub record_id: String,
    /// When the request was recorded, unix milliseconds (UTC).
    pub recorded_ms: i64,
    /// Data key that encrypted `ciphertext` (row in `audit_keys`).
    pub key_id: String,
    /// 96-bit AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext of the record (v2 binary encoding, or v1 JSON in older
    /// stores: `audit::record_codec`), tag included.
    pub ciphertext: Vec<u8>,
    /// Hex HMAC-SHA256 of the token subject, or empty.
    pub subject_mac: String,
    /// `,mac1,mac2,` hex HMACs of the patients touched, or empty.
    pub patient_macs: String,
    /// Hash of the previous record in this chain (or the chain start).
    pub prev_hash: Vec<u8>,
    /// This record's chain hash.
    pub hash: Vec<u8>,
}

/// A wrapped key: a data key for records or the index (HMAC) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Key id, referenced by [`AuditRow::key_id`].
    pub key_id: String,
    /// `data` or `index`.
    pub purpose: String,
    /// Instance that created it (empty for the shared index key).
    pub instance: String,
    /// Key-encryption key that wrapped it.
    pub kek_id: String,
    /// The wrapped key (nonce + ciphertext + tag).
    pub wrapped: Vec<u8>,
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
}

/// A signed statement about a chain: "at `seq` the hash was `hash`", a purge
/// ("the chain now starts after `seq`/`hash`") or a key destruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// Random id.
    pub checkpoint_id: String,
    /// Chain the checkpoint is about.
    pub instance: String,
    /// Sequence number it refers to.
    pub seq: i64,
    /// Chain hash at `seq`.
    pub hash: Vec<u8>,
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
    /// `periodic`, `shutdown`, `purge` or `key_destroyed`.
    pub kind: String,
    /// Kind-specific detail (JSON text), covered by the signature.
    pub detail: String,
    /// Which signing key made `signature`.
    pub public_key_id: String,
    /// Ed25519 signature over all the fields above.
    pub signature: Vec<u8>,
}

pub(super) const ROW_COLUMNS: &str =
    "instance, seq, record_id, recorded_ms, key_id, nonce, ciphertext, subject_mac, patient_macs, prev_hash, hash";
pub(super) const KEY_COLUMNS: &str = "key_id, purpose, instance, kek_id, wrapped, created_ms";
pub(super) const CHECKPOINT_COLUMNS: &str =
    "checkpoint_id, instance, seq, hash, created_ms, kind, detail, public_key_id, signature";
/// Ids per `IN (...)` lookup: far below both databases' parameter limits.
const LOOKUP_CHUNK: usize = 256;

fn audit_row(r: &AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        instance: r.try_get("instance")?,
        seq: r.try_get("seq")?,
        record_id: r.try_get("record_id")?,
        recorded_ms: r.try_get("recorded_ms")?,
        key_id: r.try_get("key_id")?,
        nonce: r.try_get("nonce")?,
        ciphertext: r.try_get("ciphertext")?,
        subject_mac: r.try_get("subject_mac")?,
        patient_macs: r.try_get("patient_macs")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

pub(super) fn key_row(r: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        key_id: r.try_get("key_id")?,
        purpose: r.try_get("purpose")?,
        instance: r.try_get("instance")?,
        kek_id: r.try_get("kek_id")?,
        wrapped: r.try_get("wrapped")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn checkpoint_row(r: &AnyRow) -> Result<CheckpointRow, sqlx::Error> {
    Ok(CheckpointRow {
        checkpoint_id: r.try_get("checkpoint_id")?,
        instance: r.try_get("instance")?,
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        created_ms: r.try_get("created_ms")?,
        kind: r.try_get("kind")?,
        detail: r.try_get("detail")?,
        public_key_id: r.try_get("public_key_id")?,
        signature: r.try_get("signature")?,
    })
}

pub(super) fn placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

pub(super) async fn insert_checkpoint(conn: &mut sqlx::AnyConnection, c: &CheckpointRow) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES {}",
        placeholders(1, 9)
    ))
    .bind(&c.checkpoint_id)
    .bind(&c.instance)
    .bind(c.seq)
    .bind(&c.hash)
    .bind(c.created_ms)
    .bind(&c.kind)
    .bind(&c.detail)
    .bind(&c.public_key_id)
    .bind(&c.signature)
    .execute(conn)
    .await
    .map_err(StoreError::db("insert audit checkpoint"))?;
    Ok(())
}

impl Store {
    /// The last `(seq, hash)` of an instance's chain: its newest record, or
    /// (after everything was purged) the newest purge checkpoint.
    pub async fn audit_chain_head(&self, instance: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let pool = self.ready().await?;
        for sql in [
            "SELECT seq, hash FROM audit_records WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
            "SELECT seq, hash FROM audit_checkpoints WHERE instance = $1 AND kind = 'purge' ORDER BY seq DESC LIMIT 1",
        ] {
            let row = sqlx::query(sql)
                .bind(instance)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::db("read chain head"))?;
            if let Some(row) = row {
                let seq: i64 = row.try_get("seq").map_err(StoreError::db("decode chain head"))?;
                let hash: Vec<u8> = row.try_get("hash").map_err(StoreError::db("decode chain head"))?;
                return Ok(Some((seq, hash)));
            }
        }
        Ok(None)
    }

    /// Writes keys (if new), records and checkpoints in ONE transaction: the
    /// audit writer's group commit. All or nothing, so a failed batch can be
    /// spooled and replayed without duplicates or holes.
    pub async fn audit_commit(
        &self,
        keys: &[KeyRow],
        rows: &[AuditRow],
        checkpoints: &[CheckpointRow],
    ) -> Result<(), StoreError> {
        // The schema is created through the `Any` pool; the rows then go
        // through the typed driver (see `audit_insert`).
        self.ready().await?;
        self.typed.audit_commit(keys, rows, checkpoints).await
    }

    /// Which of `record_ids` are already stored; spool replay skips those so
    /// a crash between commit and spool truncation does not duplicate rows.
    pub async fn audit_existing_record_ids(&self, record_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let pool = self.ready().await?;
        let mut found = HashSet::new();
        for chunk in record_ids.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT record_id FROM audit_records WHERE record_id IN {}",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query::<Any>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(pool).await.map_err(StoreError::db("find record ids"))? {
                found.insert(row.try_get("record_id").map_err(StoreError::db("decode record id"))?);
            }
        }
        Ok(found)
    }

    /// Every instance that has records or checkpoints, sorted.
    pub async fn audit_instances(&self) -> Result<Vec<String>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT instance FROM audit_records UNION SELECT instance FROM audit_checkpoints WHERE instance <> ''
             ORDER BY instance",
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list audit instances"))?;
        rows.iter()
            .map(|r| r.try_get("instance"))
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode instance"))
    }

    /// One page of an instance's chain in `(seq, record_id)` order, strictly
    /// after `after`; `verify` walks the chain with it in bounded memory.
    pub async fn audit_rows_page(
        &self,
        instance: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let pool = self.ready().await?;
        let (seq, id) = after.unwrap_or((i64::MIN, ""));
        let rows = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM audit_records WHERE instance = $1 AND (seq > $2 OR (seq = $2 AND record_id > $3))
             ORDER BY seq, record_id LIMIT $4"
        ))
        .bind(instance)
        .bind(seq)
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("read audit chain"))?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode audit row"))
    }

    /// Records with `from_ms <= recorded_ms < to_ms`, optionally only those
    /// whose subject MAC or one of whose patient MACs matches; ordered by
    /// time, then instance and sequence. Used by export and the review report.
    pub async fn audit_rows_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        subject_mac: Option<&str>,
        patient_mac: Option<&str>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM audit_records WHERE recorded_ms >= $1 AND recorded_ms < $2
               AND ($3 = '' OR subject_mac = $3)
               AND ($4 = '' OR patient_macs LIKE '%,' || $4 || ',%')
             ORDER BY recorded_ms, instance, seq"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(subject_mac.unwrap_or(""))
        .bind(patient_mac.unwrap_or(""))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("read audit records"))?;
        rows.iter()
            .map(audit_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode audit row"))
    }

    /// Lowest sequence number of `instance` recorded at or after
    /// `cutoff_ms`: purging stops before it, so no record is deleted before
    /// its retention ends even if replayed records are out of time order.
    pub async fn audit_first_unexpired_seq(&self, instance: &str, cutoff_ms: i64) -> Result<Option<i64>, StoreError> {
        let pool = self.ready().await?;
        sqlx::query_scalar("SELECT MIN(seq) FROM audit_records WHERE instance = $1 AND recorded_ms >= $2")
            .bind(instance)
            .bind(cutoff_ms)
            .fetch_one(pool)
            .await
            .map_err(StoreError::db("find unexpired records"))
    }

    /// Deletes the chain prefix `seq <= through_seq` of `instance` and stores
    /// the purge checkpoint naming the new chain start, in one transaction.
    pub async fn audit_purge_prefix(
        &self,
        instance: &str,
        through_seq: i64,
        checkpoint: &CheckpointRow,
    ) -> Result<u64, StoreError> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(StoreError::db("begin purge"))?;
        insert_checkpoint(&mut tx, checkpoint).await?;
        let done = sqlx::query("DELETE FROM audit_records WHERE instance = $1 AND seq <= $2")
            .bind(instance)
            .bind(through_seq)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("purge audit records"))?;
        tx.commit().await.map_err(StoreError::db("commit purge"))?;
        Ok(done.rows_affected())
    }

    /// One record by position, e.g. the last one to be purged.
    pub async fn audit_row_at(&self, instance: &str, seq: i64) -> Result<Option<AuditRow>, StoreError> {
        let pool = self.ready().await?;
        let row = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM audit_records WHERE instance = $1 AND seq = $2 ORDER BY record_id LIMIT 1"
        ))
        .bind(instance)
        .bind(seq)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db("read audit record"))?;
        row.as_ref()
            .map(audit_row)
            .transpose()
            .map_err(StoreError::db("decode audit row"))
    }
}
