//! Fetching JWKS documents through the gateway's own connector, so the identity
//! provider is a residency target like any upstream (DATA-JP-1): its address is checked
//! on every new connection, and its TLS is verified against a configured CA bundle.

use super::jwks::{BoxFuture, JwksFetcher};
use super::IssuerConfig;
use crate::residency::egress::UpstreamResolver;
use crate::residency::policy::ResidencyPolicy;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A JWKS (or discovery document) larger than this is refused: both are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Used for `https` JWKS URLs when the issuer names no `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the JWKS clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    /// An issuer's CA bundle (`ca_file`, or the system bundle) is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// One pooled client per issuer with a `jwks_url` or discovery.
pub struct GatewayJwksFetcher {
    clients: HashMap<String, crate::proxy::GatewayClient>,
}

impl GatewayJwksFetcher {
    /// One client per issuer with a `jwks_url` or discovery URL, dialling through `resolver` and checking
    /// every new connection's address against `policy` (DATA-JP-1). `https` URLs are
    /// verified against the issuer's `ca_file`, or the system bundle without one.
    pub fn new(
        issuers: &[IssuerConfig],
        resolver: Arc<UpstreamResolver>,
        policy: Arc<ResidencyPolicy>,
    ) -> Result<Self, FetcherError> {
        let mut clients = HashMap::new();
        for issuer in issuers {
            // With discovery, the `jwks_uri` must be on the discovery URL's host
            // (crate::auth::discovery), so one client checked as that target serves both.
            let Some(url) = issuer.fetch_url() else { continue };
            let url = &url;
            let tls = if url.starts_with("https://") {
                let ca = issuer.ca_file.as_deref().unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
                Some(crate::tls::upstream::client_config_for_ca(ca)?)
            } else {
                None
            };
            let target = crate::residency::targets::jwks_target(issuer, url);
            let client =
                crate::proxy::gateway_client(target, tls, Duration::from_secs(3), resolver.clone(), policy.clone());
            clients.insert(issuer.issuer.clone(), client);
        }
        Ok(Self { clients })
    }
}

impl JwksFetcher for GatewayJwksFetcher {
    fn fetch<'a>(&'a self, issuer: &'a str, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            let client = self.clients.get(issuer).ok_or("no client for this issuer")?;
            let req = http::Request::get(url)
                .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
                .header(
                    http::header::HOST,
                    http::Uri::try_from(url)
                        .ok()
                        .and_then(|u| u.authority().map(|a| a.to_string()))
                        .unwrap_or_default(),
                )
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| {
                    format!(
                        "{e}: {}",
                        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                    )
                })?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(body.to_bytes())
        })
    }
}
