//! The list of blocked subjects (LOG-ACC-1 follow-up, EX-IDS-1 response).
//!
//! A subject blocked for bulk access stays blocked until an operator has
//! reviewed it and unblocks it (`phr-gateway subjects unblock`), across
//! restarts and on every gateway process: the gateway backs [`BlockStore`]
//! with its database. [`MemoryBlockStore`] is the in-process implementation
//! for tests and single-process demos.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

/// Why a subject was blocked (stored with the block and shown to operators).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// The bulk-access detector saw too many distinct patients.
    BulkAccess {
        /// Distinct patients seen.
        distinct_patients: u32,
        /// Within this window.
        window: Duration,
    },
    /// An operator blocked the subject by hand.
    Operator {
        /// The operator's note.
        note: String,
    },
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::BulkAccess {
                distinct_patients,
                window,
            } => {
                write!(
                    f,
                    "bulk access: {distinct_patients} distinct patients within {}s",
                    window.as_secs()
                )
            }
            BlockReason::Operator { note } => write!(f, "blocked by operator: {note}"),
        }
    }
}

/// Where blocked subjects are kept. Checked on every authenticated request,
/// so `is_blocked` must be cheap (the gateway caches its database table).
pub trait BlockStore: Send + Sync {
    /// Blocks `subject` (idempotent; a repeat keeps the first reason).
    fn block(&self, subject: &str, reason: &BlockReason);
    /// Lifts the block; `false` when the subject was not blocked.
    fn unblock(&self, subject: &str) -> bool;
    /// Whether `subject` is blocked.
    fn is_blocked(&self, subject: &str) -> bool;
}

/// A block as kept by [`MemoryBlockStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    /// Why.
    pub reason: BlockReason,
    /// When.
    pub since: SystemTime,
}

/// In-memory [`BlockStore`]. Blocks grow only through alerts (at most one per
/// subject per window) or operators, so it is not capped.
#[derive(Debug, Default)]
pub struct MemoryBlockStore {
    blocks: RwLock<HashMap<String, BlockRecord>>,
}

impl MemoryBlockStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The block of `subject`, if any (for `subjects list`).
    /// Every blocked subject (to reconcile with the store's list).
    pub fn subjects(&self) -> Vec<String> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    #[cfg(test)]
    /// The block of `subject`, if any.
    pub fn get(&self, subject: &str) -> Option<BlockRecord> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
            .cloned()
    }
}

impl BlockStore for MemoryBlockStore {
    fn block(&self, subject: &str, reason: &BlockReason) {
        let mut map = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        map.entry(subject.to_owned()).or_insert_with(|| BlockRecord {
            reason: reason.clone(),
            since: SystemTime::now(),
        });
    }

    fn unblock(&self, subject: &str) -> bool {
        self.blocks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(subject)
            .is_some()
    }

    fn is_blocked(&self, subject: &str) -> bool {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_unblock() {
        let s = MemoryBlockStore::new();
        assert!(!s.is_blocked("dr-a"));
        s.block("dr-a", &BlockReason::Operator { note: "review".into() });
        s.block(
            "dr-a",
            &BlockReason::BulkAccess {
                distinct_patients: 9,
                window: Duration::from_secs(60),
            },
        );
        assert!(s.is_blocked("dr-a"));
        assert!(!s.is_blocked("dr-b"));
        assert_eq!(
            s.get("dr-a").unwrap().reason,
            BlockReason::Operator { note: "review".into() }
        );
        assert!(s.unblock("dr-a"));
        assert!(!s.unblock("dr-a"), "second unblock reports nothing to do");
        assert!(!s.is_blocked("dr-a"));
    }
}
