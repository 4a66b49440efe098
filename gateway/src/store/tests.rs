//! Store round-trips on both databases.

use super::test_support::backends;
use super::*;

#[tokio::test]
async fn revocations_round_trip() {
    for db in backends().await {
        let store = Store::connect(&db.url).await.unwrap();
        assert_eq!(store.list_revocations().await.unwrap(), RevocationSnapshot::default());
        store.revoke_jti("https://idp.example", "jti-1").await.unwrap();
        store.revoke_jti("https://idp.example", "jti-1").await.unwrap(); // idempotent
        store
            .revoke_subject("https://idp.example", "user-7", 1_700_000_000)
            .await
            .unwrap();
        store
            .revoke_subject("https://idp.example", "user-7", 1_700_000_500)
            .await
            .unwrap();
        let snap = store.list_revocations().await.unwrap();
        assert_eq!(snap.jtis.len(), 1, "{}", db.name);
        assert!(snap.jtis.contains(&("https://idp.example".into(), "jti-1".into())));
        assert_eq!(
            snap.subjects.get(&("https://idp.example".into(), "user-7".into())),
            Some(&1_700_000_500),
            "{}",
            db.name
        );
        // A second connection sees the same state (it is in the database).
        store.close().await;
        let again = Store::connect(&db.url).await.unwrap();
        assert_eq!(again.list_revocations().await.unwrap(), snap, "{}", db.name);
    }
}

#[tokio::test]
async fn block_list_round_trip() {
    for db in backends().await {
        let store = Store::connect(&db.url).await.unwrap();
        store.block_subject("user-1", "left the clinic").await.unwrap();
        store.block_subject("user-2", "unused 180 days").await.unwrap();
        store.block_subject("user-1", "left the clinic 2025-03").await.unwrap();
        let list = store.list_blocked().await.unwrap();
        let names: Vec<_> = list.iter().map(|b| b.subject.as_str()).collect();
        assert_eq!(names.len(), 2, "{}", db.name);
        assert!(names.contains(&"user-1") && names.contains(&"user-2"));
        let u1 = list.iter().find(|b| b.subject == "user-1").unwrap();
        assert_eq!(u1.reason, "left the clinic 2025-03");
        assert!(store.unblock_subject("user-1").await.unwrap(), "{}", db.name);
        assert!(!store.unblock_subject("user-1").await.unwrap(), "{}", db.name);
        assert_eq!(store.list_blocked().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_urls_checked() {
    for db in backends().await {
        let a = Store::connect(&db.url).await.unwrap();
        let b = Store::connect(&db.url).await.unwrap();
        a.block_subject("x", "y").await.unwrap();
        assert_eq!(b.list_blocked().await.unwrap().len(), 1, "{}", db.name);
    }
    let err = Store::connect("mysql://u:secret@127.0.0.1/db").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }));
    assert!(!err.to_string().contains("secret"), "{err}");
}

/// Several gateways (and, inside one gateway, the audit writer's store beside
/// the shared one) start at once on an empty database: every one of them must
/// get a schema. On PostgreSQL two concurrent `CREATE TABLE IF NOT EXISTS`
/// can both miss the table and one then fails on the catalog's unique index,
/// so the migration has to be serialized.
#[tokio::test]
async fn concurrent_first_starts_all_get_the_schema() {
    for round in 0..3 {
        for db in backends().await {
            let stores: Vec<Store> = (0..4)
                .map(|_| Store::connect_lazy(&db.url, StoreOptions::default()).unwrap())
                .collect();
            let results = futures_util::future::join_all(stores.iter().map(|s| s.ready())).await;
            for (i, r) in results.iter().enumerate() {
                if let Err(e) = r {
                    panic!("{} round {round}: store {i} failed to migrate: {e}", db.name);
                }
            }
            for s in &stores {
                s.close().await;
            }
        }
    }
}

/// Every new PostgreSQL connection hands the address it reached to the residency check
/// (DATA-JP-1), and a refusal closes it before any statement of ours runs.
#[tokio::test]
async fn postgres_connections_pass_the_server_address_check() {
    let Some(db) = super::test_support::postgres_db().await else {
        return;
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let allow = StoreOptions {
        server_address_check: Some(ServerAddressCheck(std::sync::Arc::new(move |ip| {
            record.lock().unwrap().push(ip);
            Ok(())
        }))),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(&db.url, allow).await.unwrap();
    store.list_blocked().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no connection was checked");
    assert!(seen.iter().all(|ip| ip.is_loopback()), "{seen:?}");
    store.close().await;

    // A refused connection never becomes usable: the pool keeps retrying until its
    // acquire timeout (the check itself logs the reason), and the operation fails.
    let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refusals.clone();
    let refuse = StoreOptions {
        acquire_timeout: Duration::from_millis(500),
        server_address_check: Some(ServerAddressCheck(std::sync::Arc::new(move |ip| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(format!("{ip} is outside the allow-list"))
        }))),
        ..StoreOptions::default()
    };
    assert!(Store::connect_with(&db.url, refuse).await.is_err());
    assert!(refusals.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// A refused connection used to surface as "pool timed out while waiting for an
/// open connection"; the error now names the database and the refusal.
#[tokio::test]
async fn a_refused_database_is_named_with_the_reason() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there
    let url = format!("postgres://gw:secret@127.0.0.1:{port}/phr");
    let options = StoreOptions {
        acquire_timeout: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let err = Store::connect_with(&url, options).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("secret"), "password shown: {text}");
}
