//! DATA-ENC-1/2 and 情報の破棄: records round-trip, are unreadable without the
//! key, survive KEK rotation, die with their data key; loose key files are refused.

use super::{all_time, sample, Fx};
use crate::audit::chain::CheckpointSigner;
use crate::audit::crypto::{random_bytes, CryptoError, KeyEncryptionKey, LocalKek};
use crate::audit::export::{read_records, ExportQuery};
use crate::audit::keys::{destroy_data_key, rotate_kek, IndexKey, Unreadable, INDEX_KEY_ID};
use crate::audit::record::{AccessDecision, AccessRecord};
use crate::audit::verify::verify;
use crate::audit::AuditError;

#[tokio::test]
async fn records_round_trip_with_all_fields() {
    for fx in Fx::all().await {
        let mut refused = sample(7);
        refused.decision = AccessDecision::Refused;
        refused.reason = Some("scope_missing".into());
        refused.status = 403;
        refused.patients = vec!["patient-1".into(), "patient-2".into()];
        refused.clock_synchronized = None;
        refused.time = sample(1).time + 500; // exports are in time order
        let written: Vec<AccessRecord> = vec![sample(1), refused, sample(2)];
        fx.write("gw-a", written.clone()).await;
        let got = read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.unwrap();
        let got: Vec<AccessRecord> = got.into_iter().map(|r| r.record.unwrap()).collect();
        assert_eq!(got, written, "{}", fx.db.name);
    }
}

#[tokio::test]
async fn unreadable_without_key_readable_after_rotation() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..5).map(sample).collect()).await;
        // Nothing identifying is in clear in the database.
        for r in fx.store.audit_rows_page("gw-a", None, 100).await.unwrap() {
            for needle in [&b"patient-000"[..], b"doctor-", b"obs-", b"Observation"] {
                let hay = [&r.ciphertext[..], r.patient_macs.as_bytes(), r.subject_mac.as_bytes()].concat();
                assert!(!hay.windows(needle.len()).any(|w| w == needle), "{}", fx.db.name);
            }
        }
        // A different KEK cannot unwrap the data keys.
        let stranger = LocalKek::from_bytes(&random_bytes().unwrap());
        let err = read_records(&fx.store, &stranger, &all_time()).await.unwrap_err();
        assert!(matches!(err, AuditError::Crypto(CryptoError::Unwrap { .. })), "{err}");

        let rows_before = fx.store.audit_rows_page("gw-a", None, 100).await.unwrap();
        let new_kek = LocalKek::from_bytes(&random_bytes().unwrap());
        let rep = rotate_kek(&fx.store, fx.kek.as_ref(), &new_kek).await.unwrap();
        assert_eq!(rep.rewrapped, 2, "one data key + the index key ({})", fx.db.name);
        assert_eq!(fx.store.audit_rows_page("gw-a", None, 100).await.unwrap(), rows_before);
        let got = read_records(&fx.store, &new_kek, &all_time()).await.unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].record.as_ref().unwrap(), &sample(0));
        // The patient filter (keyed hashes) still works after rotation.
        let q = ExportQuery {
            patient: Some("patient-0003".into()),
            ..all_time()
        };
        assert_eq!(read_records(&fx.store, &new_kek, &q).await.unwrap().len(), 1);
        // The old KEK no longer opens anything.
        assert!(read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.is_err());
        // A rerun is harmless.
        let again = rotate_kek(&fx.store, fx.kek.as_ref(), &new_kek).await.unwrap();
        assert_eq!((again.rewrapped, again.already_new), (0, 2));
    }
}

/// A gateway whose KEK did not create the store's keys is named with both
/// KEKs at start-up (it used to start and spool every record forever).
#[tokio::test]
async fn a_foreign_kek_is_named_against_the_stores_index_key() {
    for fx in Fx::all().await {
        assert!(
            !IndexKey::check_kek(&fx.store, fx.kek.as_ref()).await.unwrap(),
            "a new store has nothing to check ({})",
            fx.db.name
        );
        fx.write("gw-a", vec![sample(1)]).await;
        assert!(IndexKey::check_kek(&fx.store, fx.kek.as_ref()).await.unwrap());
        let stranger = LocalKek::from_bytes(&random_bytes().unwrap());
        let err = IndexKey::check_kek(&fx.store, &stranger).await.unwrap_err();
        let AuditError::ForeignKek {
            key_id,
            stored_kek,
            our_kek,
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(key_id, INDEX_KEY_ID);
        assert_eq!(stored_kek, fx.kek.id());
        assert_eq!(our_kek, stranger.id());
        assert!(err.to_string().contains("kek_file"), "says how to fix it: {err}");
    }
}

#[tokio::test]
async fn destroyed_data_key_shreds_its_records() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..4).map(sample).collect()).await;
        let key_id = fx.store.audit_rows_page("gw-a", None, 1).await.unwrap()[0]
            .key_id
            .clone();
        assert!(destroy_data_key(&fx.store, &fx.signer, &key_id).await.unwrap());
        assert!(!destroy_data_key(&fx.store, &fx.signer, &key_id).await.unwrap());
        let got = read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.unwrap();
        assert_eq!(got.len(), 4, "{}", fx.db.name);
        for r in &got {
            assert_eq!(r.record, Err(Unreadable::KeyDestroyed(key_id.clone())));
        }
        // The destruction itself is on record, signed, and the chain is intact.
        let cps = fx.store.audit_checkpoints().await.unwrap();
        assert!(cps
            .iter()
            .any(|c| c.kind == "key_destroyed" && c.detail.contains(&key_id)));
        assert!(verify(&fx.store, &fx.trusted()).await.unwrap().is_intact());
        let err = destroy_data_key(&fx.store, &fx.signer, crate::audit::keys::INDEX_KEY_ID).await;
        assert!(matches!(err, Err(AuditError::NotADataKey(_))));
    }
}

#[cfg(unix)]
#[test]
fn key_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.b64");
    LocalKek::generate_file(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let kek = LocalKek::from_file(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalKek::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CryptoError::KeyFileMode { mode: 0o644, .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("644") && msg.contains("chmod 600"),
        "{msg}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    use crate::audit::crypto::KeyEncryptionKey;
    assert_eq!(LocalKek::from_file(&path).unwrap().id(), kek.id());

    // The checkpoint signing key: generated 0600, reloaded, refused when loose.
    let sk = dir.path().join("checkpoint.pem");
    let a = CheckpointSigner::load_or_generate(&sk).unwrap();
    let b = CheckpointSigner::load_or_generate(&sk).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        CheckpointSigner::load_or_generate(&sk),
        Err(CryptoError::KeyFileMode { mode: 0o640, .. })
    ));

    // Environment variable source.
    std::env::set_var("PHR_TEST_KEK_B64", "AAAA");
    assert!(matches!(
        LocalKek::from_env("PHR_TEST_KEK_B64"),
        Err(CryptoError::KeyFormat { .. })
    ));
    assert!(matches!(
        LocalKek::from_env("PHR_TEST_KEK_UNSET"),
        Err(CryptoError::EnvMissing { .. })
    ));
}

/// Record ids are the time in ms as 12 hex digits, then 20 random hex digits:
/// time-ordered (one index page per commit) and distinct.
#[test]
fn record_ids_are_time_then_random_hex() {
    let now = 0x0123_4567_89ab_i64;
    let ids = crate::audit::crypto::record_ids(64, now).unwrap();
    assert_eq!(ids.len(), 64);
    for id in &ids {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.starts_with("0123456789ab"), "{id}");
        assert!(
            id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }
    let distinct: std::collections::HashSet<_> = ids.iter().map(|id| &id[12..]).collect();
    assert_eq!(distinct.len(), 64, "random parts repeat: {ids:?}");
    // Only the low 48 bits of the time are kept; a negative time counts as 0.
    assert!(crate::audit::crypto::record_ids(1, 0x7fff_0000_0000_0001).unwrap()[0].starts_with("000000000001"));
    assert!(crate::audit::crypto::record_ids(1, -5).unwrap()[0].starts_with("000000000000"));
}

/// The per-batch memo of search columns gives exactly what computing each
/// record's MACs on its own gives, for repeated and distinct inputs alike.
#[test]
fn batch_macs_equal_per_record_macs() {
    use crate::audit::keys::BatchMacs;
    let key = IndexKey::from_secret(&[7u8; 32]);
    let subjects = [Some("user-1"), Some("user-2"), Some("user-1"), None, Some("")];
    let patients: Vec<Vec<String>> = vec![
        vec!["p1".into()],
        vec!["p2".into()],
        vec!["p1".into()],
        vec![],
        vec!["p1".into(), "p2".into()],
        vec!["p2".into(), "p1".into()],
    ];
    let mut memo = BatchMacs::new(&key);
    for s in subjects {
        let direct = s.map(|s| key.subject_mac(s)).unwrap_or_default();
        assert_eq!(memo.subject_mac(s), direct, "{s:?}");
    }
    for p in &patients {
        assert_eq!(memo.patient_macs_column(p), key.patient_macs_column(p), "{p:?}");
    }
}
