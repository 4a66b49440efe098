//! Error responses must carry no internals (information exposure; supports AV-PATCH-1,
//! since a visible version tells an attacker which vulnerabilities to try): no stack traces, no internal addresses (private, loopback or link-local
//! IPs, `localhost:PORT` of a backend), no product versions in bodies or in the
//! `Server` / `X-Powered-By` headers.

use super::http::Response;
use super::target::Client;
use super::Check;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Markers of a stack trace or an internal error dump.
const TRACE_MARKERS: [&str; 8] = [
    "panicked at",
    "stack backtrace",
    "RUST_BACKTRACE",
    "Traceback (most recent call last)",
    "Exception in thread",
    "\tat ",
    "goroutine ",
    "at java.",
];

/// Product names whose `name/digit` form reveals a version.
const PRODUCTS: [&str; 12] = [
    "phr-gateway/",
    "hyper/",
    "nginx/",
    "apache/",
    "envoy/",
    "jetty",
    "kestrel",
    "werkzeug/",
    "express/",
    "tomcat/",
    "hapi fhir ",
    "openresty/",
];

/// Sends requests that make the deployment answer with errors (an unrouted path; an
/// unknown FHIR type under the base, with the token when given, so no failed
/// authentication is counted against the probe's address) and adds them to `seen`.
pub async fn trigger(client: &Client, token: Option<&str>, seen: &mut Vec<(String, Response)>) {
    let marker = format!("phr-probe-{}", uuid::Uuid::new_v4().simple());
    if let Ok(resp) = client.get_path(&format!("/{marker}"), None).await {
        seen.push(("unrouted path".into(), resp));
    }
    if token.is_some() {
        if let Ok(resp) = client.get(&format!("{marker}/x"), token).await {
            seen.push(("unknown resource under the base".into(), resp));
        }
    }
}

/// Scans every error response seen during the run (`errors.no_internals`).
pub fn check(client: &Client, seen: &[(String, Response)], started: Instant) -> Check {
    // The deployment's own public address may appear (links, `resource_metadata`).
    let allowed = [client.target().authority(), client.addr().to_string()];
    let mut problems = Vec::new();
    let mut scanned = 0;
    for (label, resp) in seen.iter().filter(|(_, r)| r.status >= 400) {
        scanned += 1;
        for p in scan(resp, &allowed) {
            problems.push(format!("{label} ({}): {p}", resp.status));
        }
    }
    if problems.is_empty() {
        Check::pass(
            "errors.no_internals",
            format!("{scanned} error response(s) carry no stack trace, internal address or version"),
            started,
        )
    } else {
        Check::fail("errors.no_internals", problems.join("; "), started)
    }
}

/// What in one response reveals internals; `allowed` are the deployment's own
/// `host:port` forms, which may appear.
pub fn scan(resp: &Response, allowed: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for name in ["server", "x-powered-by", "x-aspnet-version"] {
        if let Some(v) = resp.headers.get(name) {
            let v = String::from_utf8_lossy(v.as_bytes());
            if name != "server" || v.chars().any(|c| c.is_ascii_digit()) {
                found.push(format!("header {name}: {v} reveals the product or version"));
            }
        }
    }
    let body = resp.text();
    found.extend(scan_body(&body, allowed));
    found
}

fn scan_body(body: &str, allowed: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for m in TRACE_MARKERS {
        if body.contains(m) {
            found.push(format!("stack trace ({m:?})"));
        }
    }
    if rust_source_location(body) {
        found.push("source location (\".rs:LINE\")".into());
    }
    let lower = body.to_ascii_lowercase();
    for p in PRODUCTS {
        if let Some(at) = lower.find(p) {
            if lower[at + p.len()..].starts_with(|c: char| c.is_ascii_digit()) {
                found.push(format!("version ({:?})", &body[at..(at + p.len() + 1).min(body.len())]));
            }
        }
    }
    for addr in internal_addresses(body, allowed) {
        found.push(format!("internal address {addr}"));
    }
    found
}

fn rust_source_location(body: &str) -> bool {
    body.match_indices(".rs:")
        .any(|(i, _)| body[i + 4..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Private, loopback and link-local IPv4 addresses and `localhost:PORT`, except the
/// deployment's own.
fn internal_addresses(body: &str, allowed: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let is_part = |c: char| c.is_ascii_digit() || c == '.' || c == ':';
    for word in body.split(|c: char| !(is_part(c) || c.is_ascii_alphabetic())) {
        let candidate = word.trim_matches('.');
        if candidate.is_empty() || allowed.iter().any(|a| candidate.eq_ignore_ascii_case(a)) {
            continue;
        }
        let (host, port) = match candidate.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h, Some(p)),
            _ => (candidate, None),
        };
        let internal = match host.parse::<Ipv4Addr>() {
            Ok(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
            Err(_) => host.eq_ignore_ascii_case("localhost") && port.is_some(),
        };
        if internal && !found.contains(&candidate.to_string()) {
            found.push(candidate.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_traces_addresses_and_versions() {
        let found = scan_body(
            "thread 'main' panicked at src/proxy/forward.rs:42:7 upstream 10.0.3.7:8080 localhost:9000 hyper/1.4",
            &["localhost:8443".to_string(), "127.0.0.1:8443".to_string()],
        );
        let text = found.join("\n");
        for want in ["panicked at", ".rs:LINE", "10.0.3.7:8080", "localhost:9000", "hyper/1"] {
            assert!(text.contains(want), "{want} not in {text}");
        }
    }

    #[test]
    fn clean_bodies_and_the_own_address_pass() {
        let body = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"see https://localhost:8443/fhir/metadata; FHIR 4.0.1"}]}"#;
        let own = ["localhost:8443".to_string(), "127.0.0.1:8443".to_string()];
        assert!(scan_body(body, &own).is_empty(), "{:?}", scan_body(body, &own));
        assert!(scan_body("see 127.0.0.1:8443/fhir", &own).is_empty());
        assert!(scan_body("public 203.0.113.5 is fine", &own).is_empty());
    }
}
