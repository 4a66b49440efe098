//! The subject block list as the running gateway keeps it, and the once-a-second sync of
//! revocations and blocks from the store, so every instance sharing a PostgreSQL store
//! enforces a revocation within two seconds (ACL-ACCT-1).

use crate::auth::MemoryRevocations;
use crate::limits::subject_blocks::{BlockReason, BlockStore, MemoryBlockStore};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// The block list: in memory for the request path, written through to the store, and
/// refreshed from it (an operator's `subjects unblock` reaches every instance).
pub struct StoreBlocks {
    memory: MemoryBlockStore,
    store: Store,
}

impl StoreBlocks {
    /// An empty list that writes through to `store`; [`spawn_sync`] fills it.
    pub fn new(store: Store) -> Self {
        Self {
            memory: MemoryBlockStore::new(),
            store,
        }
    }
}

impl BlockStore for StoreBlocks {
    fn block(&self, subject: &str, reason: &BlockReason) {
        self.memory.block(subject, reason);
        let (store, subject, reason) = (self.store.clone(), subject.to_string(), reason.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.block_subject(&subject, &reason).await {
                tracing::error!(error = %e, "cannot persist a subject block; it holds in this instance only");
            }
        });
    }
    fn unblock(&self, subject: &str) -> bool {
        let (store, s) = (self.store.clone(), subject.to_string());
        tokio::spawn(async move {
            let _ = store.unblock_subject(&s).await;
        });
        self.memory.unblock(subject)
    }
    fn is_blocked(&self, subject: &str) -> bool {
        self.memory.is_blocked(subject)
    }
}

/// Copies revocations and blocks from the store into memory every second. A failed
/// read keeps the last good lists (and says so): revocations never silently vanish.
pub fn spawn_sync(store: Store, revocations: Arc<MemoryRevocations>, blocks: Arc<StoreBlocks>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.list_revocations().await {
                Ok(snap) => revocations.replace(
                    snap.jtis,
                    snap.subjects
                        .into_iter()
                        .map(|((iss, sub), t)| (iss, sub, t.max(0) as u64)),
                ),
                Err(e) => tracing::warn!(error = %e, "cannot read revocations from the store; keeping the last list"),
            }
            match store.list_blocked().await {
                Ok(list) => {
                    let wanted: std::collections::HashSet<String> = list.iter().map(|b| b.subject.clone()).collect();
                    for b in &list {
                        if !blocks.memory.is_blocked(&b.subject) {
                            blocks
                                .memory
                                .block(&b.subject, &BlockReason::Operator { note: b.reason.clone() });
                        }
                    }
                    for s in blocks.memory.subjects() {
                        if !wanted.contains(&s) {
                            blocks.memory.unblock(&s);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the block list from the store; keeping the last list")
                }
            }
        }
    });
}
