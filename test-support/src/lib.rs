//! Test helpers shared by the workspace's tests: services that may be absent
//! ([`services`]), one PostgreSQL schema per test ([`pg`]), running the gateway's
//! commands ([`cli`]), token fixtures ([`tokens`]) and configuration text ([`config`]).
//!
//! A dev-dependency only. It does not depend on `phr-gateway`, so the gateway's own
//! unit tests can use it without a second copy of the library's types.

pub mod cli;
pub mod config;
pub mod pg;
pub mod services;
pub mod tokens;

/// Fresh random hex (`bytes` random bytes), for schema names, key prefixes and ids.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("OS random");
    hex::encode(b)
}

/// Prints `line` (a test's counts) past the test harness's output capture, so a plain
/// `cargo test` run (CI) shows it for passing tests too, as the skip notices are.
pub fn report(line: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{line}\n").as_bytes());
}
