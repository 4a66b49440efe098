//! Certificate checks run before a certificate is served (EX-TLS-4, EX-TLS-5).
//!
//! IPA's TLS guideline forbids SHA-1 signed certificates and keys below RSA 2048 /
//! ECDSA 256, and a certificate outside its validity window makes every careful client
//! fail closed; refusing at start-up (or keeping the last good set on reload) turns
//! an outage at the client into an error message for the operator.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use x509_parser::prelude::*;

/// What is wrong with a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// The file cannot be read; carries the I/O error.
    Unreadable(String),
    /// The file holds no PEM `CERTIFICATE` block.
    NoCertificate,
    /// A block is not valid PEM or X.509; carries the parser's message.
    Unparsable(String),
    /// The validity window ended before now.
    Expired {
        /// Subject DN of the offending certificate.
        subject: String,
        /// Its `notAfter`, as printed by the parser.
        not_after: String,
    },
    /// The validity window starts after now (a clock or issuance mistake).
    NotYetValid {
        /// Subject DN of the offending certificate.
        subject: String,
        /// Its `notBefore`, as printed by the parser.
        not_before: String,
    },
    /// An RSA key below 2048 bits (EX-TLS-4).
    WeakRsaKey {
        /// Subject DN of the offending certificate.
        subject: String,
        /// Key size in bits.
        bits: usize,
    },
    /// An EC key below 256 bits (EX-TLS-4).
    WeakEcKey {
        /// Subject DN of the offending certificate.
        subject: String,
        /// Key size in bits.
        bits: usize,
    },
    /// Signed with SHA-1, prohibited since IPA's TLS guideline 3.0 (EX-TLS-4).
    Sha1Signature {
        /// Subject DN of the offending certificate.
        subject: String,
    },
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "cannot read the certificate file: {e}. Fix: check the path and permissions"),
            Self::NoCertificate => write!(f, "no PEM certificate found. Fix: the file must contain -----BEGIN CERTIFICATE----- blocks, leaf first"),
            Self::Unparsable(e) => write!(f, "the certificate cannot be parsed: {e}. Fix: re-export it as PEM X.509"),
            Self::Expired { subject, not_after } => write!(f, "certificate {subject:?} expired on {not_after}. Fix: renew it"),
            Self::NotYetValid { subject, not_before } => write!(f, "certificate {subject:?} is not valid before {not_before}. Fix: check the clock or use a certificate that is valid now"),
            Self::WeakRsaKey { subject, bits } => write!(f, "certificate {subject:?} has a {bits}-bit RSA key; at least 2048 bits are required (EX-TLS-4). Fix: reissue with RSA 2048+ or ECDSA P-256"),
            Self::WeakEcKey { subject, bits } => write!(f, "certificate {subject:?} has a {bits}-bit EC key; at least 256 bits are required (EX-TLS-4). Fix: reissue with ECDSA P-256 or P-384"),
            Self::Sha1Signature { subject } => write!(f, "certificate {subject:?} is signed with SHA-1, which is prohibited (EX-TLS-4). Fix: reissue with a SHA-256 signature"),
        }
    }
}

/// The SHA-1 signature algorithms (RSA, ECDSA, DSA).
const SHA1_SIGNATURES: [&str; 4] = [
    "1.2.840.113549.1.1.5",
    "1.2.840.10045.4.1",
    "1.2.840.10040.4.3",
    "1.3.14.3.2.29",
];

/// Reads a PEM chain (leaf first).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertProblem> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| CertProblem::Unreadable(e.to_string()))?;
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertProblem::Unparsable(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertProblem::NoCertificate);
    }
    Ok(chain)
}

/// Reads a PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, rustls::pki_types::pem::Error> {
    PrivateKeyDer::from_pem_file(path)
}

/// Checks every certificate of a served chain: validity now, key strength, no SHA-1.
/// A self-signed certificate at the end of the chain (a root sent along) is not checked
/// for its signature algorithm, since no client verifies a root's own signature.
pub fn check_chain(chain: &[CertificateDer<'_>]) -> Result<(), CertProblem> {
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertProblem::Unparsable(e.to_string()))?;
        let subject = cert.subject().to_string();
        let validity = cert.validity();
        let now = ASN1Time::now();
        if validity.not_after < now {
            return Err(CertProblem::Expired {
                subject,
                not_after: validity.not_after.to_string(),
            });
        }
        if validity.not_before > now {
            return Err(CertProblem::NotYetValid {
                subject,
                not_before: validity.not_before.to_string(),
            });
        }
        let self_signed = cert.subject() == cert.issuer();
        if !self_signed || chain.len() == 1 {
            let oid = cert.signature_algorithm.algorithm.to_id_string();
            if SHA1_SIGNATURES.contains(&oid.as_str()) {
                return Err(CertProblem::Sha1Signature { subject });
            }
        }
        check_key_strength(&cert, subject)?;
    }
    Ok(())
}

fn check_key_strength(cert: &X509Certificate<'_>, subject: String) -> Result<(), CertProblem> {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() < 2048 => Err(CertProblem::WeakRsaKey {
            subject,
            bits: rsa.key_size(),
        }),
        Ok(PublicKey::EC(ec)) if ec.key_size() < 256 => Err(CertProblem::WeakEcKey {
            subject,
            bits: ec.key_size(),
        }),
        _ => Ok(()),
    }
}

/// The DNS names a certificate is valid for, used for SNI when the config names none.
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    names
}
