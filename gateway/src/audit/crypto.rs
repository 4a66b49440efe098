//! Envelope encryption of access records (DATA-ENC-1, DATA-ENC-2,
//! INC-APPI-1, データの暗号化).
//!
//! DATA-ENC-1 asks that stored data be encrypted so that administrators of the
//! storage cannot read it, with managed keys; INC-APPI-1 notes that a leak of
//! data protected by high-level encryption may not need a report to the PPC.
//! Records are therefore sealed with AES-256-GCM under random *data keys*
//! (DEKs); DEKs are stored only wrapped by a *key-encryption key* (KEK) that
//! never enters the database. The KEK sits behind [`KeyEncryptionKey`] so a
//! KMS or HSM can replace the local file without touching the record format.
//!
//! DATA-ENC-2 asks that private and symmetric keys be managed properly: a KEK
//! file is refused unless its mode is 0600 or stricter, and key bytes are
//! zeroised when dropped.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Why a key could not be loaded or a value not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file is readable by group or others.
    #[error("key file {path} has mode {mode:o}; it must not be readable by others: run `chmod 600 {path}`")]
    KeyFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key material is not 32 bytes of base64 (or not a PKCS#8 Ed25519 key).
    #[error("key from {origin} is malformed: {detail}")]
    KeyFormat {
        /// File path or environment variable name.
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// The environment variable holding the KEK is not set.
    #[error("environment variable {var} is not set (expected the base64 of a 32-byte key)")]
    EnvMissing {
        /// Variable name.
        var: String,
    },
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// Sealing failed (cannot normally happen).
    #[error("encryption failed")]
    Seal,
    /// Unwrapping a data key failed: wrong KEK or damaged wrapped key.
    #[error("cannot unwrap data key {key_id} with KEK {kek_id}: wrong key-encryption key or damaged key row")]
    Unwrap {
        /// Data key id (empty if unknown at that point).
        key_id: String,
        /// KEK that was tried.
        kek_id: String,
    },
    /// Opening a record failed: wrong key, or the row was altered.
    #[error("cannot decrypt record {record_id}: wrong key or altered ciphertext")]
    Open {
        /// Record that failed.
        record_id: String,
    },
}

/// Fills a fresh array from the OS random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

/// A random 128-bit id as hex, for records, keys and checkpoints.
pub fn random_id() -> Result<String, CryptoError> {
    Ok(hex::encode(random_bytes::<16>()?))
}

/// `n` record ids, 128 bits as 32 hex digits each: the creation time in
/// milliseconds (48 bits) followed by 80 random bits, from one call to the
/// system's random source.
///
/// Why time first: `record_id` is a unique index. Random ids would land on a
/// random leaf page of that index, so every committed record would rewrite a
/// page of its own (in the SQLite WAL, and again at the checkpoint); ids
/// that grow with time all go to the index's last page. 80 random bits per
/// millisecond keep them unique across instances.
pub fn record_ids(n: usize, now_ms: i64) -> Result<Vec<String>, CryptoError> {
    let mut random = vec![0u8; n * 10];
    getrandom::getrandom(&mut random).map_err(|_| CryptoError::Random)?;
    let time = (now_ms.max(0) as u64) & 0xffff_ffff_ffff;
    // Hex of the 48-bit time then the 80 random bits, written into one
    // buffer per id (no formatting machinery per record).
    let mut id = [0u8; 32];
    hex::encode_to_slice(&time.to_be_bytes()[2..], &mut id[..12]).expect("6 bytes make 12 hex digits");
    random
        .chunks_exact(10)
        .map(|r| {
            hex::encode_to_slice(r, &mut id[12..]).map_err(|_| CryptoError::Random)?;
            Ok(std::str::from_utf8(&id).expect("hex digits are ASCII").to_string())
        })
        .collect()
}

/// `n` random 96-bit AES-GCM nonces from one call to the system's random
/// source (one system call per batch of records, not one per record).
pub fn random_nonces(n: usize) -> Result<Vec<[u8; 12]>, CryptoError> {
    let mut nonces = vec![[0u8; 12]; n];
    getrandom::getrandom(nonces.as_flattened_mut()).map_err(|_| CryptoError::Random)?;
    Ok(nonces)
}

/// The key that wraps data keys. Implemented by [`LocalKek`]; a KMS client
/// implements the same three methods (and never reveals the key bytes).
pub trait KeyEncryptionKey: Send + Sync {
    /// Stable id stored beside every wrapped key, so rotation knows which
    /// KEK wrapped what.
    fn id(&self) -> &str;
    /// Wraps a data key.
    fn wrap(&self, dek: &[u8; 32]) -> Result<Vec<u8>, CryptoError>;
    /// Unwraps a data key wrapped by [`KeyEncryptionKey::wrap`].
    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError>;
}

const WRAP_AAD: &[u8] = b"phr-gateway/audit/dek-wrap/v1";

/// A KEK held in process memory, loaded from a 0600 file or an environment
/// variable. Wraps with AES-256-GCM (nonce ‖ ciphertext ‖ tag).
pub struct LocalKek {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKek").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Refuses files that group or others can access (DATA-ENC-2). Shared with
/// the checkpoint signing key.
pub fn check_key_file_mode(path: &Path) -> Result<(), CryptoError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::KeyFileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Writes a new secret file with mode 0600, refusing to overwrite one.
pub fn create_key_file(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    use std::io::Write;
    let io = |source| CryptoError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)
}

impl LocalKek {
    /// Uses the given 32 bytes; the id is derived from the key, so the same
    /// key always has the same id and two different keys never share one.
    pub fn from_bytes(key: &[u8; 32]) -> LocalKek {
        let digest = Sha256::new()
            .chain_update(b"phr-gateway/audit/kek-id/v1")
            .chain_update(key)
            .finalize();
        LocalKek {
            id: format!("kek-{}", hex::encode(&digest[..8])),
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    fn from_base64(text: &str, origin: &str) -> Result<LocalKek, CryptoError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| CryptoError::KeyFormat {
                    origin: origin.to_string(),
                    detail: format!("not base64: {e}"),
                })?,
        );
        let key: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| CryptoError::KeyFormat {
                origin: origin.to_string(),
                detail: format!("{} bytes, expected 32", bytes.len()),
            })?);
        Ok(LocalKek::from_bytes(&key))
    }

    /// Loads the base64 key from `path`, refusing it unless mode is 0600 or
    /// stricter.
    pub fn from_file(path: &Path) -> Result<LocalKek, CryptoError> {
        check_key_file_mode(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| CryptoError::KeyFileIo {
            path: path.to_path_buf(),
            source,
        })?);
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Loads the base64 key from environment variable `var` (for platforms
    /// that inject secrets as variables).
    pub fn from_env(var: &str) -> Result<LocalKek, CryptoError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| CryptoError::EnvMissing { var: var.to_string() })?);
        Self::from_base64(&text, var)
    }

    /// Creates a new random KEK in a new 0600 file (`keys init`).
    pub fn generate_file(path: &Path) -> Result<LocalKek, CryptoError> {
        let key = Zeroizing::new(random_bytes::<32>()?);
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_slice()) + "\n");
        create_key_file(path, text.as_bytes())?;
        Ok(LocalKek::from_bytes(&key))
    }
}

impl KeyEncryptionKey for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, dek: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let nonce = random_bytes::<12>()?;
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: dek,
                    aad: WRAP_AAD,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let fail = || CryptoError::Unwrap {
            key_id: String::new(),
            kek_id: self.id.clone(),
        };
        if wrapped.len() != 12 + 32 + 16 {
            return Err(fail());
        }
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(&wrapped[..12]),
                    Payload {
                        msg: &wrapped[12..],
                        aad: WRAP_AAD,
                    },
                )
                .map_err(|_| fail())?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

/// An unwrapped data key, ready to seal and open records.
#[derive(Clone)]
pub struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl DataKey {
    /// A new random data key and its wrapped form under `kek`.
    pub fn generate(kek: &dyn KeyEncryptionKey) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let key = Zeroizing::new(random_bytes::<32>()?);
        let wrapped = kek.wrap(&key)?;
        Ok((DataKey::from_bytes(format!("dek-{}", random_id()?), &key), wrapped))
    }

    /// Rebuilds a data key from unwrapped bytes.
    pub fn from_bytes(id: String, key: &[u8; 32]) -> DataKey {
        DataKey {
            id,
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Unwraps `wrapped` with `kek`.
    pub fn unwrap_from(id: &str, kek: &dyn KeyEncryptionKey, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let key = kek.unwrap(wrapped).map_err(|_| CryptoError::Unwrap {
            key_id: id.to_string(),
            kek_id: kek.id().to_string(),
        })?;
        Ok(DataKey::from_bytes(id.to_string(), &key))
    }

    /// The key id stored in each record row.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts with a fresh random 96-bit nonce; returns `(nonce, ciphertext)`.
    /// Random nonces are safe here because a data key seals at most a bounded
    /// number of records (the writer rotates long before 2^32).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let nonce = random_bytes::<12>()?;
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Seal)?;
        Ok((nonce.to_vec(), ct))
    }

    /// Encrypts `buf` in place under `nonce` (one of [`random_nonces`]):
    /// afterwards `buf` is the ciphertext with its tag, and no copy of the
    /// plaintext is left behind. On an error `buf` is wiped.
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.cipher
            .encrypt_in_place(Nonce::from_slice(nonce), aad, buf)
            .map_err(|_| {
                buf.zeroize();
                CryptoError::Seal
            })
    }

    /// Decrypts and authenticates; fails if any byte of ciphertext, nonce or
    /// associated data changed.
    pub fn open(&self, record_id: &str, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if nonce.len() != 12 {
            return Err(CryptoError::Open {
                record_id: record_id.to_string(),
            });
        }
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| CryptoError::Open {
                record_id: record_id.to_string(),
            })
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// Associated data of a stored record: binds the ciphertext to its record
/// id, instance and chain position, so a ciphertext copied to another row
/// does not decrypt.
pub fn record_aad(record_id: &str, instance: &str, seq: i64) -> Vec<u8> {
    let mut out = b"phr-gateway/audit/record/v1".to_vec();
    push_field(&mut out, record_id.as_bytes());
    push_field(&mut out, instance.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Associated data of a spooled record (no sequence number yet).
pub fn spool_aad(record_id: &str, instance: &str) -> Vec<u8> {
    let mut out = b"phr-gateway/audit/spool/v1".to_vec();
    push_field(&mut out, record_id.as_bytes());
    push_field(&mut out, instance.as_bytes());
    out
}
