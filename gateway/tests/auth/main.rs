//! Token authentication (issue 4): the auth module through its public API, with real
//! RSA, EC and Ed25519 keys, a JWKS source that rotates, DPoP proofs and revocation.
//! End-to-end tests through the binary are in the workspace's tests/auth_e2e.rs.

mod assertion;
mod common;
mod config;
mod discovery;
mod dpop;
mod jwks_rotation;
mod policy;
mod validation;
