//! URLs that work from outside on routes that strip their prefix (`strip_prefix = true`).
//!
//! The gateway forwards `/api/fhir/Patient` as `/Patient` and tells the backend the
//! removed prefix (`X-Forwarded-Prefix`, see [`super::headers::set_forwarded_prefix`]).
//! Many backends build their `Location` from `X-Forwarded-Host`/`-Proto` alone and
//! answer `https://gw.example.jp/Patient/1`, which is a 404 at the gateway. This module
//! puts the prefix back into such URLs: absolute ones that name the public host (the
//! `Host` the client used, or the host of the route's `public_base_url`), and
//! path-absolute ones (`/Patient/1`). A URL whose path already starts with the prefix is
//! left alone, so a backend that honours `X-Forwarded-Prefix` is not prefixed twice.
//! (The one ambiguity: a backend whose own paths start with the prefix; such a route
//! should not strip it.)

use http::header::{self, HeaderMap, HeaderValue};

/// Puts `prefix` back into the `Location` and `Content-Location` headers of a response
/// from a route that stripped it. `prefix` is the route's `path_prefix` (a trailing `/`
/// is ignored); `public_authorities` are the `host[:port]`s clients reach the gateway
/// by. Values that are not URLs on those hosts are left as they are.
pub fn restore_prefix(headers: &mut HeaderMap, prefix: &str, public_authorities: &[&str]) {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return;
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let rewritten = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| with_prefix(v, prefix, public_authorities))
            .and_then(|v| HeaderValue::from_str(&v).ok());
        if let Some(v) = rewritten {
            headers.insert(name, v);
        }
    }
}

/// `url` with `prefix` (no trailing `/`) inserted before its path, or `None` when it
/// needs none: not on a public host, a relative reference that resolves under the
/// request's own (prefixed) path, or a path that already starts with the prefix.
pub fn with_prefix(url: &str, prefix: &str, public_authorities: &[&str]) -> Option<String> {
    if let Some(path) = url.strip_prefix('/') {
        // `//host/x` is network-path (another host), not a path.
        if path.starts_with('/') || under(url, prefix) {
            return None;
        }
        return Some(format!("{prefix}{url}"));
    }
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if !public_authorities.iter().any(|a| a.eq_ignore_ascii_case(authority)) || under(path, prefix) {
        return None;
    }
    // `path` is empty, a path, or starts the query/fragment: the prefix goes before it.
    Some(format!("{scheme}://{authority}{prefix}{path}"))
}

/// Whether `path` is `prefix` or below it (at a segment boundary: `/fhir2` is not
/// under `/fhir`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
}

/// The `host[:port]` of an absolute URL such as a route's `public_base_url`.
pub fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &[&str] = &["gw.example.jp", "localhost:8443"];

    #[test]
    fn a_url_on_the_public_host_without_the_prefix_gets_it() {
        let cases = [
            (
                "https://gw.example.jp/Patient/1/_history/1",
                "https://gw.example.jp/api/fhir/Patient/1/_history/1",
            ),
            (
                "https://GW.example.jp/Patient?x=1",
                "https://GW.example.jp/api/fhir/Patient?x=1",
            ),
            (
                "https://localhost:8443/Observation/2",
                "https://localhost:8443/api/fhir/Observation/2",
            ),
            ("https://gw.example.jp", "https://gw.example.jp/api/fhir"),
            ("https://gw.example.jp?x", "https://gw.example.jp/api/fhir?x"),
            ("/Patient/1/_history/1", "/api/fhir/Patient/1/_history/1"),
            ("/fhir-other/1", "/api/fhir/fhir-other/1"),
        ];
        for (from, to) in cases {
            assert_eq!(with_prefix(from, "/api/fhir", HOSTS).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn urls_already_prefixed_elsewhere_or_relative_are_left_alone() {
        for url in [
            "https://gw.example.jp/api/fhir/Patient/1",
            "https://gw.example.jp/api/fhir",
            "https://gw.example.jp/api/fhir?x",
            "/api/fhir/Patient/1",
            "https://other.example.jp/Patient/1",
            "https://localhost/Patient/1",
            "http://127.0.0.1:8080/Patient/1",
            "//gw.example.jp/Patient/1",
            "Patient/1",
            "urn:uuid:1234",
            "ftp://gw.example.jp/x",
        ] {
            assert_eq!(with_prefix(url, "/api/fhir", HOSTS), None, "{url}");
        }
        assert_eq!(
            with_prefix("https://gw.example.jp/api/fhirx/1", "/api/fhir", HOSTS).as_deref(),
            Some("https://gw.example.jp/api/fhir/api/fhirx/1"),
            "a segment boundary decides, not the characters"
        );
    }

    #[test]
    fn both_location_headers_are_rewritten_and_a_root_prefix_changes_nothing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("https://gw.example.jp/Patient/1"),
        );
        h.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("/Patient/1/_history/2"),
        );
        let before = h.clone();
        restore_prefix(&mut h, "/", HOSTS);
        assert_eq!(h, before);
        restore_prefix(&mut h, "/api/fhir/", HOSTS);
        assert_eq!(h[header::LOCATION], "https://gw.example.jp/api/fhir/Patient/1");
        assert_eq!(h[header::CONTENT_LOCATION], "/api/fhir/Patient/1/_history/2");
        // Idempotent: a second pass (or a backend that honours X-Forwarded-Prefix) adds nothing.
        let once = h.clone();
        restore_prefix(&mut h, "/api/fhir/", HOSTS);
        assert_eq!(h, once);
    }

    #[test]
    fn the_authority_of_a_base_url() {
        assert_eq!(authority_of("https://gw.example.jp"), Some("gw.example.jp"));
        assert_eq!(
            authority_of("https://gw.example.jp:8443/phr/"),
            Some("gw.example.jp:8443")
        );
        assert_eq!(authority_of("https://"), None);
        assert_eq!(authority_of("gw.example.jp"), None);
    }
}
