//! Decrypting and exporting records (LOG-ACC-1, INC-MHLW-1, INC-APPI-1).
//!
//! Reviewers (LOG-ACC-1), authorities after an incident (INC-MHLW-1's
//! evidence bundle) and a PPC report (INC-APPI-1: which persons, which data,
//! which period) all need the records in readable form. Export is the one
//! place that decrypts in bulk; it needs the KEK, and filters by patient or
//! subject through the keyed-hash columns so only matching rows are
//! decrypted. Output is JSON lines or a FHIR R4 `Bundle` of BALP
//! `AuditEvent`s (see [`super::fhir`]). Records whose data key was destroyed
//! are counted (and listed in JSON lines) but cannot be shown. Records that
//! do not open for any other reason (altered ciphertext, a key deleted
//! without a signed destruction record) are counted apart as damage
//! (DATA-INT-1): `audit export` then exits non-zero, since evidence with
//! damaged entries must not pass as complete.

use std::io::Write;

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};

use super::super::store::Store;
use super::crypto::KeyEncryptionKey;
use super::keys::{IndexKey, KeyRing, Unreadable};
use super::record::AccessRecord;
use super::AuditError;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line: position in the chain plus the record.
    Jsonl,
    /// A FHIR R4 `Bundle` (type `collection`) of BALP `AuditEvent`s.
    Fhir,
}

/// Which records to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// Inclusive start, unix ms.
    pub from_ms: i64,
    /// Exclusive end, unix ms.
    pub to_ms: i64,
    /// Only records touching this patient id.
    pub patient: Option<String>,
    /// Only records of this token subject.
    pub subject: Option<String>,
}

/// A decrypted record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Chain (instance).
    pub instance: String,
    /// Position in the chain.
    pub seq: i64,
    /// Record id.
    pub record_id: String,
    /// The record, or why it cannot be read.
    pub record: Result<AccessRecord, Unreadable>,
}

/// Counts from [`export`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records written.
    pub exported: u64,
    /// Matching rows that could not be decrypted (key destroyed or damaged).
    pub unreadable: u64,
    /// Of those, the ones damaged (not a deliberately destroyed key).
    pub damaged: u64,
}

/// Reads and decrypts the records matching `query`, in time order.
pub async fn read_records(
    store: &Store,
    kek: &dyn KeyEncryptionKey,
    query: &ExportQuery,
) -> Result<Vec<StoredRecord>, AuditError> {
    read_records_with(store, kek, query, None).await
}

/// [`read_records`]; with `trusted`, a key counts as destroyed only if a
/// checkpoint signed by one of those keys says so.
pub async fn read_records_with(
    store: &Store,
    kek: &dyn KeyEncryptionKey,
    query: &ExportQuery,
    trusted: Option<&[VerifyingKey]>,
) -> Result<Vec<StoredRecord>, AuditError> {
    let (mut subject_mac, mut patient_mac) = (None, None);
    if query.patient.is_some() || query.subject.is_some() {
        let index = IndexKey::load_or_create(store, kek).await?;
        subject_mac = query.subject.as_deref().map(|s| index.subject_mac(s));
        patient_mac = query.patient.as_deref().map(|p| index.patient_mac(p));
    }
    let rows = store
        .audit_rows_between(
            query.from_ms,
            query.to_ms,
            subject_mac.as_deref(),
            patient_mac.as_deref(),
        )
        .await?;
    let mut ring = KeyRing::new(store, kek);
    if let Some(t) = trusted {
        ring = ring.trusting(t.to_vec());
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let record = ring.open(&row).await?;
        // The MAC columns are only an index: confirm on the decrypted record.
        if let Ok(r) = &record {
            let patient_ok = query.patient.as_ref().is_none_or(|p| r.patients.contains(p));
            let subject_ok = query.subject.is_none() || r.subject == query.subject;
            if !(patient_ok && subject_ok) {
                continue;
            }
        }
        out.push(StoredRecord {
            instance: row.instance,
            seq: row.seq,
            record_id: row.record_id,
            record,
        });
    }
    Ok(out)
}

fn jsonl_line(r: &StoredRecord) -> Result<Value, AuditError> {
    let mut v = json!({ "instance": r.instance, "seq": r.seq, "record_id": r.record_id });
    match &r.record {
        Ok(rec) => v["record"] = serde_json::to_value(rec)?,
        Err(Unreadable::KeyDestroyed(k)) => v["unreadable"] = json!({ "reason": "key_destroyed", "key_id": k }),
        Err(Unreadable::KeyMissing(k)) => {
            v["unreadable"] =
                json!({ "reason": "damaged", "detail": "data key missing without a destruction record", "key_id": k })
        }
        Err(Unreadable::Damaged) => v["unreadable"] = json!({ "reason": "damaged" }),
    }
    Ok(v)
}

/// Writes the matching records to `out` in `format`.
pub async fn export(
    store: &Store,
    kek: &dyn KeyEncryptionKey,
    query: &ExportQuery,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<ExportSummary, AuditError> {
    export_with(store, kek, query, format, out, None).await
}

/// [`export`], trusting only destruction records signed by `trusted` (see
/// [`read_records_with`]).
pub async fn export_with(
    store: &Store,
    kek: &dyn KeyEncryptionKey,
    query: &ExportQuery,
    format: ExportFormat,
    out: &mut dyn Write,
    trusted: Option<&[VerifyingKey]>,
) -> Result<ExportSummary, AuditError> {
    let records = read_records_with(store, kek, query, trusted).await?;
    let mut sum = ExportSummary::default();
    for r in &records {
        match &r.record {
            Ok(_) => sum.exported += 1,
            Err(why) => {
                sum.unreadable += 1;
                sum.damaged += u64::from(why.is_damage());
            }
        }
    }
    match format {
        ExportFormat::Jsonl => {
            for r in &records {
                serde_json::to_writer(&mut *out, &jsonl_line(r)?)?;
                out.write_all(b"\n").map_err(AuditError::Output)?;
            }
        }
        ExportFormat::Fhir => {
            let events: Vec<(&str, &AccessRecord)> = records
                .iter()
                .filter_map(|r| r.record.as_ref().ok().map(|rec| (r.record_id.as_str(), rec)))
                .collect();
            serde_json::to_writer_pretty(&mut *out, &super::fhir::bundle(&events))?;
            out.write_all(b"\n").map_err(AuditError::Output)?;
        }
    }
    out.flush().map_err(AuditError::Output)?;
    Ok(sum)
}
