//! A governor state store with a hard cap on tracked keys (AV-DOS-1).
//!
//! governor's own keyed stores grow with every new key until someone calls
//! `retain_recent`; a flood of random keys (spoofed subjects, rotating IPv6
//! addresses) would grow them without bound. This store never holds more
//! than its capacity: when the shard a new key hashes to is full, the key is
//! counted in a single shared *overflow* bucket instead, so a flood of new
//! keys is limited as one group (and legitimate keys already tracked keep
//! their own budget). The owning [`super::local::LocalLimiter`] evicts
//! expired keys (`retain_recent`) when the store reports it filled up.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;

/// Keys are already keyed SipHash digests, so hashing them again only costs time.
#[derive(Default)]
pub(super) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type DigestMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// Sharded `digest → TAT` map with a per-shard cap and one overflow bucket.
/// Cheap to clone (shared state), so the limiter can keep a handle next to
/// the copy governor owns.
#[derive(Clone)]
pub(super) struct BoundedStore(Arc<StoreInner>);

pub(super) struct StoreInner {
    shards: Box<[Mutex<DigestMap<u64>>]>,
    per_shard: usize,
    overflow: Mutex<Option<u64>>,
    filled: AtomicBool,
    overflow_hits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The closures run under the lock are pure arithmetic; a poisoned lock
    // still holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BoundedStore {
    pub(super) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let n = if max_keys >= 1024 { 16 } else { 1 };
        let shards = (0..n).map(|_| Mutex::new(DigestMap::default())).collect();
        Self(Arc::new(StoreInner {
            shards,
            per_shard: max_keys / n,
            overflow: Mutex::new(None),
            filled: AtomicBool::new(false),
            overflow_hits: AtomicU64::new(0),
        }))
    }

    fn shard(&self, key: u64) -> &Mutex<DigestMap<u64>> {
        // High bits pick the shard; hashbrown uses low and top-7 bits within it.
        &self.0.shards[(key >> 40) as usize % self.0.shards.len()]
    }

    /// True once since the last call if some shard refused a new key.
    pub(super) fn take_filled(&self) -> bool {
        self.0.filled.swap(false, Ordering::Relaxed)
    }

    /// Decisions made in the overflow bucket so far.
    pub(super) fn overflow_hits(&self) -> u64 {
        self.0.overflow_hits.load(Ordering::Relaxed)
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = lock(self.shard(*key));
        if let Some(tat) = map.get_mut(key) {
            let (out, new) = f(Some(Nanos::from(*tat)))?;
            *tat = new.into();
            return Ok(out);
        }
        if map.len() < self.0.per_shard {
            let (out, new) = f(None)?;
            map.insert(*key, new.into());
            return Ok(out);
        }
        drop(map);
        self.0.filled.store(true, Ordering::Relaxed);
        self.0.overflow_hits.fetch_add(1, Ordering::Relaxed);
        let mut overflow = lock(&self.0.overflow);
        let (out, new) = f(overflow.map(Nanos::from))?;
        *overflow = Some(new.into());
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let floor = drop_below.as_u64();
        for s in self.0.shards.iter() {
            lock(s).retain(|_, tat| *tat > floor);
        }
        let mut overflow = lock(&self.0.overflow);
        if overflow.is_some_and(|tat| tat <= floor) {
            *overflow = None;
        }
    }

    fn shrink_to_fit(&self) {
        for s in self.0.shards.iter() {
            lock(s).shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.0.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.shards.iter().all(|s| lock(s).is_empty())
    }
}
