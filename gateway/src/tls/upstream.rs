//! TLS to the backends (EX-MTLS-1, EX-TLS-1): verified against the upstream's own CA
//! bundle, never against public roots, and with the gateway's client certificate where
//! the backend asks for mutual TLS.

use super::{cert_check, provider, server::read_roots, versions, TlsError};
use crate::config::Upstream;
use rustls::ClientConfig;
use std::sync::Arc;

/// The client config for one upstream, or `None` when all its endpoints are plain HTTP.
pub fn build(upstream: &Upstream) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let Some(ca_file) = &upstream.ca_file else {
        return Ok(None);
    };
    let roots = read_roots(ca_file).map_err(|reason| TlsError::UpstreamCa {
        file: ca_file.clone(),
        reason: reason.to_string(),
    })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(upstream.tls_min_version))?
        .with_root_certificates(roots);
    let mut config = match (&upstream.client_cert_file, &upstream.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = cert_check::read_chain(cert).map_err(|problem| TlsError::Certificate {
                file: cert.clone(),
                problem,
            })?;
            cert_check::check_chain(&chain).map_err(|problem| TlsError::Certificate {
                file: cert.clone(),
                problem,
            })?;
            let key_der = cert_check::read_key(key).map_err(|reason| TlsError::Key {
                file: key.clone(),
                reason: reason.to_string(),
            })?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A client config that trusts exactly the CAs in `ca_file` (JWKS endpoints).
pub fn client_config_for_ca(ca_file: &std::path::Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca_file).map_err(|reason| TlsError::UpstreamCa {
        file: ca_file.to_path_buf(),
        reason: reason.to_string(),
    })?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(crate::config::TlsVersion::Tls12))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
