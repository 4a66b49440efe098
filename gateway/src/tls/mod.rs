//! TLS with rustls, on both sides of the gateway.
//!
//! * Listeners speak TLS 1.3, and TLS 1.2 only where the config asks (EX-TLS-1, EX-TLS-2);
//!   nothing older exists in rustls at all. Only ECDHE key exchange over X25519, P-256 and
//!   P-384 and only AEAD suites are offered (EX-TLS-4): the provider below is cut down to
//!   exactly that list, so no default added by a future rustls can widen it silently.
//! * Certificates are checked before they are used ([`cert_check`]): a gateway must not start
//!   with an expired certificate, a weak key or a SHA-1 signature (EX-TLS-4).
//! * Mutual TLS per listener ([`server::build`]) with CRLs, and the verified client identity
//!   ([`ClientIdentity`]) handed to later layers (EX-MTLS-1).
//! * Upstream connections verify the backend against a configured CA bundle ([`upstream`]).

pub mod cert_check;
mod client_identity;
pub mod expiry;
pub mod handshake;
pub mod server;
mod sni;
pub mod upstream;

pub use client_identity::ClientIdentity;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use std::path::PathBuf;
use std::sync::Arc;

/// The one crypto provider used everywhere: aws-lc-rs restricted to the IPA
/// high-security profile (ECDHE + AEAD; X25519, P-256, P-384).
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as cs;
    use aws_lc_rs::kx_group as kx;
    Arc::new(CryptoProvider {
        // In the gateway's order of preference (listeners choose by it; see
        // `server::server_config`): AES-128-GCM first, as nginx and HAProxy negotiate
        // by default. AES-128 and AES-256 are both allowed (IPA TLS guideline: AES
        // 128/256-bit in GCM; EX-TLS-4, DATA-ENC-3), and 128 costs fewer rounds per
        // byte; ChaCha20-Poly1305 serves clients that offer nothing else.
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            // TLS 1.2 suites; offered only on listeners that enable 1.2.
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx::X25519, kx::SECP256R1, kx::SECP384R1],
        ..aws_lc_rs::default_provider()
    })
}

/// Protocol versions for a configured minimum: 1.3 alone, or 1.3 and 1.2 (EX-TLS-1).
pub fn versions(min: crate::config::TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        crate::config::TlsVersion::Tls13 => &TLS13_ONLY,
        crate::config::TlsVersion::Tls12 => &TLS13_AND_12,
    }
}

/// Why TLS material could not be used. Every variant names the file, so an operator knows
/// which of several certificates to replace.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate chain is unreadable or fails a [`cert_check`] rule (EX-TLS-4).
    #[error("{file}: {problem}")]
    Certificate {
        /// The certificate file.
        file: PathBuf,
        /// What is wrong with it.
        problem: cert_check::CertProblem,
    },
    /// A private key file is unreadable or in no format rustls accepts.
    #[error("{file}: cannot read the private key: {reason}. Fix: provide a PEM PKCS#8, PKCS#1 or SEC1 key")]
    Key {
        /// The key file.
        file: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The key does not match the certificate's public key, so the handshake could never
    /// succeed; caught at start-up instead.
    #[error("{cert}: the private key in {key} does not belong to this certificate. Fix: pair the certificate with the key it was issued for")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file configured with it.
        key: PathBuf,
    },
    /// The CA bundle client certificates must chain to is unusable (EX-MTLS-1).
    #[error("{file}: cannot use the client CA bundle: {reason}")]
    ClientCa {
        /// The `client_ca_file`.
        file: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A certificate revocation list is unreadable or malformed; the listener is not
    /// started without it rather than accepting revoked clients.
    #[error("{file}: cannot use the CRL: {reason}")]
    Crl {
        /// The CRL file.
        file: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The CA bundle an upstream's certificate must chain to is unusable.
    #[error("{file}: cannot use the upstream CA bundle: {reason}")]
    UpstreamCa {
        /// The upstream's `ca_file`.
        file: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// rustls refused the assembled configuration (e.g. no usable cipher suite).
    #[error("TLS configuration refused by rustls: {0}")]
    Rustls(#[from] rustls::Error),
}
