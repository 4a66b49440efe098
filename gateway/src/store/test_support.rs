//! Test helpers: one isolated database per test, on SQLite and (when
//! `PHR_TEST_POSTGRES_URL` is set) PostgreSQL, so every store and audit test
//! runs against both.

use phr_test_support::pg::PgSchema;

/// One isolated database: a SQLite file in a temp dir, or a fresh
/// PostgreSQL schema selected through `options=-csearch_path=...`.
/// Dropping it removes the file or the schema, also when the test panicked.
pub(crate) struct TestDb {
    /// `sqlite` or `postgres`, for assertion messages.
    pub name: &'static str,
    /// URL for [`super::Store::connect`].
    pub url: String,
    /// Holds the SQLite file's directory.
    pub dir: tempfile::TempDir,
    _pg: Option<PgSchema>,
}

/// A SQLite database in a fresh temp dir.
pub(crate) fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    TestDb {
        name: "sqlite",
        url,
        dir,
        _pg: None,
    }
}

/// A fresh schema in the test PostgreSQL, if configured (see
/// [`phr_test_support::services::postgres_url`] for what happens when it is not).
pub(crate) async fn postgres_db() -> Option<TestDb> {
    let admin = phr_test_support::services::postgres_url()?;
    let schema = PgSchema::create(&admin, "t_").await;
    Some(TestDb {
        name: "postgres",
        url: schema.url.clone(),
        dir: tempfile::tempdir().expect("temp dir"),
        _pg: Some(schema),
    })
}

/// SQLite always, PostgreSQL when configured: tests loop over this.
pub(crate) async fn backends() -> Vec<TestDb> {
    let mut v = vec![sqlite_db()];
    v.extend(postgres_db().await);
    v
}
