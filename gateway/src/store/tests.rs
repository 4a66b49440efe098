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

fn audit_row(instance: &str, seq: i64) -> AuditRow {
    AuditRow {
        instance: instance.to_string(),
        seq,
        record_id: format!("{instance}-{seq:06}"),
        recorded_ms: 1_700_000_000_000 + seq,
        key_id: "dek-1".into(),
        nonce: vec![seq as u8; 12],
        // Every byte value, zeros included, and a length that varies per row.
        ciphertext: (0..=255u8)
            .cycle()
            .skip(seq as usize)
            .take(200 + seq as usize % 7)
            .collect(),
        subject_mac: if seq % 3 == 0 {
            String::new()
        } else {
            format!("{seq:064x}")
        },
        patient_macs: if seq % 2 == 0 {
            String::new()
        } else {
            format!(",{seq:064x},患者,")
        },
        prev_hash: vec![0; 32],
        hash: vec![0xff - seq as u8; 32],
    }
}

fn key_row(key_id: &str) -> KeyRow {
    KeyRow {
        key_id: key_id.into(),
        purpose: "data".into(),
        instance: "i1".into(),
        kek_id: "kek-1".into(),
        wrapped: vec![7; 60],
        created_ms: 1_700_000_000_000,
    }
}

fn checkpoint_row(id: &str, seq: i64) -> CheckpointRow {
    CheckpointRow {
        checkpoint_id: id.into(),
        instance: "i1".into(),
        seq,
        hash: vec![9; 32],
        created_ms: 1_700_000_000_001,
        kind: "periodic".into(),
        detail: String::new(),
        public_key_id: "pk-1".into(),
        signature: vec![1; 64],
    }
}

async fn all_rows(store: &Store, instance: &str) -> Vec<AuditRow> {
    store.audit_rows_page(instance, None, 10_000).await.unwrap()
}

/// The group commit (typed drivers: PostgreSQL's UNNEST insert, SQLite's
/// multi-row insert) stores every batch shape exactly as given: records only
/// (one row; more rows than one SQLite statement takes), records with a key
/// and a checkpoint, and a checkpoint alone.
#[tokio::test]
async fn audit_commit_stores_every_batch_shape_exactly() {
    for db in backends().await {
        let store = Store::connect(&db.url).await.unwrap();
        let one = vec![audit_row("i1", 1)];
        store.audit_commit(&[], &one, &[]).await.unwrap();
        let many: Vec<_> = (2..=301).map(|s| audit_row("i1", s)).collect();
        store.audit_commit(&[], &many, &[]).await.unwrap();
        let with_key: Vec<_> = (302..=304).map(|s| audit_row("i1", s)).collect();
        store
            .audit_commit(&[key_row("dek-1")], &with_key, &[checkpoint_row("c1", 304)])
            .await
            .unwrap();
        store
            .audit_commit(&[], &[], &[checkpoint_row("c2", 304)])
            .await
            .unwrap();
        // A second instance's chain in the same batch stays its own.
        let other = vec![audit_row("i2", 1), audit_row("i2", 2)];
        store.audit_commit(&[], &other, &[]).await.unwrap();

        let expected: Vec<_> = one.into_iter().chain(many).chain(with_key).collect();
        assert_eq!(all_rows(&store, "i1").await, expected, "{}", db.name);
        assert_eq!(all_rows(&store, "i2").await, other, "{}", db.name);
        assert_eq!(
            store.audit_key("dek-1").await.unwrap(),
            Some(key_row("dek-1")),
            "{}",
            db.name
        );
        let cps = store.audit_checkpoints().await.unwrap();
        let mut ids: Vec<_> = cps.iter().map(|c| c.checkpoint_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["c1", "c2"], "{}", db.name);
        assert!(cps.contains(&checkpoint_row("c1", 304)), "{}", db.name);
        store.close().await;
    }
}

/// A batch that breaks `(instance, seq)` uniqueness (a second writer on the
/// same chain) fails whole: none of its records, keys or checkpoints stay.
#[tokio::test]
async fn audit_commit_is_all_or_nothing() {
    for db in backends().await {
        let store = Store::connect(&db.url).await.unwrap();
        store.audit_commit(&[], &[audit_row("i1", 1)], &[]).await.unwrap();
        // Records only, the clash in the last row.
        let clash: Vec<_> = [2, 3, 1].iter().map(|&s| audit_row("i1", s)).collect();
        let mut clash_last = clash.clone();
        clash_last[2].record_id = "fresh-id".into();
        assert!(store.audit_commit(&[], &clash_last, &[]).await.is_err(), "{}", db.name);
        // With a key and a checkpoint: the transaction path.
        assert!(store
            .audit_commit(&[key_row("dek-x")], &clash_last, &[checkpoint_row("cx", 3)])
            .await
            .is_err());
        // More rows than one SQLite statement holds, the clash in the last chunk.
        let mut long: Vec<_> = (2..=300).map(|s| audit_row("i1", s)).collect();
        long.push(AuditRow {
            record_id: "fresh-id-2".into(),
            ..audit_row("i1", 1)
        });
        assert!(store.audit_commit(&[], &long, &[]).await.is_err(), "{}", db.name);
        assert_eq!(all_rows(&store, "i1").await, vec![audit_row("i1", 1)], "{}", db.name);
        assert_eq!(store.audit_key("dek-x").await.unwrap(), None, "{}", db.name);
        assert!(store.audit_checkpoints().await.unwrap().is_empty(), "{}", db.name);
        store.close().await;
    }
}

/// The typed SQLite connections keep the durability settings: WAL, and
/// `synchronous=FULL` (2), which "acked = durable" relies on.
#[tokio::test]
async fn typed_sqlite_connections_keep_wal_and_full_sync() {
    let db = super::test_support::sqlite_db();
    let store = Store::connect(&db.url).await.unwrap();
    let got = audit_insert::sqlite_durability(&store.typed).await;
    assert_eq!(got, Some(("wal".to_string(), 2)));
}

/// The typed PostgreSQL pool's connections pass the same residency check
/// (DATA-JP-1) as the `Any` pool's: a refusal there fails the group commit.
#[tokio::test]
async fn typed_postgres_connections_pass_the_server_address_check() {
    let Some(db) = super::test_support::postgres_db().await else {
        return;
    };
    let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = refuse.clone();
    let options = StoreOptions {
        acquire_timeout: Duration::from_millis(500),
        server_address_check: Some(ServerAddressCheck(std::sync::Arc::new(move |ip| {
            match flag.load(std::sync::atomic::Ordering::Relaxed) {
                true => Err(format!("{ip} is outside the allow-list")),
                false => Ok(()),
            }
        }))),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(&db.url, options).await.unwrap();
    // The schema exists and the `Any` pool holds a checked connection; the
    // typed pool's first connection is opened only now, and refused.
    refuse.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(store.audit_commit(&[], &[audit_row("i1", 1)], &[]).await.is_err());
    refuse.store(false, std::sync::atomic::Ordering::Relaxed);
    store.audit_commit(&[], &[audit_row("i1", 1)], &[]).await.unwrap();
    assert_eq!(all_rows(&store, "i1").await.len(), 1);
}
