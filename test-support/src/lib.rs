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
