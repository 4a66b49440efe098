//! Hash chain and signed checkpoints (LOG-PROT-1, DATA-INT-1, DATA-ENC-2).
//!
//! LOG-PROT-1 (「不当な削除/改ざん/追加等を防止」) asks that access logs be
//! protected against deletion, tampering and addition. Each instance's
//! records form a chain:
//!
//! `hash_n = SHA-256(tag ‖ hash_{n-1} ‖ seq ‖ instance ‖ record_id ‖ key_id ‖
//! nonce ‖ ciphertext ‖ recorded_ms ‖ subject_mac ‖ patient_macs)`
//!
//! (every variable-length field length-prefixed), so changing, removing,
//! adding or moving a row breaks the chain at that row. A database
//! administrator could still rewrite the whole chain; checkpoints stop that:
//! every N records or T seconds (100 or 1 s by default), at start, on
//! shutdown, on purge and on key destruction the writer signs `(instance, seq, hash)` with an Ed25519 key
//! that is not in the database. The signing key is loaded from a PKCS#8 file
//! with mode 0600 (DATA-ENC-2) or generated into the data directory.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::super::store::{AuditRow, CheckpointRow};
use super::crypto::{check_key_file_mode, create_key_file, random_bytes, random_id, CryptoError};
use super::AuditError;

/// Hash before the first record of every chain.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

fn push(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

/// The chain hash of `row` if it sits at `seq` after `prev`. Public so
/// verification (and tests that forge rows) use the exact same definition.
pub fn link_hash(prev: &[u8], seq: i64, row: &AuditRow) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"phr-gateway/audit/chain/v1");
    push(&mut h, prev);
    h.update(seq.to_be_bytes());
    push(&mut h, row.instance.as_bytes());
    push(&mut h, row.record_id.as_bytes());
    push(&mut h, row.key_id.as_bytes());
    push(&mut h, &row.nonce);
    push(&mut h, &row.ciphertext);
    h.update(row.recorded_ms.to_be_bytes());
    push(&mut h, row.subject_mac.as_bytes());
    push(&mut h, row.patient_macs.as_bytes());
    h.finalize().into()
}

/// Why a checkpoint was written; stored as text in `audit_checkpoints.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Every N records or T seconds.
    Periodic,
    /// Writer stopped cleanly.
    Shutdown,
    /// Writer started over an existing chain: vouches for the tail an unclean
    /// stop (kill -9, crash) left after the last checkpoint, so `audit verify`
    /// does not report it as unvouched forever.
    Start,
    /// Records up to `seq` were deleted for retention; the chain restarts after it.
    Purge,
    /// A data key was destroyed (crypto-shredding); `detail` names it.
    KeyDestroyed,
}

impl CheckpointKind {
    /// Text form stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Periodic => "periodic",
            CheckpointKind::Shutdown => "shutdown",
            CheckpointKind::Start => "start",
            CheckpointKind::Purge => "purge",
            CheckpointKind::KeyDestroyed => "key_destroyed",
        }
    }
}

/// Short id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn public_key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The exact bytes a checkpoint signature covers (everything but the signature).
pub fn checkpoint_message(c: &CheckpointRow) -> Vec<u8> {
    let mut m = b"phr-gateway/audit/checkpoint/v1".to_vec();
    for f in [
        c.checkpoint_id.as_bytes(),
        c.instance.as_bytes(),
        &c.hash,
        c.kind.as_bytes(),
        c.detail.as_bytes(),
        c.public_key_id.as_bytes(),
    ] {
        m.extend_from_slice(&(f.len() as u64).to_be_bytes());
        m.extend_from_slice(f);
    }
    m.extend_from_slice(&c.seq.to_be_bytes());
    m.extend_from_slice(&c.created_ms.to_be_bytes());
    m
}

/// Why a checkpoint's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The checkpoint names a key that is not trusted.
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature bytes are not an Ed25519 signature.
    #[error("malformed signature")]
    Malformed,
    /// The signature does not verify.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a checkpoint's signature against the trusted keys; `Err` says why.
pub fn check_checkpoint_signature(c: &CheckpointRow, trusted: &[VerifyingKey]) -> Result<(), SignatureError> {
    let key = trusted
        .iter()
        .find(|k| public_key_id(k) == c.public_key_id)
        .ok_or_else(|| SignatureError::UnknownKey(c.public_key_id.clone()))?;
    let sig = Signature::from_slice(&c.signature).map_err(|_| SignatureError::Malformed)?;
    key.verify(&checkpoint_message(c), &sig)
        .map_err(|_| SignatureError::Mismatch)
}

/// The gateway's checkpoint signing key.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Wraps an existing key (tests, KMS-held keys exported for signing).
    pub fn from_signing_key(key: SigningKey) -> CheckpointSigner {
        let key_id = public_key_id(&key.verifying_key());
        CheckpointSigner { key, key_id }
    }

    /// A fresh random key, kept in memory only.
    pub fn generate() -> Result<CheckpointSigner, CryptoError> {
        Ok(Self::from_signing_key(SigningKey::from_bytes(&random_bytes::<32>()?)))
    }

    /// Loads the PKCS#8 PEM key at `path` (mode must be 0600 or stricter),
    /// or, if the file does not exist, generates one there with mode 0600.
    /// The public key should then be copied somewhere the database
    /// administrator cannot change (verification is only as good as that).
    pub fn load_or_generate(path: &Path) -> Result<CheckpointSigner, CryptoError> {
        if !path.exists() {
            let signer = Self::generate()?;
            let pem = signer
                .key
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| CryptoError::KeyFormat {
                    origin: path.display().to_string(),
                    detail: e.to_string(),
                })?;
            create_key_file(path, pem.as_bytes())?;
            return Ok(signer);
        }
        Self::load(path)
    }

    /// Loads the signing key from an existing PKCS#8 PEM file, creating nothing:
    /// the start-up check reads it before `run` may create any file.
    pub fn load(path: &Path) -> Result<CheckpointSigner, CryptoError> {
        check_key_file_mode(path)?;
        let pem = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        })?);
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| CryptoError::KeyFormat {
            origin: path.display().to_string(),
            detail: format!("not a PKCS#8 Ed25519 private key: {e}"),
        })?;
        Ok(Self::from_signing_key(key))
    }

    /// The public half, for `verify`.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Id stored in each checkpoint.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Builds and signs a checkpoint row (not yet stored).
    pub fn checkpoint(
        &self,
        instance: &str,
        seq: i64,
        hash: &[u8],
        kind: CheckpointKind,
        detail: &str,
    ) -> Result<CheckpointRow, AuditError> {
        let mut c = CheckpointRow {
            checkpoint_id: random_id()?,
            instance: instance.to_string(),
            seq,
            hash: hash.to_vec(),
            created_ms: super::time::now_ms(),
            kind: kind.as_str().to_string(),
            detail: detail.to_string(),
            public_key_id: self.key_id.clone(),
            signature: Vec::new(),
        };
        c.signature = self.key.sign(&checkpoint_message(&c)).to_bytes().to_vec();
        Ok(c)
    }
}
