//! When the certificates of the active configuration expire, for the
//! `phr_tls_certificate_expiry_timestamp_seconds` gauge and its alert (EX-TLS-5: an
//! expired certificate makes every careful client fail closed, so the operator needs
//! warning weeks ahead, not the outage).
//!
//! Read once per configuration build (start-up and every reload, after the TLS
//! configuration itself was built from the same files), so a renewed certificate shows
//! its new date as soon as the reload that serves it succeeds.

use crate::config::{ClientAuth, Config};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use x509_parser::prelude::*;

/// One certificate's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// Where it is configured: `listeners.<name>` or `upstreams.<name>`.
    pub section: String,
    /// `server` (served to clients), `client_ca` (trusted for client certificates),
    /// `upstream_client` (presented to an upstream) or `upstream_ca` (trusted for an
    /// upstream's certificate).
    pub role: &'static str,
    /// The certificate's subject DN.
    pub subject: String,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Every certificate the configuration serves or trusts: each served leaf, each CA of a
/// client CA bundle (when client certificates are requested), and the upstreams' client
/// certificates and CA bundles.
pub fn of_config(config: &Config) -> Vec<CertExpiry> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let section = format!("listeners.{}", l.name);
        for c in &l.certificates {
            read(&c.cert_file, &section, "server", true, &mut out);
        }
        if let (ClientAuth::Optional | ClientAuth::Required, Some(ca)) = (l.client_auth, &l.client_ca_file) {
            read(ca, &section, "client_ca", false, &mut out);
        }
    }
    for (name, u) in &config.upstreams {
        let section = format!("upstreams.{name}");
        if let Some(cert) = &u.client_cert_file {
            read(cert, &section, "upstream_client", true, &mut out);
        }
        if let Some(ca) = &u.ca_file {
            read(ca, &section, "upstream_ca", false, &mut out);
        }
    }
    out
}

/// Appends the expiry of the certificates in the PEM file `file` (only the first, the
/// leaf, when `leaf_only`). A file that cannot be read is skipped: the configuration
/// build that just used it reports such problems, this is only monitoring.
fn read(file: &Path, section: &str, role: &'static str, leaf_only: bool, out: &mut Vec<CertExpiry>) {
    let Ok(iter) = CertificateDer::pem_file_iter(file) else {
        return;
    };
    for der in iter.take(if leaf_only { 1 } else { usize::MAX }).flatten() {
        if let Some(e) = expiry(&der, section, role) {
            out.push(e);
        }
    }
}

fn expiry(der: &CertificateDer<'_>, section: &str, role: &'static str) -> Option<CertExpiry> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(CertExpiry {
        section: section.to_string(),
        role,
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_and_subject_of_a_pem_chain() {
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        params.distinguished_name.push(rcgen::DnType::CommonName, "gw.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("chain.pem");
        std::fs::write(&file, format!("{}{}", cert.pem(), cert.pem())).unwrap();

        let mut out = Vec::new();
        read(&file, "listeners.public", "server", true, &mut out);
        assert_eq!(
            out,
            vec![CertExpiry {
                section: "listeners.public".into(),
                role: "server",
                subject: "CN=gw.example".into(),
                // 2031-05-17T00:00:00Z
                not_after: 1_936_742_400,
            }]
        );
        out.clear();
        read(&file, "upstreams.fhir", "upstream_ca", false, &mut out);
        assert_eq!(out.len(), 2, "a bundle: every certificate");
        read(&dir.path().join("missing.pem"), "x", "server", true, &mut out);
        assert_eq!(out.len(), 2, "an unreadable file adds nothing");
    }
}
