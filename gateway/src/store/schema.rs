//! Embedded, idempotent migrations, run once per process at first use.
//!
//! Plain `CREATE ... IF NOT EXISTS` statements plus a `schema_version` row:
//! no migration files to ship, nothing to prepare at build time. The only
//! dialect difference is the binary column type (`{BLOB}` below).

use sqlx::AnyPool;

use super::{Backend, StoreError};

/// Highest schema version this build creates and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Version 1. `{BLOB}` becomes `BLOB` (SQLite) or `BYTEA` (PostgreSQL).
/// No unsigned or boolean columns: both are spelled differently or missing
/// in one of the two databases. Empty strings stand for "none" so no NULL is
/// ever bound through the `Any` driver.
const V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    // One row per access record. Only the columns needed to search and to
    // check the chain are in clear; everything else is in `ciphertext`.
    "CREATE TABLE IF NOT EXISTS audit_records (
        instance TEXT NOT NULL,
        seq BIGINT NOT NULL,
        record_id TEXT NOT NULL UNIQUE,
        recorded_ms BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        nonce {BLOB} NOT NULL,
        ciphertext {BLOB} NOT NULL,
        subject_mac TEXT NOT NULL,
        patient_macs TEXT NOT NULL,
        prev_hash {BLOB} NOT NULL,
        hash {BLOB} NOT NULL,
        PRIMARY KEY (instance, seq)
    )",
    "CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (recorded_ms)",
    "CREATE INDEX IF NOT EXISTS audit_records_subject ON audit_records (subject_mac, recorded_ms)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        checkpoint_id TEXT PRIMARY KEY,
        instance TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash {BLOB} NOT NULL,
        created_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        public_key_id TEXT NOT NULL,
        signature {BLOB} NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audit_checkpoints_instance ON audit_checkpoints (instance, seq)",
    // Data keys wrapped by a key-encryption key; deleting a row shreds the
    // records encrypted under it.
    "CREATE TABLE IF NOT EXISTS audit_keys (
        key_id TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        instance TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        wrapped {BLOB} NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    // A jti revocation has subject = '' and revoked_before = 0; a subject
    // revocation has jti = '' and revokes tokens issued before revoked_before.
    "CREATE TABLE IF NOT EXISTS revocations (
        issuer TEXT NOT NULL,
        jti TEXT NOT NULL,
        subject TEXT NOT NULL,
        revoked_before BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, jti, subject)
    )",
    "CREATE TABLE IF NOT EXISTS blocked_subjects (
        subject TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
];

/// Key of the PostgreSQL advisory lock that serializes migrations; any fixed
/// number works as long as nothing else in the database uses it ("phrgwmig").
const MIGRATION_LOCK_KEY: i64 = 0x7068_7267_776d_6967;

pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    let mut tx = pool.begin().await.map_err(StoreError::db("begin migration"))?;
    if backend == Backend::Postgres {
        // Gateways starting together on an empty database (and, in one
        // gateway, the audit writer's store beside the shared one) would race:
        // two `CREATE TABLE IF NOT EXISTS` can both miss the table and one then
        // fails on the catalog's unique index. This lock, released at commit,
        // makes the others wait and then find the tables. SQLite needs nothing:
        // the first CREATE takes its write lock and the others wait on
        // `busy_timeout`.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("lock for migration"))?;
    }
    for ddl in V1 {
        let ddl = ddl.replace("{BLOB}", blob);
        sqlx::query(&ddl)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("create schema"))?;
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db("read schema version"))?;
    match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        Some(v) if v == SCHEMA_VERSION => {}
        _ => {
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("write schema version"))?;
        }
    }
    tx.commit().await.map_err(StoreError::db("commit migration"))?;
    Ok(())
}
