//! Reading the spool back for replay (LOG-ACC-1, LOG-PROT-1).
//!
//! Decrypts spooled records with the data keys spooled beside them, in
//! spool order, in either record format (see [`super::record_codec`]: a
//! spool written by an older gateway holds v1 JSON). A record whose key is missing or whose ciphertext does not
//! open is an error, not a skip: silently dropping an acknowledged record
//! would defeat the spool.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::crypto::{spool_aad, DataKey, KeyEncryptionKey};
use super::record::AccessRecord;
use super::record_codec;
use super::spool::SpoolEntry;
use super::AuditError;

/// Opens every spooled record; returns `(record_id, record)` in spool order.
pub fn open_spooled(
    entries: Vec<SpoolEntry>,
    kek: &dyn KeyEncryptionKey,
    instance: &str,
) -> Result<Vec<(String, AccessRecord)>, AuditError> {
    let mut keys: HashMap<String, DataKey> = HashMap::new();
    let mut out = Vec::new();
    for e in entries {
        match e {
            SpoolEntry::Key { key_id, wrapped, .. } => {
                let key = DataKey::unwrap_from(&key_id, kek, &wrapped)?;
                keys.insert(key_id, key);
            }
            SpoolEntry::Record {
                record_id,
                key_id,
                nonce,
                ciphertext,
            } => {
                let key = keys
                    .get(&key_id)
                    .ok_or_else(|| AuditError::MissingKey(key_id.clone()))?;
                let plain =
                    Zeroizing::new(key.open(&record_id, &nonce, &spool_aad(&record_id, instance), &ciphertext)?);
                out.push((record_id, record_codec::decode(&plain)?));
            }
        }
    }
    Ok(out)
}
