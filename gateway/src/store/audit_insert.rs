//! The audit writer's group commit on typed drivers (LOG-ACC-1, LOG-PROT-1,
//! DATA-ENC-1).
//!
//! The group commit is the one statement the gateway runs for every request,
//! so it does not go through sqlx's `Any` driver, which copies every argument
//! into its own value enum and converts it again for the real driver. Each
//! [`super::Store`] keeps a typed pool beside its `Any` pool, used only here:
//!
//! - PostgreSQL: one constant statement for every batch size,
//!   `INSERT ... SELECT * FROM UNNEST($1::text[], ...)`. Its text never
//!   changes, so each connection parses and plans it once, and a batch goes
//!   as eleven array parameters instead of eleven parameters per row.
//! - SQLite: the multi-row `INSERT ... VALUES (?, ...), ...` for the batch's
//!   row count (built once per count, kept in the connection's statement
//!   cache), with every argument borrowed from the row instead of copied.
//!
//! What is written does not change: the same rows, in one transaction (or one
//! atomic statement), with the same `(instance, seq)` and `record_id`
//! uniqueness. The connections get the same settings as the `Any` pool's:
//! SQLite in WAL mode with `synchronous=FULL` (a commit survives power loss,
//! which "acked = durable" relies on), PostgreSQL through the same server
//! address check (DATA-JP-1).

use std::str::FromStr;

use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::audit_tables::{placeholders, CHECKPOINT_COLUMNS, KEY_COLUMNS, ROW_COLUMNS};
use super::{check_reported_address, AuditRow, Backend, CheckpointRow, KeyRow, StoreError, StoreOptions};

/// Rows per SQLite multi-row INSERT: 11 binds each stays far below SQLite's
/// parameter limit (32766).
const SQLITE_CHUNK: usize = 256;

/// The PostgreSQL insert for any number of rows: each column one array.
pub(super) const PG_UNNEST_INSERT: &str = "INSERT INTO audit_records (instance, seq, record_id, recorded_ms, key_id, \
     nonce, ciphertext, subject_mac, patient_macs, prev_hash, hash) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bytea[], \
     $7::bytea[], $8::text[], $9::text[], $10::bytea[], $11::bytea[])";

/// A pool on the store's own driver, for [`TypedPool::audit_commit`] only.
#[derive(Clone, Debug)]
pub(super) enum TypedPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl TypedPool {
    /// Builds the pool without connecting, with the `Any` pool's settings.
    pub(super) fn connect_lazy(url: &str, backend: Backend, options: &StoreOptions) -> Result<TypedPool, StoreError> {
        Ok(match backend {
            Backend::Sqlite => {
                let connect = SqliteConnectOptions::from_str(url)
                    .map_err(StoreError::db("parse database URL"))?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(options.sqlite_busy_timeout);
                TypedPool::Sqlite(pool_options(options).connect_lazy_with(connect))
            }
            Backend::Postgres => {
                let address_check = options.server_address_check.clone();
                let pool = pool_options::<Postgres>(options)
                    .after_connect(move |conn: &mut PgConnection, _meta| {
                        let address_check = address_check.clone();
                        Box::pin(async move {
                            if let Some(check) = &address_check {
                                let addr: Option<String> = sqlx::query_scalar("SELECT host(inet_server_addr())")
                                    .fetch_one(&mut *conn)
                                    .await?;
                                check_reported_address(addr, check)?;
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy(url)
                    .map_err(StoreError::db("parse database URL"))?;
                TypedPool::Postgres(pool)
            }
        })
    }

    pub(super) async fn close(&self) {
        match self {
            TypedPool::Sqlite(p) => p.close().await,
            TypedPool::Postgres(p) => p.close().await,
        }
    }

    /// See [`super::Store::audit_commit`].
    pub(super) async fn audit_commit(
        &self,
        keys: &[KeyRow],
        rows: &[AuditRow],
        checkpoints: &[CheckpointRow],
    ) -> Result<(), StoreError> {
        match self {
            TypedPool::Sqlite(pool) => sqlite_commit(pool, keys, rows, checkpoints).await,
            TypedPool::Postgres(pool) => pg_commit(pool, keys, rows, checkpoints).await,
        }
    }
}

/// Same timeouts as the `Any` pool; no ping before checkout (a dead
/// connection fails the statement, and the writer spools).
fn pool_options<DB: sqlx::Database>(options: &StoreOptions) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(false)
}

fn key_insert_sql() -> String {
    format!(
        "INSERT INTO audit_keys ({KEY_COLUMNS}) VALUES {} ON CONFLICT (key_id) DO NOTHING",
        placeholders(1, 6)
    )
}

fn checkpoint_insert_sql() -> String {
    format!(
        "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES {}",
        placeholders(1, 9)
    )
}

/// Binds a [`KeyRow`] in [`KEY_COLUMNS`] order.
macro_rules! bind_key {
    ($q:expr, $k:expr) => {
        $q.bind($k.key_id.as_str())
            .bind($k.purpose.as_str())
            .bind($k.instance.as_str())
            .bind($k.kek_id.as_str())
            .bind($k.wrapped.as_slice())
            .bind($k.created_ms)
    };
}

/// Binds a [`CheckpointRow`] in [`CHECKPOINT_COLUMNS`] order.
macro_rules! bind_checkpoint {
    ($q:expr, $c:expr) => {
        $q.bind($c.checkpoint_id.as_str())
            .bind($c.instance.as_str())
            .bind($c.seq)
            .bind($c.hash.as_slice())
            .bind($c.created_ms)
            .bind($c.kind.as_str())
            .bind($c.detail.as_str())
            .bind($c.public_key_id.as_str())
            .bind($c.signature.as_slice())
    };
}

/// The SQLite multi-row INSERT for `rows` (at most [`SQLITE_CHUNK`]), its SQL
/// built once per row count. Anonymous `?` parameters: the driver resolves
/// each numbered one by name, a scan that grows with the parameter count.
fn sqlite_insert(rows: &[AuditRow]) -> sqlx::query::Query<'_, Sqlite, SqliteArguments<'_>> {
    static SQL: [std::sync::OnceLock<String>; SQLITE_CHUNK] = [const { std::sync::OnceLock::new() }; SQLITE_CHUNK];
    let sql = SQL[rows.len() - 1].get_or_init(|| {
        let values = vec![format!("({})", ["?"; 11].join(", ")); rows.len()].join(", ");
        format!("INSERT INTO audit_records ({ROW_COLUMNS}) VALUES {values}")
    });
    let mut q = sqlx::query::<Sqlite>(sql.as_str());
    for r in rows {
        q = q
            .bind(r.instance.as_str())
            .bind(r.seq)
            .bind(r.record_id.as_str())
            .bind(r.recorded_ms)
            .bind(r.key_id.as_str())
            .bind(r.nonce.as_slice())
            .bind(r.ciphertext.as_slice())
            .bind(r.subject_mac.as_str())
            .bind(r.patient_macs.as_str())
            .bind(r.prev_hash.as_slice())
            .bind(r.hash.as_slice());
    }
    q
}

async fn sqlite_commit(
    pool: &SqlitePool,
    keys: &[KeyRow],
    rows: &[AuditRow],
    checkpoints: &[CheckpointRow],
) -> Result<(), StoreError> {
    // The common batch is records only: one INSERT statement is atomic on
    // its own, so it goes without BEGIN/COMMIT (the commit and its fsync
    // are the same).
    if keys.is_empty() && checkpoints.is_empty() && rows.len() <= SQLITE_CHUNK {
        if !rows.is_empty() {
            sqlite_insert(rows)
                .execute(pool)
                .await
                .map_err(StoreError::db("insert audit batch"))?;
        }
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(StoreError::db("begin audit batch"))?;
    let sql = key_insert_sql();
    for k in keys {
        bind_key!(sqlx::query::<Sqlite>(&sql), k)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("insert audit key"))?;
    }
    for chunk in rows.chunks(SQLITE_CHUNK) {
        sqlite_insert(chunk)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("insert audit batch"))?;
    }
    let sql = checkpoint_insert_sql();
    for c in checkpoints {
        bind_checkpoint!(sqlx::query::<Sqlite>(&sql), c)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("insert audit checkpoint"))?;
    }
    tx.commit().await.map_err(StoreError::db("commit audit batch"))
}

/// Runs [`PG_UNNEST_INSERT`] for `rows` on `conn`.
async fn pg_insert(conn: &mut PgConnection, rows: &[AuditRow]) -> Result<(), StoreError> {
    fn column<'a, T>(rows: &'a [AuditRow], f: impl Fn(&'a AuditRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    sqlx::query::<Postgres>(PG_UNNEST_INSERT)
        .bind(column(rows, |r| r.instance.as_str()))
        .bind(column(rows, |r| r.seq))
        .bind(column(rows, |r| r.record_id.as_str()))
        .bind(column(rows, |r| r.recorded_ms))
        .bind(column(rows, |r| r.key_id.as_str()))
        .bind(column(rows, |r| r.nonce.as_slice()))
        .bind(column(rows, |r| r.ciphertext.as_slice()))
        .bind(column(rows, |r| r.subject_mac.as_str()))
        .bind(column(rows, |r| r.patient_macs.as_str()))
        .bind(column(rows, |r| r.prev_hash.as_slice()))
        .bind(column(rows, |r| r.hash.as_slice()))
        .execute(conn)
        .await
        .map_err(StoreError::db("insert audit batch"))?;
    Ok(())
}

async fn pg_commit(
    pool: &PgPool,
    keys: &[KeyRow],
    rows: &[AuditRow],
    checkpoints: &[CheckpointRow],
) -> Result<(), StoreError> {
    // Records only: one statement, atomic on its own, whatever the batch size.
    if keys.is_empty() && checkpoints.is_empty() {
        if !rows.is_empty() {
            let mut conn = pool.acquire().await.map_err(StoreError::db("insert audit batch"))?;
            pg_insert(&mut conn, rows).await?;
        }
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(StoreError::db("begin audit batch"))?;
    let sql = key_insert_sql();
    for k in keys {
        bind_key!(sqlx::query::<Postgres>(&sql), k)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("insert audit key"))?;
    }
    if !rows.is_empty() {
        pg_insert(&mut tx, rows).await?;
    }
    let sql = checkpoint_insert_sql();
    for c in checkpoints {
        bind_checkpoint!(sqlx::query::<Postgres>(&sql), c)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("insert audit checkpoint"))?;
    }
    tx.commit().await.map_err(StoreError::db("commit audit batch"))
}

/// Test hook: the typed SQLite pool's `(journal_mode, synchronous)`, to
/// check its connections keep the durability settings.
#[cfg(test)]
pub(super) async fn sqlite_durability(pool: &TypedPool) -> Option<(String, i64)> {
    let TypedPool::Sqlite(pool) = pool else { return None };
    let mut conn = pool.acquire().await.ok()?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    Some((mode, sync))
}
