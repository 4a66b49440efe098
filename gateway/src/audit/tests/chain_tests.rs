//! LOG-PROT-1: verification passes on an intact log and names the first
//! modified, deleted, inserted or reordered record.

use super::{sample, Fx};
use crate::audit::chain::link_hash;
use crate::audit::verify::{verify, TamperKind};
use crate::store::AuditRow;

async fn rows(fx: &Fx) -> Vec<AuditRow> {
    fx.store.audit_rows_page("gw-a", None, 1000).await.unwrap()
}

async fn exec(fx: &Fx, sql: &str) {
    sqlx::query(sql).execute(fx.store.pool()).await.unwrap();
}

async fn ten(fx: &Fx) -> Vec<AuditRow> {
    fx.write("gw-a", (0..10).map(sample).collect()).await;
    let report = verify(&fx.store, &fx.trusted()).await.unwrap();
    assert!(report.is_intact(), "{}: {report}", fx.db.name);
    assert_eq!(report.chains[0].records, 10);
    assert!(report.chains[0].checkpoints_ok >= 1, "shutdown checkpoint verified");
    rows(fx).await
}

#[tokio::test]
async fn edited_record_is_named() {
    for fx in Fx::all().await {
        let before = ten(&fx).await;
        let mut ct = before[4].ciphertext.clone();
        ct[0] ^= 1;
        sqlx::query("UPDATE audit_records SET ciphertext = $1 WHERE instance = 'gw-a' AND seq = 5")
            .bind(ct)
            .execute(fx.store.pool())
            .await
            .unwrap();
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Modified, 5), "{}: {report}", fx.db.name);
        assert_eq!(f.record_id.as_deref(), Some(before[4].record_id.as_str()));
    }
}

#[tokio::test]
async fn deleted_record_is_named() {
    for fx in Fx::all().await {
        ten(&fx).await;
        exec(&fx, "DELETE FROM audit_records WHERE instance = 'gw-a' AND seq = 5").await;
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Deleted, 5), "{}: {report}", fx.db.name);
    }
}

#[tokio::test]
async fn truncated_tail_is_caught_by_checkpoint() {
    for fx in Fx::all().await {
        ten(&fx).await;
        exec(&fx, "DELETE FROM audit_records WHERE instance = 'gw-a' AND seq >= 9").await;
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Deleted, 9), "{}: {report}", fx.db.name);
    }
}

#[tokio::test]
async fn inserted_record_is_named() {
    for fx in Fx::all().await {
        let before = ten(&fx).await;
        // Make room at 5 by renumbering, then add a forged row whose own hash
        // is computed correctly (the attacker knows the algorithm, not the keys).
        exec(
            &fx,
            "UPDATE audit_records SET seq = seq + 1000000 WHERE instance = 'gw-a' AND seq >= 5",
        )
        .await;
        exec(
            &fx,
            "UPDATE audit_records SET seq = seq - 999999 WHERE instance = 'gw-a' AND seq >= 1000000",
        )
        .await;
        let mut forged = before[3].clone();
        forged.record_id = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0".into();
        forged.seq = 5;
        forged.prev_hash = before[3].hash.clone();
        forged.hash = link_hash(&forged.prev_hash, 5, &forged).to_vec();
        fx.store.audit_commit(&[], &[forged.clone()], &[]).await.unwrap();
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Inserted, 5), "{}: {report}", fx.db.name);
        assert_eq!(f.record_id.as_deref(), Some(forged.record_id.as_str()));
    }
}

#[tokio::test]
async fn swapped_records_are_named() {
    for fx in Fx::all().await {
        let before = ten(&fx).await;
        exec(
            &fx,
            "UPDATE audit_records SET seq = -5 WHERE instance = 'gw-a' AND seq = 5",
        )
        .await;
        exec(
            &fx,
            "UPDATE audit_records SET seq = 5 WHERE instance = 'gw-a' AND seq = 6",
        )
        .await;
        exec(
            &fx,
            "UPDATE audit_records SET seq = 6 WHERE instance = 'gw-a' AND seq = -5",
        )
        .await;
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Reordered, 5), "{}: {report}", fx.db.name);
        assert_eq!(f.record_id.as_deref(), Some(before[5].record_id.as_str()));
    }
}

#[tokio::test]
async fn forged_checkpoint_and_rewritten_chain_are_caught() {
    for fx in Fx::all().await {
        ten(&fx).await;
        // An untrusted key's checkpoint is reported.
        let other = crate::audit::chain::CheckpointSigner::generate().unwrap();
        let report = verify(&fx.store, &[other.verifying_key()]).await.unwrap();
        assert_eq!(report.findings[0].kind, TamperKind::BadCheckpoint, "{}", fx.db.name);
        // Rewriting every hash from seq 3 on keeps the chain self-consistent,
        // but the signed shutdown checkpoint at 10 no longer matches.
        let mut prev = rows(&fx).await[1].hash.clone();
        for mut r in rows(&fx).await.into_iter().skip(2) {
            r.subject_mac = "00".repeat(32);
            r.prev_hash = prev.clone();
            r.hash = link_hash(&prev, r.seq, &r).to_vec();
            prev = r.hash.clone();
            sqlx::query("UPDATE audit_records SET subject_mac = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                .bind(&r.subject_mac)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .bind(r.seq)
                .execute(fx.store.pool())
                .await
                .unwrap();
        }
        let report = verify(&fx.store, &fx.trusted()).await.unwrap();
        let f = &report.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Modified, 10), "{}: {report}", fx.db.name);
    }
}
