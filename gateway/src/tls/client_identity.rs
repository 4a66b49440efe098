//! The verified client certificate, as later layers see it (EX-MTLS-1, AUTH-ID-1).

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// Who the client proved to be during the TLS handshake. Only built from a certificate
/// that rustls has already verified against the listener's client CA bundle and CRLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject distinguished name, e.g. `CN=clinic-a, O=Example Clinic`.
    pub subject: String,
    /// DNS, email and URI subject alternative names.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate: what RFC 8705 certificate-bound tokens refer to.
    pub sha256: [u8; 32],
}

impl ClientIdentity {
    /// Extracts subject, SANs and fingerprint from a certificate rustls has verified.
    /// A certificate x509-parser cannot read keeps its fingerprint with an empty subject.
    pub fn from_der(der: &CertificateDer<'_>) -> Self {
        let sha256: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let (subject, sans) = match X509Certificate::from_der(der) {
            Ok((_, cert)) => {
                let mut sans = Vec::new();
                if let Ok(Some(san)) = cert.subject_alternative_name() {
                    for name in &san.value.general_names {
                        match name {
                            GeneralName::DNSName(n) => sans.push(format!("DNS:{n}")),
                            GeneralName::RFC822Name(n) => sans.push(format!("email:{n}")),
                            GeneralName::URI(n) => sans.push(format!("URI:{n}")),
                            _ => {}
                        }
                    }
                }
                (cert.subject().to_string(), sans)
            }
            // rustls verified it, so this cannot happen in practice; keep the fingerprint.
            Err(_) => (String::new(), Vec::new()),
        };
        Self { subject, sans, sha256 }
    }

    /// Lowercase hex fingerprint, as written in logs and access records.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}
