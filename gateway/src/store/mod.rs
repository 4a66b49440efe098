//! The gateway's own database: access records, their keys and checkpoints,
//! token revocations and the subject block list, in SQLite or PostgreSQL.
//!
//! Requirements served (shared/guidelines/requirements.md):
//! - **LOG-ACC-1 / LOG-ACC-2** (アクセス記録の取得): the access records are
//!   kept here, one row per request, see [`audit_tables`].
//! - **LOG-PROT-1**: rows carry a hash chain and signed checkpoints; the
//!   schema keeps `(instance, seq)` unique so a second writer cannot fork a
//!   chain silently.
//! - **DATA-ENC-1** (データの暗号化): nothing sensitive is stored in clear; the
//!   store only sees ciphertext, wrapped keys and keyed hashes.
//! - **ACL-ACCT-1**: token revocations and blocked subjects live here so every
//!   gateway instance refuses the same accounts, see [`revocations`].
//!
//! One SQL dialect for both databases: everything but the audit writer's
//! group commit goes through sqlx's `Any` driver with `$1`-style parameters,
//! which PostgreSQL uses natively and SQLite accepts as numbered parameters.
//! The group commit, run for every request, uses the typed drivers (see
//! [`audit_insert`]). Only the DDL's binary column type
//! differs (`BLOB` / `BYTEA`). No compile-time checked macros are used, so a
//! fresh clone builds without a database.

mod audit_insert;
pub mod audit_keys_checkpoints;
pub mod audit_tables;
pub mod revocations;
mod schema;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::util::redact::redact_url;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Connection, Executor};
use tokio::sync::OnceCell;

pub use audit_tables::{AuditRow, CheckpointRow, KeyRow};
pub use revocations::{BlockedSubject, RevocationSnapshot};

/// Why a store operation failed.
///
/// Callers on the request path treat every variant as "the database cannot
/// be trusted right now": the audit writer spools, the revocation cache keeps
/// its last snapshot. The variants exist so operators see which step failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL scheme in {url:?}: use sqlite://PATH?mode=rwc or postgres://USER@HOST/DB")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// Connecting, or a statement, failed in the driver.
    #[error("database error during {op}: {source}")]
    Database {
        /// What the store was doing, e.g. `"insert audit batch"`.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// No connection could be opened. The pool reports a refused connection
    /// only as a timeout; this variant carries the connection's own error.
    #[error(
        "cannot connect to the database {url}: {source}; check store.url and that the server is running and reachable"
    )]
    Unreachable {
        /// The URL with any password removed.
        url: String,
        /// The driver's error for one direct connection attempt.
        #[source]
        source: sqlx::Error,
    },
    /// The schema in the database is newer than this build understands.
    #[error("database schema version {found} is newer than this gateway's {supported}: upgrade the gateway")]
    SchemaTooNew {
        /// Version recorded in `schema_version`.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A row did not have the shape this build expects.
    #[error("unexpected row in {table}: {detail}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { op, source }
    }
}

/// Which database a [`Store`] talks to; decides only the DDL's binary type
/// and the SQLite durability pragmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A local SQLite file in WAL mode with `synchronous=FULL`.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Connection tuning. The defaults suit one gateway instance; the timeouts
/// are short on purpose so the audit writer falls back to its spool quickly
/// instead of holding requests while the database is away.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size. SQLite serialises writers anyway; PostgreSQL benefits a little.
    pub max_connections: u32,
    /// How long to wait for a connection before giving up (and spooling).
    pub acquire_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for another writer's lock.
    pub sqlite_busy_timeout: Duration,
    /// Run on every new PostgreSQL connection with the server's address as the server
    /// reports it (`inet_server_addr()`); an error closes the connection before any
    /// statement of ours runs on it. The gateway checks it against the residency
    /// allow-list (DATA-JP-1), so a name that starts resolving abroad is caught on the
    /// next connection, not only at start-up.
    pub server_address_check: Option<ServerAddressCheck>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(3),
            sqlite_busy_timeout: Duration::from_secs(5),
            server_address_check: None,
        }
    }
}

/// See [`StoreOptions::server_address_check`]. `Err` carries the reason, for the log.
#[derive(Clone)]
pub struct ServerAddressCheck(pub std::sync::Arc<dyn Fn(std::net::IpAddr) -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for ServerAddressCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerAddressCheck")
    }
}

/// Asks PostgreSQL which address this connection reached and passes it to `check`.
async fn check_server_address(conn: &mut AnyConnection, check: &ServerAddressCheck) -> Result<(), sqlx::Error> {
    let addr: Option<String> = sqlx::query_scalar("SELECT host(inet_server_addr())")
        .fetch_one(&mut *conn)
        .await?;
    check_reported_address(addr, check)
}

/// Passes the address PostgreSQL reported (`inet_server_addr()`) to `check`.
/// A Unix-socket connection has no address (NULL): it is the local machine.
fn check_reported_address(addr: Option<String>, check: &ServerAddressCheck) -> Result<(), sqlx::Error> {
    let Some(addr) = addr else { return Ok(()) };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| sqlx::Error::Protocol(format!("server reported an unreadable address {addr:?}")))?;
    (check.0)(ip).map_err(|reason| sqlx::Error::Configuration(reason.into()))
}

/// A pool of connections plus the knowledge that the schema is in place.
///
/// Cheap to clone; clones share the pool. The schema is created on the first
/// successful connection (see [`Store::connect_lazy`]), so a gateway can start
/// while its database is down and catch up later.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Same database on its own driver, for the audit group commit only.
    typed: audit_insert::TypedPool,
    /// May hold a password: only ever shown through [`redact_url`].
    url: std::sync::Arc<str>,
    backend: Backend,
    migrated: std::sync::Arc<OnceCell<()>>,
}

impl Store {
    /// Connects and creates or upgrades the schema; fails if the database is
    /// unreachable. Use this where starting without the database is wrong
    /// (CLI tools: export, verify, purge, key rotation).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Self::connect_lazy(url, options)?;
        store.ready().await?;
        Ok(store)
    }

    /// Builds the pool without connecting. The audit writer uses this so the
    /// gateway starts (spooling records) even while the database is down.
    pub fn connect_lazy(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl { url: redact_url(url) });
        };
        let busy_ms = options.sqlite_busy_timeout.as_millis();
        let address_check = options.server_address_check.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // No ping before every checkout: it would add a database round trip
            // to each audit commit. A dead connection makes the statement fail,
            // which the audit writer handles like any outage (spool, retry).
            .test_before_acquire(false)
            .after_connect(move |conn: &mut AnyConnection, _meta| {
                let address_check = address_check.clone();
                Box::pin(async move {
                    if let (Backend::Postgres, Some(check)) = (backend, &address_check) {
                        check_server_address(conn, check).await?;
                    }
                    if backend == Backend::Sqlite {
                        // WAL lets readers (export, verify) run beside the writer;
                        // synchronous=FULL makes a commit survive power loss, which
                        // the audit writer's "acked = durable" promise relies on.
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute(format!("PRAGMA busy_timeout={busy_ms}").as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(url)
            .map_err(StoreError::db("parse database URL"))?;
        let typed = audit_insert::TypedPool::connect_lazy(url, backend, &options)?;
        Ok(Store {
            pool,
            typed,
            url: url.into(),
            backend,
            migrated: Default::default(),
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Makes sure the schema exists; runs the embedded migrations once per
    /// process. Every operation calls this first.
    pub async fn ready(&self) -> Result<&AnyPool, StoreError> {
        match self
            .migrated
            .get_or_try_init(|| schema::migrate(&self.pool, self.backend))
            .await
        {
            Ok(()) => Ok(&self.pool),
            Err(StoreError::Database {
                source: sqlx::Error::PoolTimedOut,
                op,
            }) => Err(self.why_no_connection(op).await),
            Err(e) => Err(e),
        }
    }

    /// The pool retries a refused connection until its timeout and then says only
    /// "timed out"; one direct attempt tells the operator why (refused, unknown
    /// host, bad password...). Bounded, because the audit writer can get here.
    async fn why_no_connection(&self, op: &'static str) -> StoreError {
        let attempt = AnyConnection::connect(&self.url);
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Err(source)) => {
                return StoreError::Unreachable {
                    url: redact_url(&self.url),
                    source,
                }
            }
            Ok(Ok(conn)) => drop(conn.close().await),
            Err(_) => {}
        }
        // It connects now (or still hangs): the timeout stands as it was.
        StoreError::Database {
            op,
            source: sqlx::Error::PoolTimedOut,
        }
    }

    /// The underlying pool, for tests and for modules that need a statement
    /// this store does not offer. Does not run migrations.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection; later operations fail.
    pub async fn close(&self) {
        self.pool.close().await;
        self.typed.close().await;
    }
}
