//! Test helpers: one isolated database per test, on SQLite and (when
//! `PHR_TEST_POSTGRES_URL` is set) PostgreSQL, so every store and audit test
//! runs against both.

use sqlx::Connection;

/// Fresh random hex, for schema names and ids in tests.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("OS random");
    hex::encode(b)
}

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
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, schema)) = self.pg.take() {
            // Drop runs outside any runtime guarantee: use a private one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    sqlx::any::install_default_drivers();
                    if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                })
            })
            .join();
        }
    }
}

/// The PostgreSQL URL for tests, or `None` (after saying so) when unset.
/// Panics when unset but `PHR_TEST_REQUIRE_SERVICES=1`, so CI cannot pass by
/// silently skipping.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("PHR_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PHR_TEST_POSTGRES_URL not set but PHR_TEST_REQUIRE_SERVICES=1");
            }
            // Written past the test harness's output capture, so a plain run shows it.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"skipping: PHR_TEST_POSTGRES_URL not set (set it, or run bash .ci/run)\n",
            );
            None
        }
    }
}

/// A SQLite database in a fresh temp dir.
pub(crate) fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    TestDb {
        name: "sqlite",
        url,
        dir,
        pg: None,
    }
}

/// A fresh schema in the test PostgreSQL, if configured.
pub(crate) async fn postgres_db() -> Option<TestDb> {
    let admin = postgres_url()?;
    sqlx::any::install_default_drivers();
    let schema = format!("t_{}", random_hex(8));
    let mut c = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connect {admin}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .expect("create schema");
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
    Some(TestDb {
        name: "postgres",
        url,
        dir: tempfile::tempdir().expect("temp dir"),
        pg: Some((admin, schema)),
    })
}

/// SQLite always, PostgreSQL when configured: tests loop over this.
pub(crate) async fn backends() -> Vec<TestDb> {
    let mut v = vec![sqlite_db()];
    v.extend(postgres_db().await);
    v
}
