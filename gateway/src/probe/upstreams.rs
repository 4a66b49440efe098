//! `phr-gateway probe upstreams --config F`: the hospital side, checked from the
//! gateway's own host with the gateway's own parts, so the probe sees exactly what the
//! gateway would: the upstream resolver (hosts file, then DNS) and residency policy
//! (DATA-JP-1, `residency::egress`), and the upstream TLS configuration
//! (`tls::upstream::build`: the upstream's CA bundle, minimum version and the
//! gateway's client certificate, EX-MTLS-1).
//!
//! Per endpoint of every `[upstreams.NAME]`, checks named `upstream.NAME.HOST:PORT.*`:
//! `resolve`, `residency`, `tcp`, and for `https` endpoints `tls`, `certificate.chain`,
//! `certificate.name`, `certificate.expiry`, `client_certificate`; for upstreams behind a
//! `fhir = true` route, `fhir_metadata` (`GET metadata` must return a
//! CapabilityStatement with a `fhirVersion`).

use super::http::{self, Response};
use super::tls::{certificate_checks, client_config, CaptureVerifier};
use super::{now_rfc3339, Check, ProbeInputError, Report};
use crate::config::endpoint::EndpointUrl;
use crate::config::{Config, Upstream};
use crate::residency::allow_list::AllowList;
use crate::residency::egress::UpstreamResolver;
use crate::residency::policy::ResidencyPolicy;
use crate::residency::targets::upstream_target;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Time allowed for the `metadata` request after the connection is up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every upstream check of the configuration at `path`; `Err` only when the
/// configuration cannot be used at all (exit status 2).
pub async fn run(path: &Path) -> Result<Report, ProbeInputError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let config = crate::config::load(path).map_err(|e| ProbeInputError(e.to_string()))?;
    let r = &config.residency;
    let allow = AllowList::load(&r.allowed_networks, &r.allowed_networks_files)
        .map_err(|e| ProbeInputError(format!("[residency]: {e}")))?;
    let policy = ResidencyPolicy::new(allow);
    let resolver = UpstreamResolver::new(r.hosts_file.as_deref());
    let mut checks = Vec::new();
    for (name, upstream) in &config.upstreams {
        for endpoint in &upstream.endpoints {
            checks.extend(endpoint_checks(&config, &policy, &resolver, name, upstream, endpoint).await);
        }
    }
    Ok(Report::new(
        "probe upstreams",
        &path.display().to_string(),
        started_at,
        started,
        checks,
    ))
}

/// The metadata path of the first `fhir = true` route to `name`: what the gateway sends
/// upstream for `GET <prefix>metadata`.
fn fhir_metadata_path(config: &Config, name: &str) -> Option<String> {
    let route = config.routes.iter().find(|r| r.upstream == name && r.fhir)?;
    let prefix = if route.strip_prefix {
        "/"
    } else {
        route.path_prefix.as_str()
    };
    let prefix = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    Some(format!("{prefix}metadata"))
}

async fn endpoint_checks(
    config: &Config,
    policy: &ResidencyPolicy,
    resolver: &UpstreamResolver,
    name: &str,
    upstream: &Upstream,
    endpoint: &str,
) -> Vec<Check> {
    let started = Instant::now();
    let url = match EndpointUrl::parse(endpoint) {
        Ok(u) => u,
        Err(e) => {
            return vec![Check::fail(
                format!("upstream.{name}.endpoint"),
                format!("{endpoint}: {e}"),
                started,
            )]
        }
    };
    let prefix = format!("upstream.{name}.{}", url.authority);
    let mut out = Vec::new();

    let addrs = match resolver.resolve(&url.host, url.port).await {
        Ok(a) => {
            out.push(Check::pass(
                format!("{prefix}.resolve"),
                format!("{} → {a:?}", url.host),
                started,
            ));
            a
        }
        Err(e) => {
            out.push(Check::fail(format!("{prefix}.resolve"), e.to_string(), started));
            return out;
        }
    };

    let started = Instant::now();
    let target = upstream_target(name, upstream);
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in &addrs {
        match policy.check_target_address(&target, addr.ip()) {
            Ok(()) => allowed.push(*addr),
            Err(e) => refused.push(format!("{}: {e}", addr.ip())),
        }
    }
    if refused.is_empty() {
        out.push(Check::pass(
            format!("{prefix}.residency"),
            format!("every address allowed ({} address(es))", allowed.len()),
            started,
        ));
    } else {
        out.push(Check::fail(
            format!("{prefix}.residency"),
            format!("{} resolves outside the allow-list: {}", url.host, refused.join("; ")),
            started,
        ));
    }
    if allowed.is_empty() {
        return out;
    }

    let started = Instant::now();
    let mut reachable = Vec::new();
    let mut unreachable = Vec::new();
    for addr in &allowed {
        match http::tcp(*addr, upstream.connect_timeout).await {
            Ok(_) => reachable.push(*addr),
            Err(e) => unreachable.push(e),
        }
    }
    if unreachable.is_empty() {
        out.push(Check::pass(
            format!("{prefix}.tcp"),
            format!("{reachable:?} reachable"),
            started,
        ));
    } else {
        out.push(Check::fail(format!("{prefix}.tcp"), unreachable.join("; "), started));
    }
    let Some(addr) = reachable.first().copied() else {
        return out;
    };

    let metadata_path = fhir_metadata_path(config, name);
    if url.tls {
        out.extend(tls_checks(&prefix, upstream, &url, addr).await);
    }
    if let Some(path) = metadata_path {
        out.push(metadata(&prefix, upstream, &url, addr, &path).await);
    }
    out
}

/// `tls`, `certificate.*` and `client_certificate` for one https endpoint.
async fn tls_checks(prefix: &str, upstream: &Upstream, url: &EndpointUrl, addr: SocketAddr) -> Vec<Check> {
    let started = Instant::now();
    let mut out = Vec::new();
    let name = match ServerName::try_from(url.host.clone()) {
        Ok(n) => n,
        Err(e) => {
            return vec![Check::fail(
                format!("{prefix}.tls"),
                format!("{}: {e}", url.host),
                started,
            )]
        }
    };
    let Some(ca_file) = &upstream.ca_file else {
        return vec![Check::fail(
            format!("{prefix}.tls"),
            "https endpoint without ca_file: set the upstream's CA bundle",
            started,
        )];
    };
    let roots = match crate::tls::server::read_roots(ca_file) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                format!("{prefix}.tls"),
                format!("{}: {e}", ca_file.display()),
                started,
            )]
        }
    };

    // Chain, name and expiry: a handshake with the gateway's versions and CAs that keeps
    // the certificate even when it is refused, so the failure can name the date.
    let capture = CaptureVerifier::new(roots);
    let provider = CryptoProvider {
        cipher_suites: crate::tls::provider().cipher_suites.clone(),
        kx_groups: aws_lc_rs::ALL_KX_GROUPS.to_vec(),
        ..aws_lc_rs::default_provider()
    };
    let result = match client_config(
        provider,
        crate::tls::versions(upstream.tls_min_version),
        capture.clone(),
    ) {
        Ok(config) => http::tls(addr, name.clone(), config, upstream.connect_timeout).await,
        Err(e) => Err(http::HandshakeError::Tls(e)),
    };
    match &result {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
            let suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            out.push(Check::pass(
                format!("{prefix}.tls"),
                format!("{version} {suite}"),
                started,
            ));
        }
        Err(e) => out.push(Check::fail(
            format!("{prefix}.tls"),
            format!("handshake failed: {e}"),
            started,
        )),
    }
    out.extend(certificate_checks(
        &format!("{prefix}.certificate"),
        &name,
        &capture,
        result.err(),
        started,
    ));
    out.push(client_certificate(prefix, upstream, &name, addr).await);
    out
}

/// Whether the upstream accepts the gateway's client certificate (EX-MTLS-1): a request
/// over the gateway's own upstream TLS config (with the certificate, when configured),
/// and one without a certificate, to say whether the upstream requires one at all.
async fn client_certificate(prefix: &str, upstream: &Upstream, name: &ServerName<'static>, addr: SocketAddr) -> Check {
    let started = Instant::now();
    let check = format!("{prefix}.client_certificate");
    let gateway_config = match crate::tls::upstream::build(upstream) {
        Ok(Some(c)) => c,
        Ok(None) => return Check::skip(check, "no TLS configured for this upstream", started),
        Err(e) => return Check::fail(check, e.to_string(), started),
    };
    let with_configured = exchange(addr, name, gateway_config, upstream.connect_timeout).await;
    let has_cert = upstream.client_cert_file.is_some();
    if let Err(e) = &with_configured {
        // The gateway refused the upstream's certificate before the upstream could judge
        // the gateway's: the certificate checks report that; nothing to say here.
        if e.contains("invalid peer certificate") {
            return Check::skip(
                check,
                "not judged: the upstream's own certificate is refused (see its certificate checks)",
                started,
            );
        }
    }
    match (has_cert, with_configured) {
        (true, Ok(_)) => {
            // Accepted with the certificate; does the upstream insist on one? The same
            // config without the certificate answers that.
            let without = crate::tls::upstream::build(&Upstream {
                client_cert_file: None,
                client_key_file: None,
                ..upstream.clone()
            });
            let required = match without {
                Ok(Some(c)) => exchange(addr, name, c, upstream.connect_timeout).await.is_err(),
                _ => false,
            };
            let note = if required {
                "the upstream requires it"
            } else {
                "note: the upstream also accepts connections without a client certificate"
            };
            Check::pass(check, format!("the gateway's client certificate is accepted; {note}"), started)
        }
        (true, Err(e)) => Check::fail(
            check,
            format!(
                "the upstream refused the gateway's client certificate ({}): {e}; have the hospital trust the gateway's CA, or configure the certificate it issued",
                upstream
                    .client_cert_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            started,
        ),
        (false, Ok(_)) => Check::pass(check, "no client certificate configured, none required", started),
        (false, Err(e)) => Check::fail(
            check,
            format!("the connection fails without a client certificate ({e}); if the upstream requires mutual TLS, set client_cert_file and client_key_file"),
            started,
        ),
    }
}

/// A handshake and one `GET /` with `config`. In TLS 1.3 the server judges the client
/// certificate after the client's handshake is done, so only the first read shows a
/// refusal (the alert): the request is what makes it visible.
async fn exchange(
    addr: SocketAddr,
    name: &ServerName<'static>,
    config: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Response, String> {
    let stream = http::tls(addr, name.clone(), config, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let authority = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        _ => addr.to_string(),
    };
    http::get(stream, &authority, "/", &[], RESPONSE_TIMEOUT).await
}

/// `GET <path>` over the gateway's own upstream connection settings: a
/// CapabilityStatement with a `fhirVersion` passes.
async fn metadata(prefix: &str, upstream: &Upstream, url: &EndpointUrl, addr: SocketAddr, path: &str) -> Check {
    let started = Instant::now();
    let check = format!("{prefix}.fhir_metadata");
    let headers = [("accept", "application/fhir+json".to_string())];
    let resp = if url.tls {
        let config = match crate::tls::upstream::build(upstream) {
            Ok(Some(c)) => c,
            Ok(None) => return Check::fail(check, "https endpoint without ca_file", started),
            Err(e) => return Check::fail(check, e.to_string(), started),
        };
        let name = match ServerName::try_from(url.host.clone()) {
            Ok(n) => n,
            Err(e) => return Check::fail(check, e.to_string(), started),
        };
        match http::tls(addr, name, config, upstream.connect_timeout).await {
            Ok(s) => http::get(s, &url.authority, path, &headers, RESPONSE_TIMEOUT).await,
            Err(e) => Err(e.to_string()),
        }
    } else {
        match http::tcp(addr, upstream.connect_timeout).await {
            Ok(s) => http::get(s, &url.authority, path, &headers, RESPONSE_TIMEOUT).await,
            Err(e) => Err(e),
        }
    };
    match resp {
        Err(e) => Check::fail(check, format!("GET {path}: {e}"), started),
        Ok(r) => capability(&check, path, &r, started),
    }
}

fn capability(check: &str, path: &str, r: &Response, started: Instant) -> Check {
    if r.status != 200 {
        return Check::fail(check, format!("GET {path} answered {}", r.status), started);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
        return Check::fail(check, format!("GET {path}: the body is not JSON"), started);
    };
    if v["resourceType"] != "CapabilityStatement" {
        return Check::fail(
            check,
            format!(
                "GET {path} returned a {} instead of a CapabilityStatement",
                v["resourceType"]
            ),
            started,
        );
    }
    match v["fhirVersion"].as_str() {
        Some(version) => Check::pass(check, format!("CapabilityStatement, FHIR {version}"), started),
        None => Check::fail(
            check,
            format!("GET {path}: the CapabilityStatement has no fhirVersion"),
            started,
        ),
    }
}
