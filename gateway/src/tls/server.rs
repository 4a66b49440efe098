//! Building a listener's rustls `ServerConfig` from its config section.
//! Called at start-up and on every reload; the result is swapped in whole, so connections
//! already open keep the config they were accepted with.

use super::cert_check::{self, CertProblem};
use super::sni::SniResolver;
use super::{provider, versions, TlsError};
use crate::config::{ClientAuth, Listener};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use std::path::Path;
use std::sync::Arc;

/// Builds and checks everything a listener needs; any problem refuses the whole listener.
pub fn build(listener: &Listener) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut resolver: Option<SniResolver> = None;
    for c in &listener.certificates {
        let chain = cert_check::read_chain(&c.cert_file).map_err(|problem| TlsError::Certificate {
            file: c.cert_file.clone(),
            problem,
        })?;
        cert_check::check_chain(&chain).map_err(|problem| TlsError::Certificate {
            file: c.cert_file.clone(),
            problem,
        })?;
        let key_der = cert_check::read_key(&c.key_file).map_err(|reason| TlsError::Key {
            file: c.key_file.clone(),
            reason: reason.to_string(),
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::Key {
                file: c.key_file.clone(),
                reason: e.to_string(),
            })?;
        let names = if c.server_names.is_empty() {
            cert_check::dns_names(&chain[0])
        } else {
            c.server_names.clone()
        };
        let key = Arc::new(CertifiedKey::new(chain, signing_key));
        if key.keys_match().is_err() {
            return Err(TlsError::KeyMismatch {
                cert: c.cert_file.clone(),
                key: c.key_file.clone(),
            });
        }
        let r = resolver.get_or_insert_with(|| SniResolver::new(key.clone()));
        for name in &names {
            r.add(name, key.clone());
        }
    }
    let resolver = resolver.ok_or(TlsError::Certificate {
        file: Default::default(),
        problem: CertProblem::NoCertificate,
    })?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(listener.tls_min_version))?;
    let builder = match (listener.client_auth, &listener.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca_file)) => {
            let roots = read_roots(ca_file).map_err(|reason| TlsError::ClientCa {
                file: ca_file.clone(),
                reason: reason.to_string(),
            })?;
            let mut crls = Vec::new();
            for file in &listener.crl_files {
                crls.extend(read_crls(file).map_err(|reason| TlsError::Crl {
                    file: file.clone(),
                    reason: reason.to_string(),
                })?);
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).with_crls(crls);
            if mode == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::ClientCa {
                file: ca_file.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The suite is the gateway's choice (AES-128-GCM first, see `provider`), not the
    // client's: most clients list AES-256 first, which costs more for no gain the
    // guideline asks for. A client that offers only ChaCha20 still gets it.
    config.ignore_client_order = true;
    // Tickets keep resumption stateless across reloads and cheap for returning clients.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Reads a PEM CA bundle into a root store; an empty or unparsable bundle is an error,
/// because an empty store would refuse every client without saying why.
pub fn read_roots(file: &Path) -> Result<RootCertStore, PemBundleError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file)? {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(PemBundleError::NoCaCertificate);
    }
    Ok(roots)
}

fn read_crls(file: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PemBundleError> {
    let crls = CertificateRevocationListDer::pem_file_iter(file)?.collect::<Result<Vec<_>, _>>()?;
    if crls.is_empty() {
        return Err(PemBundleError::NoCrl);
    }
    Ok(crls)
}

/// Why a CA bundle or CRL file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PemBundleError {
    /// The file cannot be read, or holds a damaged PEM section.
    #[error("{0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused a CA certificate.
    #[error("{0}")]
    Rejected(#[from] rustls::Error),
    /// The bundle holds no CA certificate.
    #[error("no CA certificate found in the bundle")]
    NoCaCertificate,
    /// The file holds no CRL.
    #[error("no PEM X509 CRL found in the file")]
    NoCrl,
}
