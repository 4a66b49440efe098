//! The deployment under test: `https://HOST[:PORT]/BASE`, the CAs its certificate must
//! chain to, and one verified HTTPS client for the checks that send requests.

use super::http::{self, Response};
use super::ProbeInputError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where the system keeps its CA bundle on common distributions; used without `--ca`.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Time allowed for each connect, handshake and response.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed probe URL.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The URL as given.
    pub url: String,
    /// Host name or address (no brackets).
    pub host: String,
    /// Port (443 by default).
    pub port: u16,
    /// The base path, always ending in `/` (e.g. `/fhir/`).
    pub base: String,
}

impl ProbeTarget {
    /// Parses `https://HOST[:PORT]/BASE`; anything but `https` is refused, because the
    /// checks are about the deployment's TLS.
    pub fn parse(url: &str) -> Result<Self, ProbeInputError> {
        let bad = |why: &str| ProbeInputError(format!("{url:?}: {why}; expected https://HOST[:PORT]/BASE"));
        let uri: ::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let mut base = uri.path().to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Self {
            url: url.to_string(),
            host,
            port: uri.port_u16().unwrap_or(443),
            base,
        })
    }

    /// The name the certificate must carry (a DNS name or an IP address).
    pub fn server_name(&self) -> Result<ServerName<'static>, ProbeInputError> {
        ServerName::try_from(self.host.clone())
            .map_err(|_| ProbeInputError(format!("{:?} is not a valid host name", self.host)))
    }

    /// `host:port` for the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The first address the host resolves to that accepts a TCP connection (`localhost`
    /// may resolve to `::1` first while the deployment listens on 127.0.0.1 only).
    pub async fn address(&self) -> Result<SocketAddr, ProbeInputError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| ProbeInputError(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut errors = Vec::new();
        for addr in &addrs {
            match http::tcp(*addr, TIMEOUT).await {
                Ok(_) => return Ok(*addr),
                Err(e) => errors.push(e),
            }
        }
        if addrs.is_empty() {
            return Err(ProbeInputError(format!("{} resolved to no address", self.host)));
        }
        Err(ProbeInputError(format!(
            "{} is not reachable: {}",
            self.authority(),
            errors.join("; ")
        )))
    }
}

/// The CA certificates to verify the deployment against: `ca` when given, else the
/// system bundle.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, ProbeInputError> {
    if let Some(ca) = ca {
        return crate::tls::server::read_roots(ca).map_err(|e| ProbeInputError(format!("--ca {}: {e}", ca.display())));
    }
    for bundle in SYSTEM_BUNDLES {
        if let Ok(roots) = crate::tls::server::read_roots(Path::new(bundle)) {
            return Ok(roots);
        }
    }
    Err(ProbeInputError(
        "no --ca given and no system CA bundle found; pass --ca with the deployment's CA certificate".into(),
    ))
}

/// Sends requests to the deployment over verified TLS (any version and suite the
/// gateway's provider supports, so request checks do not depend on the TLS checks).
pub struct Client {
    target: ProbeTarget,
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl Client {
    /// A client for `target` trusting `roots`.
    pub async fn new(target: &ProbeTarget, roots: RootCertStore) -> Result<Self, ProbeInputError> {
        let mut config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| ProbeInputError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            target: target.clone(),
            addr: target.address().await?,
            name: target.server_name()?,
            config: Arc::new(config),
        })
    }

    /// `GET BASE + rel` (rel without a leading `/`), with a bearer token if given.
    pub async fn get(&self, rel: &str, token: Option<&str>) -> Result<Response, String> {
        let path = format!("{}{rel}", self.target.base);
        self.get_path(&path, token).await
    }

    /// `GET path` (absolute path), with a bearer token if given.
    pub async fn get_path(&self, path: &str, token: Option<&str>) -> Result<Response, String> {
        let stream = http::tls(self.addr, self.name.clone(), self.config.clone(), TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let headers: Vec<(&str, String)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default();
        http::get(stream, &self.target.authority(), path, &headers, TIMEOUT).await
    }

    /// The address requests go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target.
    pub fn target(&self) -> &ProbeTarget {
        &self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_base() {
        let t = ProbeTarget::parse("https://localhost:8443/fhir").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base.as_str()),
            ("localhost", 8443, "/fhir/")
        );
        let t = ProbeTarget::parse("https://phr.example.jp").unwrap();
        assert_eq!((t.port, t.base.as_str()), (443, "/"));
        let e = ProbeTarget::parse("http://localhost/fhir").unwrap_err();
        assert!(e.0.contains("https"), "{e}");
    }
}
