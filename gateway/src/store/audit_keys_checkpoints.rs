//! Statements for wrapped keys and signed checkpoints (DATA-ENC-1,
//! DATA-ENC-2, LOG-PROT-1, 情報の破棄): key rotation rewraps rows here, key
//! destruction deletes them here together with the checkpoint that records
//! the destruction.

use sqlx::Row;

use super::audit_tables::{checkpoint_row, insert_checkpoint, key_row, placeholders, CHECKPOINT_COLUMNS, KEY_COLUMNS};
use super::{CheckpointRow, KeyRow, Store, StoreError};

impl Store {
    /// Inserts one key unless its id exists; returns whether it was inserted.
    pub async fn audit_insert_key(&self, key: &KeyRow) -> Result<bool, StoreError> {
        let pool = self.ready().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO audit_keys ({KEY_COLUMNS}) VALUES {} ON CONFLICT (key_id) DO NOTHING",
            placeholders(1, 6)
        ))
        .bind(&key.key_id)
        .bind(&key.purpose)
        .bind(&key.instance)
        .bind(&key.kek_id)
        .bind(&key.wrapped)
        .bind(key.created_ms)
        .execute(pool)
        .await
        .map_err(StoreError::db("insert audit key"))?;
        Ok(done.rows_affected() > 0)
    }

    /// One wrapped key by id; `None` if it never existed or was destroyed.
    pub async fn audit_key(&self, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        let pool = self.ready().await?;
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM audit_keys WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db("read audit key"))?;
        row.as_ref()
            .map(key_row)
            .transpose()
            .map_err(StoreError::db("decode audit key"))
    }

    /// All wrapped keys, oldest first.
    pub async fn audit_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM audit_keys ORDER BY created_ms, key_id"
        ))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list audit keys"))?;
        rows.iter()
            .map(key_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode audit key"))
    }

    /// Replaces the wrapping of existing keys (KEK rotation) in one
    /// transaction; the records encrypted under them are not touched.
    pub async fn audit_rewrap_keys(&self, keys: &[KeyRow]) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(StoreError::db("begin key rewrap"))?;
        for k in keys {
            sqlx::query("UPDATE audit_keys SET kek_id = $1, wrapped = $2 WHERE key_id = $3")
                .bind(&k.kek_id)
                .bind(&k.wrapped)
                .bind(&k.key_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("rewrap audit key"))?;
        }
        tx.commit().await.map_err(StoreError::db("commit key rewrap"))
    }

    /// Deletes a wrapped key and records that it was deleted, atomically.
    /// Returns `false` (and writes nothing) if the key did not exist.
    pub async fn audit_delete_key(&self, key_id: &str, checkpoint: &CheckpointRow) -> Result<bool, StoreError> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(StoreError::db("begin key deletion"))?;
        let done = sqlx::query("DELETE FROM audit_keys WHERE key_id = $1")
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("delete audit key"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_checkpoint(&mut tx, checkpoint).await?;
        tx.commit().await.map_err(StoreError::db("commit key deletion"))?;
        Ok(true)
    }

    /// Data keys created before `created_before_ms` that no record uses any
    /// more (after a purge): candidates for destruction.
    pub async fn audit_unused_data_keys(&self, created_before_ms: i64) -> Result<Vec<String>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT key_id FROM audit_keys k WHERE purpose = 'data' AND created_ms < $1
               AND NOT EXISTS (SELECT 1 FROM audit_records r WHERE r.key_id = k.key_id) ORDER BY key_id",
        )
        .bind(created_before_ms)
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("find unused data keys"))?;
        rows.iter()
            .map(|r| r.try_get("key_id"))
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode key id"))
    }

    /// All checkpoints, by instance then sequence then time.
    pub async fn audit_checkpoints(&self) -> Result<Vec<CheckpointRow>, StoreError> {
        let pool = self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY instance, seq, created_ms, checkpoint_id"
        ))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list audit checkpoints"))?;
        rows.iter()
            .map(checkpoint_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::db("decode audit checkpoint"))
    }

    /// Stores one checkpoint.
    pub async fn audit_insert_checkpoint(&self, checkpoint: &CheckpointRow) -> Result<(), StoreError> {
        let pool = self.ready().await?;
        let mut conn = pool.acquire().await.map_err(StoreError::db("acquire connection"))?;
        insert_checkpoint(&mut conn, checkpoint).await
    }
}
