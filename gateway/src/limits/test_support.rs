//! Helpers shared by this module's tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis URL from `PHR_TEST_REDIS_URL`; `None` (with a visible notice)
/// when unset, unless `PHR_TEST_REQUIRE_SERVICES=1`, where a missing service
/// is a failure rather than a skip.
pub(super) fn redis_url_or_skip() -> Option<String> {
    match std::env::var("PHR_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PHR_TEST_REDIS_URL not set but PHR_TEST_REQUIRE_SERVICES=1");
            }
            // Written past the test harness's output capture, so a plain run shows it.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"skipping: PHR_TEST_REDIS_URL not set (set it, or run bash .ci/run)\n",
            );
            None
        }
    }
}

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
