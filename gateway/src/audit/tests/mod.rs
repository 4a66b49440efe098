//! Audit tests, each run on SQLite and (with `PHR_TEST_POSTGRES_URL`) PostgreSQL.

mod chain_tests;
mod codec_tests;
mod crypto_tests;
mod export_tests;
mod format_tests;
mod tail_tests;
mod writer_tests;

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::chain::CheckpointSigner;
use super::crypto::{random_bytes, LocalKek};
use super::record::{scrub_path, AccessDecision, AccessRecord};
use super::writer::{AuditWriter, WriterConfig, WriterStats};
use crate::store::test_support::{backends, TestDb};
use crate::store::Store;

/// An export query covering every record.
pub(crate) fn all_time() -> super::export::ExportQuery {
    super::export::ExportQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        ..Default::default()
    }
}

/// A store, keys and a temp dir for one backend.
pub(crate) struct Fx {
    pub db: TestDb,
    pub store: Store,
    pub kek: Arc<LocalKek>,
    pub signer: Arc<CheckpointSigner>,
}

impl Fx {
    pub async fn all() -> Vec<Fx> {
        let mut v = Vec::new();
        for db in backends().await {
            let store = Store::connect(&db.url).await.unwrap();
            v.push(Fx {
                db,
                store,
                kek: Arc::new(LocalKek::from_bytes(&random_bytes().unwrap())),
                signer: Arc::new(CheckpointSigner::generate().unwrap()),
            });
        }
        v
    }

    pub fn config(&self, instance: &str) -> WriterConfig {
        WriterConfig::new(instance, self.db.dir.path().join(format!("{instance}.spool")))
    }

    pub fn trusted(&self) -> Vec<VerifyingKey> {
        vec![self.signer.verifying_key()]
    }

    /// Starts a writer, records `recs` one after another, shuts it down.
    pub async fn write(&self, instance: &str, recs: Vec<AccessRecord>) -> WriterStats {
        let (h, task) = AuditWriter::start(
            self.store.clone(),
            self.kek.clone(),
            self.signer.clone(),
            self.config(instance),
        )
        .unwrap();
        for r in recs {
            h.record(r).await.unwrap();
        }
        h.shutdown().await.unwrap();
        task.await.unwrap();
        h.stats()
    }
}

/// A fully populated record; `i` varies subject, patients and time.
pub(crate) fn sample(i: usize) -> AccessRecord {
    AccessRecord {
        time: 1_743_467_400_000 + i as i64 * 1000, // 2025-04-01T00:30Z + i s (09:30 JST)
        clock_synchronized: Some(true),
        request_id: format!("req-{i:04}"),
        instance: "gw-a".into(),
        source_ip: "127.0.0.1".into(),
        tls_version: Some("TLSv1.3".into()),
        client_cert_fingerprint: Some("ab".repeat(32)),
        client_cert_subject: Some("CN=clinic-app,O=Example Clinic".into()),
        token_issuer: Some("https://idp.example".into()),
        subject: Some(format!("doctor-{}", i % 3)),
        client_id: Some("phr-app".into()),
        jti: Some(format!("jti-{i}")),
        auth_factors: vec!["pwd".into(), "otp".into()],
        session_start: Some(1_743_467_000),
        patients: vec![format!("patient-{:04}", i % 5)],
        interaction: Some("read".into()),
        resource_type: Some("Observation".into()),
        resource_id: Some(format!("obs-{i}")),
        method: "GET".into(),
        route: "fhir".into(),
        path: scrub_path(&format!("/fhir/Observation/obs-{i}")),
        status: 200,
        decision: AccessDecision::Allowed,
        reason: None,
        bytes_in: 0,
        bytes_out: 512,
        latency_ms: 12,
        upstream: Some("fhir-backend".into()),
        upstream_addr: Some("127.0.0.1:8081".into()),
    }
}
