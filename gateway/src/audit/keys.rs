//! Key management against the store: the search (index) key, decrypting
//! rows, KEK rotation and crypto-shredding (DATA-ENC-1, DATA-ENC-2,
//! 情報の破棄).
//!
//! * Searchable columns are keyed HMAC-SHA256 of patient ids and subjects,
//!   so finding one patient's records needs the key but no bulk decryption,
//!   and the database alone does not reveal who was accessed. The HMAC keys
//!   are derived with HKDF-SHA256 from a random *index secret* stored wrapped
//!   by the KEK (like a data key), not from the KEK's bytes: a KMS never
//!   releases KEK bytes, and a KEK rotation must not change the MACs of
//!   records already stored.
//! * `keys rotate` ([`rotate_kek`]) re-wraps every data key under a new KEK
//!   without rewriting a single record (DATA-ENC-2: keys can be rotated).
//! * [`destroy_data_key`] deletes a wrapped data key: its records can no
//!   longer be decrypted by anyone (情報の破棄 / crypto-shredding), and the
//!   destruction is itself recorded as a signed checkpoint.

use std::collections::{HashMap, HashSet};

use ed25519_dalek::VerifyingKey;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::super::store::{AuditRow, KeyRow, Store};
use super::chain::{check_checkpoint_signature, CheckpointKind, CheckpointSigner};
use super::crypto::{random_bytes, record_aad, DataKey, KeyEncryptionKey};
use super::record::AccessRecord;
use super::AuditError;

/// Key id of the shared index secret in `audit_keys`.
pub const INDEX_KEY_ID: &str = "index-v1";

/// HMAC keys for the searchable columns, kept as keyed HMAC states: every
/// MAC clones one instead of running the key schedule again (two SHA-256
/// blocks saved per MAC, on every record).
pub struct IndexKey {
    patient: Hmac<Sha256>,
    subject: Hmac<Sha256>,
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

fn mac_hex(keyed: &Hmac<Sha256>, value: &str) -> String {
    let mut m = keyed.clone();
    m.update(value.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

impl IndexKey {
    /// Derives the patient and subject HMAC keys from the index secret.
    pub fn from_secret(secret: &[u8; 32]) -> IndexKey {
        let hk = Hkdf::<Sha256>::new(Some(b"phr-gateway/audit/index/v1"), secret);
        let mut patient = Zeroizing::new([0u8; 32]);
        let mut subject = Zeroizing::new([0u8; 32]);
        hk.expand(b"patient", patient.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(b"subject", subject.as_mut())
            .expect("32 bytes is a valid HKDF length");
        let keyed = |k: &[u8; 32]| <Hmac<Sha256> as Mac>::new_from_slice(k).expect("HMAC takes any key length");
        IndexKey {
            patient: keyed(&patient),
            subject: keyed(&subject),
        }
    }

    /// Loads the index secret from the store, creating it on first use. Two
    /// instances racing to create it both end up with the one that won.
    pub async fn load_or_create(store: &Store, kek: &dyn KeyEncryptionKey) -> Result<IndexKey, AuditError> {
        if store.audit_key(INDEX_KEY_ID).await?.is_none() {
            let secret = Zeroizing::new(random_bytes::<32>()?);
            store
                .audit_insert_key(&KeyRow {
                    key_id: INDEX_KEY_ID.to_string(),
                    purpose: "index".into(),
                    instance: String::new(),
                    kek_id: kek.id().to_string(),
                    wrapped: kek.wrap(&secret)?,
                    created_ms: super::time::now_ms(),
                })
                .await?;
        }
        let row = store
            .audit_key(INDEX_KEY_ID)
            .await?
            .ok_or_else(|| AuditError::MissingKey(INDEX_KEY_ID.into()))?;
        IndexKey::unwrap_row(&row, kek)
    }

    /// The index secret of `row` unwrapped with `kek`; a KEK that cannot
    /// unwrap it is named with the one the row was wrapped by.
    fn unwrap_row(row: &KeyRow, kek: &dyn KeyEncryptionKey) -> Result<IndexKey, AuditError> {
        match kek.unwrap(&row.wrapped) {
            Ok(secret) => Ok(IndexKey::from_secret(&secret)),
            Err(_) => Err(AuditError::ForeignKek {
                key_id: row.key_id.clone(),
                stored_kek: row.kek_id.clone(),
                our_kek: kek.id().to_string(),
            }),
        }
    }

    /// Start-up check: if the store already holds the index secret, `kek`
    /// must unwrap it. Returns `Ok(false)` when there is nothing to check
    /// yet (a new store: the first commit creates the secret).
    pub async fn check_kek(store: &Store, kek: &dyn KeyEncryptionKey) -> Result<bool, AuditError> {
        match store.audit_key(INDEX_KEY_ID).await? {
            Some(row) => IndexKey::unwrap_row(&row, kek).map(|_| true),
            None => Ok(false),
        }
    }

    /// Searchable MAC of a patient id.
    pub fn patient_mac(&self, patient: &str) -> String {
        mac_hex(&self.patient, patient)
    }

    /// Searchable MAC of a token subject.
    pub fn subject_mac(&self, subject: &str) -> String {
        mac_hex(&self.subject, subject)
    }

    /// The `patient_macs` column: `,mac1,mac2,` (so `LIKE '%,mac,%'` finds
    /// exactly one id), or empty when no patient was touched.
    pub fn patient_macs_column(&self, patients: &[String]) -> String {
        if patients.is_empty() {
            return String::new();
        }
        let mut s = String::from(",");
        for p in patients {
            s.push_str(&self.patient_mac(p));
            s.push(',');
        }
        s
    }
}

/// The search columns of one batch of records, each distinct subject and
/// patient list computed once: a batch often holds many requests of one user
/// about one patient, and two HMACs per record were a fifth of a record's
/// cost. Lives for one batch only, so it holds no more than the batch does.
pub struct BatchMacs<'k, 'a> {
    key: &'k IndexKey,
    subjects: std::collections::HashMap<&'a str, String>,
    patients: std::collections::HashMap<&'a [String], String>,
}

impl<'k, 'a> BatchMacs<'k, 'a> {
    /// An empty memo over `key`.
    pub fn new(key: &'k IndexKey) -> Self {
        BatchMacs {
            key,
            subjects: Default::default(),
            patients: Default::default(),
        }
    }

    /// [`IndexKey::subject_mac`], or empty for no subject.
    pub fn subject_mac(&mut self, subject: Option<&'a str>) -> String {
        match subject {
            None => String::new(),
            Some(s) => self
                .subjects
                .entry(s)
                .or_insert_with(|| self.key.subject_mac(s))
                .clone(),
        }
    }

    /// [`IndexKey::patient_macs_column`].
    pub fn patient_macs_column(&mut self, patients: &'a [String]) -> String {
        if patients.is_empty() {
            return String::new();
        }
        self.patients
            .entry(patients)
            .or_insert_with(|| self.key.patient_macs_column(patients))
            .clone()
    }
}

/// Why a stored record could not be read (it still counts in exports).
///
/// Only [`Unreadable::KeyDestroyed`] is an expected outcome (情報の破棄);
/// the other two mean the store was damaged or altered (DATA-INT-1) and an
/// export that meets them fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Its data key was deliberately destroyed (crypto-shredded): a
    /// `key_destroyed` checkpoint names it.
    KeyDestroyed(String),
    /// Its data key is gone but no checkpoint records its destruction: the
    /// key row was deleted outside `keys destroy`, or the record's key id altered.
    KeyMissing(String),
    /// Decryption with an existing key failed: the row was altered.
    Damaged,
}

impl Unreadable {
    /// True for damage, false for a deliberately destroyed key.
    pub fn is_damage(&self) -> bool {
        !matches!(self, Unreadable::KeyDestroyed(_))
    }
}

/// Data keys unwrapped on demand and cached, for export, report and tests.
pub struct KeyRing<'a> {
    store: &'a Store,
    kek: &'a dyn KeyEncryptionKey,
    cache: HashMap<String, Option<DataKey>>,
    /// Keys named by `key_destroyed` checkpoints, read on first need.
    destroyed: Option<HashSet<String>>,
    /// When set, only checkpoints signed by one of these keys count.
    trusted: Option<Vec<VerifyingKey>>,
}

impl<'a> KeyRing<'a> {
    /// An empty ring reading keys from `store`, unwrapping with `kek`.
    pub fn new(store: &'a Store, kek: &'a dyn KeyEncryptionKey) -> KeyRing<'a> {
        KeyRing {
            store,
            kek,
            cache: HashMap::new(),
            destroyed: None,
            trusted: None,
        }
    }

    /// Counts a key as destroyed only if its `key_destroyed` checkpoint is
    /// signed by one of `trusted`: a key row deleted behind the gateway's
    /// back, with a forged checkpoint beside it, is then damage too.
    pub fn trusting(mut self, trusted: Vec<VerifyingKey>) -> KeyRing<'a> {
        self.trusted = Some(trusted);
        self
    }

    /// Whether a signed checkpoint records the destruction of `key_id`.
    async fn was_destroyed(&mut self, key_id: &str) -> Result<bool, AuditError> {
        if self.destroyed.is_none() {
            let mut set = HashSet::new();
            for c in self.store.audit_checkpoints().await? {
                if c.kind != CheckpointKind::KeyDestroyed.as_str() {
                    continue;
                }
                if let Some(trusted) = &self.trusted {
                    if check_checkpoint_signature(&c, trusted).is_err() {
                        continue;
                    }
                }
                let detail: serde_json::Value = serde_json::from_str(&c.detail).unwrap_or_default();
                if let Some(k) = detail["key_id"].as_str() {
                    set.insert(k.to_string());
                }
            }
            self.destroyed = Some(set);
        }
        Ok(self.destroyed.as_ref().is_some_and(|s| s.contains(key_id)))
    }

    /// The data key `key_id`, `None` if it no longer exists; an error if it
    /// exists but this KEK cannot unwrap it.
    pub async fn data_key(&mut self, key_id: &str) -> Result<Option<DataKey>, AuditError> {
        if let Some(k) = self.cache.get(key_id) {
            return Ok(k.clone());
        }
        let key = match self.store.audit_key(key_id).await? {
            Some(row) => Some(DataKey::unwrap_from(key_id, self.kek, &row.wrapped)?),
            None => None,
        };
        self.cache.insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// Decrypts one row, in either record format (v1 JSON or v2).
    pub async fn open(&mut self, row: &AuditRow) -> Result<Result<AccessRecord, Unreadable>, AuditError> {
        let Some(key) = self.data_key(&row.key_id).await? else {
            return Ok(Err(match self.was_destroyed(&row.key_id).await? {
                true => Unreadable::KeyDestroyed(row.key_id.clone()),
                false => Unreadable::KeyMissing(row.key_id.clone()),
            }));
        };
        let aad = record_aad(&row.record_id, &row.instance, row.seq);
        let Ok(plain) = key.open(&row.record_id, &row.nonce, &aad, &row.ciphertext) else {
            return Ok(Err(Unreadable::Damaged));
        };
        let plain = Zeroizing::new(plain);
        Ok(super::record_codec::decode(&plain).map_err(|_| Unreadable::Damaged))
    }
}

/// Outcome of [`rotate_kek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// Keys re-wrapped from the old KEK to the new one.
    pub rewrapped: usize,
    /// Keys that were already under the new KEK (a rerun after a crash).
    pub already_new: usize,
}

/// Re-wraps every data key and the index secret from `old` to `new`, in one
/// transaction; records are untouched. Afterwards `old` can be retired.
pub async fn rotate_kek(
    store: &Store,
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
) -> Result<RotateReport, AuditError> {
    let mut updates = Vec::new();
    let mut already_new = 0;
    for mut row in store.audit_keys().await? {
        if row.kek_id == new.id() {
            already_new += 1;
            continue;
        }
        if row.kek_id != old.id() {
            return Err(AuditError::UnknownKek {
                key_id: row.key_id,
                kek_id: row.kek_id,
            });
        }
        let plain = old.unwrap(&row.wrapped)?;
        row.wrapped = new.wrap(&plain)?;
        row.kek_id = new.id().to_string();
        updates.push(row);
    }
    store.audit_rewrap_keys(&updates).await?;
    Ok(RotateReport {
        rewrapped: updates.len(),
        already_new,
    })
}

/// Crypto-shreds one data key: deletes its wrapped form and stores a signed
/// `key_destroyed` checkpoint at the head of the key's chain. Returns `false`
/// if no such data key exists. Destroy only keys of closed periods: a running
/// writer keeps its current key in memory until it rotates (daily by default).
pub async fn destroy_data_key(store: &Store, signer: &CheckpointSigner, key_id: &str) -> Result<bool, AuditError> {
    let Some(row) = store.audit_key(key_id).await? else {
        return Ok(false);
    };
    if row.purpose != "data" {
        return Err(AuditError::NotADataKey(key_id.to_string()));
    }
    let (seq, hash) = store
        .audit_chain_head(&row.instance)
        .await?
        .unwrap_or((0, super::chain::GENESIS_HASH.to_vec()));
    let detail = serde_json::json!({ "key_id": key_id, "kek_id": row.kek_id }).to_string();
    let checkpoint = signer.checkpoint(&row.instance, seq, &hash, CheckpointKind::KeyDestroyed, &detail)?;
    Ok(store.audit_delete_key(key_id, &checkpoint).await?)
}
