//! One PostgreSQL schema per test, so tests sharing a server never see each other's rows.

use sqlx::Connection;

/// A fresh schema, selected through `options=-csearch_path=...` in [`PgSchema::url`].
/// Dropping it drops the schema with everything in it, also when the test panicked.
pub struct PgSchema {
    /// The server URL the schema was created through.
    pub admin: String,
    /// The schema's name: `prefix` followed by random hex.
    pub name: String,
    /// `admin` with `search_path` set to this schema.
    pub url: String,
}

impl PgSchema {
    /// Creates a schema named `prefix` + random hex on the server at `admin`.
    pub async fn create(admin: &str, prefix: &str) -> Self {
        sqlx::any::install_default_drivers();
        let name = format!("{prefix}{}", crate::random_hex(8));
        let mut c = sqlx::AnyConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect {admin}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut c)
            .await
            .expect("create schema");
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{name}");
        Self {
            admin: admin.to_string(),
            name,
            url,
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a private one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}
