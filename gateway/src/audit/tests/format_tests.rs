//! Stores and spools written by gateways from before the v2 record encoding
//! (audit::record_codec) keep working: a chain of old (JSON) records that a
//! new gateway continues verifies and exports whole, and an old spool
//! replays.

use super::{all_time, sample, Fx};
use crate::audit::chain::{link_hash, CheckpointKind, GENESIS_HASH};
use crate::audit::crypto::{record_aad, record_ids, spool_aad, DataKey, KeyEncryptionKey};
use crate::audit::export::{export, read_records, ExportFormat};
use crate::audit::keys::{IndexKey, KeyRing};
use crate::audit::record::AccessRecord;
use crate::audit::record_codec::V2;
use crate::audit::spool::{Spool, SpoolEntry};
use crate::audit::verify::verify;
use crate::store::{AuditRow, KeyRow};

/// Appends `recs` to `instance`'s chain exactly as a gateway before v2 did:
/// each record's JSON sealed under a data key of its own, chained, with a
/// shutdown checkpoint after the last one.
async fn write_v1(fx: &Fx, instance: &str, recs: &[AccessRecord]) {
    let (key, wrapped) = DataKey::generate(fx.kek.as_ref()).unwrap();
    let index = IndexKey::load_or_create(&fx.store, fx.kek.as_ref()).await.unwrap();
    let head = fx.store.audit_chain_head(instance).await.unwrap();
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS_HASH.to_vec()));
    let mut rows = Vec::new();
    for (rec, id) in recs.iter().zip(record_ids(recs.len(), recs[0].time).unwrap()) {
        seq += 1;
        let json = serde_json::to_vec(rec).unwrap();
        let (nonce, ciphertext) = key.seal(&record_aad(&id, instance, seq), &json).unwrap();
        let mut row = AuditRow {
            instance: instance.to_string(),
            seq,
            record_id: id,
            recorded_ms: rec.time,
            key_id: key.id().to_string(),
            nonce,
            ciphertext,
            subject_mac: rec.subject.as_deref().map(|s| index.subject_mac(s)).unwrap_or_default(),
            patient_macs: index.patient_macs_column(&rec.patients),
            prev_hash: prev,
            hash: Vec::new(),
        };
        row.hash = link_hash(&row.prev_hash, seq, &row).to_vec();
        prev = row.hash.clone();
        rows.push(row);
    }
    let key_row = KeyRow {
        key_id: key.id().to_string(),
        purpose: "data".into(),
        instance: instance.to_string(),
        kek_id: fx.kek.id().to_string(),
        wrapped,
        created_ms: recs[0].time,
    };
    let checkpoint = fx
        .signer
        .checkpoint(instance, seq, &prev, CheckpointKind::Shutdown, "")
        .unwrap();
    fx.store.audit_commit(&[key_row], &rows, &[checkpoint]).await.unwrap();
}

/// The first plaintext byte of every stored record of `gw-a`, in chain order.
async fn formats(fx: &Fx) -> Vec<u8> {
    let mut ring = KeyRing::new(&fx.store, fx.kek.as_ref());
    let mut out = Vec::new();
    for row in fx.store.audit_rows_page("gw-a", None, 1000).await.unwrap() {
        let key = ring.data_key(&row.key_id).await.unwrap().unwrap();
        let aad = record_aad(&row.record_id, &row.instance, row.seq);
        out.push(key.open(&row.record_id, &row.nonce, &aad, &row.ciphertext).unwrap()[0]);
    }
    out
}

#[tokio::test]
async fn a_chain_of_old_records_continued_by_a_new_gateway_verifies_and_exports() {
    for fx in Fx::all().await {
        let old: Vec<AccessRecord> = (0..4).map(sample).collect();
        let new: Vec<AccessRecord> = (4..9).map(sample).collect();
        write_v1(&fx, "gw-a", &old).await;
        let stats = fx.write("gw-a", new.clone()).await;
        assert_eq!(stats.committed, 5, "{}", fx.db.name);
        assert_eq!(
            formats(&fx).await,
            [vec![b'{'; 4], vec![V2; 5]].concat(),
            "{}",
            fx.db.name
        );

        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        assert!(report.is_intact(), "{}: {report}", fx.db.name);
        assert_eq!(report.chains[0].records, 9, "{}", fx.db.name);

        let got = read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.unwrap();
        let got: Vec<AccessRecord> = got.into_iter().map(|r| r.record.unwrap()).collect();
        assert_eq!(got, [old.clone(), new.clone()].concat(), "{}", fx.db.name);

        let mut jsonl = Vec::new();
        let sum = export(&fx.store, fx.kek.as_ref(), &all_time(), ExportFormat::Jsonl, &mut jsonl)
            .await
            .unwrap();
        assert_eq!((sum.exported, sum.unreadable), (9, 0), "{}", fx.db.name);
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // The exported record is the same JSON whichever format it was sealed in.
        for (line, rec) in lines.iter().zip(old.iter().chain(&new)) {
            assert_eq!(line["record"], serde_json::to_value(rec).unwrap(), "{}", fx.db.name);
        }
        let mut fhir = Vec::new();
        let sum = export(&fx.store, fx.kek.as_ref(), &all_time(), ExportFormat::Fhir, &mut fhir)
            .await
            .unwrap();
        assert_eq!(sum.exported, 9, "{}", fx.db.name);
    }
}

#[tokio::test]
async fn an_old_spool_of_json_records_replays() {
    for fx in Fx::all().await {
        let spooled: Vec<AccessRecord> = (0..3).map(sample).collect();
        let config = fx.config("gw-a");
        {
            let (key, wrapped) = DataKey::generate(fx.kek.as_ref()).unwrap();
            let mut entries = vec![SpoolEntry::Key {
                key_id: key.id().to_string(),
                kek_id: fx.kek.id().to_string(),
                wrapped,
            }];
            for (rec, id) in spooled.iter().zip(record_ids(3, spooled[0].time).unwrap()) {
                let json = serde_json::to_vec(rec).unwrap();
                let (nonce, ciphertext) = key.seal(&spool_aad(&id, "gw-a"), &json).unwrap();
                entries.push(SpoolEntry::Record {
                    record_id: id,
                    key_id: key.id().to_string(),
                    nonce,
                    ciphertext,
                });
            }
            Spool::open(&config.spool_path).unwrap().append(&entries).unwrap();
        }
        let later: Vec<AccessRecord> = (3..5).map(sample).collect();
        let stats = fx.write("gw-a", later.clone()).await;
        assert_eq!((stats.replayed, stats.committed), (3, 5), "{}", fx.db.name);
        // Replayed records are sealed anew, in the current format.
        assert_eq!(formats(&fx).await, vec![V2; 5], "{}", fx.db.name);
        let got = read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.unwrap();
        let got: Vec<AccessRecord> = got.into_iter().map(|r| r.record.unwrap()).collect();
        assert_eq!(got, [spooled, later].concat(), "{}", fx.db.name);
        assert!(
            verify(&fx.store, &fx.trusted()).await.unwrap().is_intact(),
            "{}",
            fx.db.name
        );
    }
}
