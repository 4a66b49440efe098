//! How many cases each property/fuzz test runs (issue 17 item 6; EX-FILE-1,
//! EX-SEG-1, AUTH-ID-1, AV-DOS-1: the parsers that read hostile bytes).
//!
//! Why an environment variable and a small default: the properties run in
//! every `cargo test` (so CI runs them, bounded), and a longer hunt is the same
//! tests with more cases: `PHR_FUZZ_CASES=20000 cargo test -p phr-gateway --lib fuzz`.
//! Failing inputs are saved by proptest under `gateway/proptest-regressions/`
//! and replayed first on every later run.

use proptest::test_runner::Config;

/// Cases per property when `PHR_FUZZ_CASES` is not set: the whole set stays
/// well under a minute in a debug `cargo test` on a 2-core machine.
const DEFAULT_CASES: u32 = 96;

/// The proptest configuration every fuzz property uses.
pub(crate) fn config() -> Config {
    Config {
        cases: cases(),
        ..Config::default()
    }
}

/// `PHR_FUZZ_CASES` if it is a positive number, else [`DEFAULT_CASES`].
pub(crate) fn cases() -> u32 {
    std::env::var("PHR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CASES)
}
