//! LOG-PROT-1: the tail after the last checkpoint is reported and judged, checkpoints
//! published to a file catch a cut made in the database alone, and an export tells a
//! destroyed key from damage (DATA-INT-1).

use super::{all_time, sample, Fx};
use crate::audit::chain::{CheckpointKind, CheckpointSigner};
use crate::audit::checkpoint_log::CheckpointLog;
use crate::audit::export::{export_with, read_records, ExportFormat, ExportSummary};
use crate::audit::keys::Unreadable;
use crate::audit::verify::{verify, verify_with, TailBound, TamperKind, VerifyOptions};
use crate::audit::writer::AuditWriter;

async fn exec(fx: &Fx, sql: &str) {
    sqlx::query(sql).execute(fx.store.pool()).await.unwrap();
}

/// `sample(i)`'s time is 2025-04-01T00:30Z + i s.
fn sample_ms(i: usize) -> i64 {
    sample(i).time
}

fn bound(max_records: u64, max_age_ms: i64, now_ms: i64) -> VerifyOptions {
    VerifyOptions {
        tail_bound: Some(TailBound {
            max_records,
            max_age_ms,
            now_ms,
        }),
        published: None,
    }
}

#[tokio::test]
async fn the_unvouched_tail_is_reported_and_fails_only_beyond_the_bound() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..10).map(sample).collect()).await;
        // A clean shutdown vouches for everything, however old.
        let r = verify_with(&fx.store, &fx.trusted(), &bound(100, 3000, sample_ms(9) + 86_400_000))
            .await
            .unwrap();
        assert!(r.is_intact(), "{}: {r}", fx.db.name);
        assert_eq!((r.chains[0].tail_records, r.chains[0].vouched_seq), (0, 10));

        // Cut the tail and the checkpoints after seq 0 (all of them): today's verify
        // had nothing left to compare with. The tail is reported either way...
        exec(&fx, "DELETE FROM audit_checkpoints").await;
        exec(&fx, "DELETE FROM audit_records WHERE seq >= 9").await;
        let r = verify(&fx.store, &fx.trusted()).await.unwrap();
        assert!(
            r.is_intact(),
            "{}: without a bound it is only reported: {r}",
            fx.db.name
        );
        assert_eq!(r.chains[0].tail_records, 8);
        assert!(r.to_string().contains("unvouched tail: 8 records after seq 0"), "{r}");

        // ...and fails once its oldest record is older than the bound,
        let r = verify_with(&fx.store, &fx.trusted(), &bound(100, 3000, sample_ms(0) + 3001))
            .await
            .unwrap();
        let f = &r.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::UnvouchedTail, 1), "{}: {r}", fx.db.name);
        assert!(f.detail.contains("no signed checkpoint covers this chain"), "{r}");
        assert!(
            r.to_string()
                .ends_with("RESULT: UNVOUCHED TAIL (records after the last checkpoint may have been deleted)"),
            "{r}"
        );
        // ...but not while it is as young as a running gateway's tail,
        let r = verify_with(&fx.store, &fx.trusted(), &bound(100, 3000, sample_ms(0) + 3000))
            .await
            .unwrap();
        assert!(r.is_intact(), "{}: {r}", fx.db.name);
        // ...and also when it is longer than checkpoint_every, however young.
        let r = verify_with(&fx.store, &fx.trusted(), &bound(7, 3000, sample_ms(0)))
            .await
            .unwrap();
        let f = &r.findings[0];
        assert_eq!(f.kind, TamperKind::UnvouchedTail, "{}: {r}", fx.db.name);
        assert!(f.detail.contains("8 records follow it"), "{r}");
    }
}

#[tokio::test]
async fn a_tail_after_a_checkpoint_is_counted_from_it() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..4).map(sample).collect()).await; // shutdown checkpoint at 4
                                                              // A second run that "crashed": its records have no checkpoint. Forge the crash
                                                              // by deleting the checkpoints the second run signed (start and shutdown at 4, 7).
        fx.write("gw-a", (4..7).map(sample).collect()).await;
        exec(&fx, "DELETE FROM audit_checkpoints WHERE seq > 4").await;
        let r = verify_with(&fx.store, &fx.trusted(), &bound(100, 3000, sample_ms(4) + 60_000))
            .await
            .unwrap();
        let c = &r.chains[0];
        assert_eq!(
            (c.vouched_seq, c.tail_records, c.tail_oldest_ms),
            (4, 3, Some(sample_ms(4)))
        );
        let f = &r.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::UnvouchedTail, 5), "{}: {r}", fx.db.name);
        assert!(f.detail.contains("seq 4"), "{r}");
        // Starting the writer again signs a start checkpoint over that tail.
        let (h, task) =
            AuditWriter::start(fx.store.clone(), fx.kek.clone(), fx.signer.clone(), fx.config("gw-a")).unwrap();
        h.shutdown().await.unwrap();
        task.await.unwrap();
        let cps = fx.store.audit_checkpoints().await.unwrap();
        assert!(cps.iter().any(|c| c.kind == "start" && c.seq == 7), "{cps:?}");
    }
}

#[tokio::test]
async fn published_checkpoints_catch_a_cut_made_in_the_database_alone() {
    for fx in Fx::all().await {
        let file = fx.db.dir.path().join("published/checkpoints.log");
        let mut cfg = fx.config("gw-a");
        cfg.checkpoint_file = Some(file.clone());
        // The directory does not exist: the writer refuses to start, saying so.
        let Err(err) = AuditWriter::start(fx.store.clone(), fx.kek.clone(), fx.signer.clone(), cfg.clone()) else {
            panic!("a writer started with a checkpoint file it cannot create");
        };
        assert!(err.to_string().contains("checkpoints.log"), "{err}");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        cfg.checkpoint_every = 4;
        cfg.checkpoint_interval = std::time::Duration::from_secs(3600); // only the count triggers
        let (h, task) = AuditWriter::start(fx.store.clone(), fx.kek.clone(), fx.signer.clone(), cfg).unwrap();
        for i in 0..10 {
            h.record(sample(i)).await.unwrap();
        }
        h.shutdown().await.unwrap();
        task.await.unwrap();
        let log = CheckpointLog::new(file.clone());
        let published = log.read().unwrap();
        let seqs: Vec<i64> = published.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [4, 8, 10], "every 4 records, then shutdown: {}", fx.db.name);
        assert_eq!(published, fx.store.audit_checkpoints().await.unwrap());
        let opts = |published| VerifyOptions {
            tail_bound: None,
            published: Some((file.display().to_string(), published)),
        };
        let r = verify_with(&fx.store, &fx.trusted(), &opts(published.clone()))
            .await
            .unwrap();
        assert!(r.is_intact() && r.chains[0].checkpoints_ok == 3, "{}: {r}", fx.db.name);

        // Records 9 and 10 and the checkpoints that vouched for them deleted from the
        // database: the database alone looks intact, the published file does not.
        exec(&fx, "DELETE FROM audit_checkpoints WHERE seq > 8").await;
        exec(&fx, "DELETE FROM audit_records WHERE seq > 8").await;
        assert!(verify(&fx.store, &fx.trusted()).await.unwrap().is_intact());
        let r = verify_with(&fx.store, &fx.trusted(), &opts(published.clone()))
            .await
            .unwrap();
        let f = &r.findings[0];
        assert_eq!((f.kind, f.seq), (TamperKind::Deleted, 9), "{}: {r}", fx.db.name);
        assert!(
            f.detail.contains("published in") && f.detail.contains("checkpoints.log"),
            "{r}"
        );

        // Every record and checkpoint gone: the chain is still named, and cut.
        exec(&fx, "DELETE FROM audit_checkpoints").await;
        exec(&fx, "DELETE FROM audit_records").await;
        let r = verify_with(&fx.store, &fx.trusted(), &opts(published.clone()))
            .await
            .unwrap();
        assert_eq!(r.findings[0].kind, TamperKind::Deleted, "{}: {r}", fx.db.name);
        assert_eq!(r.chains[0].instance, "gw-a");

        // A published line not signed by a trusted key is reported, not trusted.
        let mut forged = published.clone();
        forged[0].seq = 3;
        let r = verify_with(&fx.store, &fx.trusted(), &opts(forged)).await.unwrap();
        assert!(r.findings.iter().any(|f| f.kind == TamperKind::BadCheckpoint), "{r}");

        // An edited line is an error naming the line, not a silently shorter list.
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replacen("\"seq\"", "\"sequence\"", 1)).unwrap();
        let err = log.read().unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}

/// Exports every record (as JSON lines, into nothing), trusting the checkpoints that
/// `fx`'s gateway key signed.
async fn export_trusting_the_gateway(fx: &Fx) -> ExportSummary {
    export_with(
        &fx.store,
        fx.kek.as_ref(),
        &all_time(),
        ExportFormat::Jsonl,
        &mut Vec::new(),
        Some(&fx.trusted()),
    )
    .await
    .unwrap()
}

/// Inserts a `KeyDestroyed` checkpoint of `gw-a` at seq 3, signed by `signer`.
async fn insert_key_destroyed(fx: &Fx, signer: &CheckpointSigner, hash: &[u8], detail: &str) {
    let checkpoint = signer
        .checkpoint("gw-a", 3, hash, CheckpointKind::KeyDestroyed, detail)
        .unwrap();
    fx.store.audit_insert_checkpoint(&checkpoint).await.unwrap();
}

#[tokio::test]
async fn export_tells_a_destroyed_key_from_damage() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..3).map(sample).collect()).await;
        // One altered ciphertext byte: damage, with a key that exists.
        let row = fx.store.audit_row_at("gw-a", 2).await.unwrap().unwrap();
        let mut ct = row.ciphertext.clone();
        ct[0] ^= 1;
        sqlx::query("UPDATE audit_records SET ciphertext = $1 WHERE seq = 2")
            .bind(ct)
            .execute(fx.store.pool())
            .await
            .unwrap();
        let sum = export_trusting_the_gateway(&fx).await;
        assert_eq!((sum.exported, sum.unreadable, sum.damaged), (2, 1, 1), "{}", fx.db.name);

        // The key row deleted behind the gateway's back (no signed destruction): damage too.
        exec(&fx, "DELETE FROM audit_keys WHERE purpose = 'data'").await;
        let got = read_records(&fx.store, fx.kek.as_ref(), &all_time()).await.unwrap();
        assert!(
            matches!(&got[0].record, Err(Unreadable::KeyMissing(k)) if *k == row.key_id),
            "{:?}",
            got[0].record
        );
        // A forged, unsigned destruction record does not make it a destroyed key.
        let other = CheckpointSigner::generate().unwrap();
        let detail = serde_json::json!({ "key_id": row.key_id, "kek_id": "x" }).to_string();
        insert_key_destroyed(&fx, &other, &row.hash, &detail).await;
        let sum = export_trusting_the_gateway(&fx).await;
        assert_eq!((sum.exported, sum.unreadable, sum.damaged), (0, 3, 3), "{}", fx.db.name);
        // Signed by the gateway's key, it is a deliberate destruction.
        insert_key_destroyed(&fx, &fx.signer, &row.hash, &detail).await;
        let sum = export_trusting_the_gateway(&fx).await;
        assert_eq!((sum.exported, sum.unreadable, sum.damaged), (0, 3, 0), "{}", fx.db.name);
    }
}
