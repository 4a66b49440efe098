//! Every place the configuration sends data to or keeps data in, as residency
//! [`Target`]s. Anything the gateway connects to must appear here, or it escapes both
//! the start-up declaration check and the report (DATA-JP-1).

use super::jurisdiction::{Target, TargetKind};
use crate::config::endpoint::{EndpointError, EndpointUrl};
use crate::config::Config;
use crate::util::redact::redact_url;

/// Why the hosts of a target could not be read from its configured URL.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// An upstream endpoint URL is unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A JWKS URL does not parse.
    #[error("{url}: {source}")]
    JwksUrl {
        /// The URL.
        url: String,
        /// Why it does not parse.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// A JWKS URL names no host.
    #[error("{url}: no host")]
    JwksNoHost {
        /// The URL.
        url: String,
    },
    /// The PostgreSQL store URL does not parse.
    #[error("{url}: {source}")]
    StoreUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it does not parse.
        #[source]
        source: sqlx::Error,
    },
    /// The Redis URL does not parse.
    #[error("{url}: {source}")]
    RedisUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it does not parse.
        #[source]
        source: redis::RedisError,
    },
}

/// Every target of `config`, sorted by kind then name: upstreams, JWKS URLs, the store
/// when it is PostgreSQL (a SQLite file is local disk) and Redis, each with its declared
/// jurisdiction and `in_cluster` flag; passwords in URLs are redacted.
pub fn from_config(config: &Config) -> Vec<Target> {
    let mut targets: Vec<Target> = config
        .upstreams
        .iter()
        .map(|(name, u)| upstream_target(name, u))
        .collect();
    for issuer in &config.auth.issuers {
        // With discovery the gateway connects to the discovery URL's host, and the
        // `jwks_uri` must be on that same host (crate::auth::discovery).
        if let Some(url) = issuer.fetch_url() {
            targets.push(jwks_target(issuer, &url));
        }
    }
    if let Some(url) = config.store.url.as_deref().filter(|u| u.starts_with("postgres")) {
        targets.push(Target {
            kind: TargetKind::Database,
            name: "store".into(),
            url_or_host: redact_url(url),
            jurisdiction: config.store.jurisdiction,
            in_cluster: config.store.in_cluster,
        });
    }
    if let Some(redis) = &config.redis {
        targets.push(Target {
            kind: TargetKind::Redis,
            name: "redis".into(),
            url_or_host: redact_url(&redis.url),
            jurisdiction: redis.jurisdiction,
            in_cluster: redis.in_cluster,
        });
    }
    targets.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    targets
}

/// The target a JWKS fetch is checked as: the gateway sends requests there.
pub fn jwks_target(issuer: &crate::config::auth::IssuerConfig, url: &str) -> Target {
    Target {
        kind: TargetKind::Jwks,
        name: issuer.issuer.clone(),
        url_or_host: url.to_string(),
        jurisdiction: issuer.jurisdiction,
        in_cluster: issuer.in_cluster,
    }
}

/// The target an upstream's connections are checked as.
pub fn upstream_target(name: &str, u: &crate::config::Upstream) -> Target {
    Target {
        kind: TargetKind::Upstream,
        name: name.to_string(),
        url_or_host: u.endpoints.join(", "),
        jurisdiction: u.jurisdiction,
        in_cluster: u.in_cluster,
    }
}

/// The `(host, port)` pairs the gateway connects to for `target`, from the config that
/// produced it. A PostgreSQL store on a Unix socket has none (it is this machine).
pub fn hosts_of(config: &Config, target: &Target) -> Result<Vec<(String, u16)>, HostsError> {
    match target.kind {
        TargetKind::Upstream => config
            .upstreams
            .get(&target.name)
            .map(|u| u.endpoints.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|url| {
                EndpointUrl::parse(url)
                    .map(|ep| (ep.host, ep.port))
                    .map_err(HostsError::from)
            })
            .collect(),
        TargetKind::Jwks => {
            let uri: http::Uri = target.url_or_host.parse().map_err(|source| HostsError::JwksUrl {
                url: target.url_or_host.clone(),
                source,
            })?;
            let host = uri.host().ok_or_else(|| HostsError::JwksNoHost {
                url: target.url_or_host.clone(),
            })?;
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
            Ok(vec![(host.trim_matches(['[', ']']).to_string(), port)])
        }
        TargetKind::Database => {
            let url = config.store.url.as_deref().unwrap_or_default();
            let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|source| HostsError::StoreUrl {
                url: redact_url(url),
                source,
            })?;
            let host = options.get_host();
            if host.starts_with('/') {
                return Ok(Vec::new());
            }
            Ok(vec![(host.to_string(), options.get_port())])
        }
        TargetKind::Redis => {
            let url = config.redis.as_ref().map(|r| r.url.as_str()).unwrap_or_default();
            let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|source| HostsError::RedisUrl {
                url: redact_url(url),
                source,
            })?;
            match info.addr() {
                redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                    Ok(vec![(host.clone(), *port)])
                }
                _ => Ok(Vec::new()),
            }
        }
        // Not produced by `from_config`: nothing the gateway connects to by itself.
        TargetKind::Issuer | TargetKind::Export | TargetKind::AuditLog => Ok(Vec::new()),
    }
}
