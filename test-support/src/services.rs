//! Services a test may need (PostgreSQL, Redis) and may not have.
//!
//! Without the service's variable a test skips, saying so past the harness's output
//! capture; with `PHR_TEST_REQUIRE_SERVICES=1` a missing service is a failure instead,
//! so CI cannot pass by silently skipping.

/// The URL in the environment variable `var`, or `None` (after a visible skip notice)
/// when it is unset or empty. Panics instead when `PHR_TEST_REQUIRE_SERVICES=1`.
pub fn url_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} not set but PHR_TEST_REQUIRE_SERVICES=1");
            }
            // Written past the test harness's output capture, so a plain run shows it.
            let notice = format!("skipping: {var} not set (set it, or run bash .ci/run)\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
            None
        }
    }
}

/// The test PostgreSQL (`PHR_TEST_POSTGRES_URL`), or `None`: see [`url_or_skip`].
pub fn postgres_url() -> Option<String> {
    url_or_skip("PHR_TEST_POSTGRES_URL")
}

/// The test Redis (`PHR_TEST_REDIS_URL`), or `None`: see [`url_or_skip`].
pub fn redis_url() -> Option<String> {
    url_or_skip("PHR_TEST_REDIS_URL")
}
