//! Helpers shared by this module's tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A key prefix no other test or test run shares.
pub(super) fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "phrtest:{}:{nanos}:{}:{test}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
