//! Header hygiene between client and upstream (RFC 9110 §7.6.1, RFC 7239).
//!
//! Hop-by-hop headers belong to one connection and are dropped. The forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are written by the gateway and never taken
//! from an untrusted client: a backend (and an access record) that believed a client's
//! `X-Forwarded-For` would log whatever address the client chose (LOG-ACC-1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

/// The hop-by-hop headers of RFC 9110 §7.6.1 and the legacy ones still seen.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The path prefix a route removed before forwarding (`/api/fhir`), so a backend can
/// build URLs that work from outside (Spring, ASP.NET Core, HAPI and others read it).
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The verified mTLS client certificate, as the gateway tells the backend (EX-MTLS-1).
pub static X_CLIENT_CERT_SHA256: HeaderName = HeaderName::from_static("x-phr-client-cert-sha256");
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-phr-client-cert-subject");

/// The headers [`insert_forwarded`] writes, so never passes on from a client.
static FORWARDING: [&HeaderName; 6] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_FORWARDED_PREFIX,
    &header::FORWARDED,
    &X_REAL_IP,
];

/// Every header whose name starts with this is written by the gateway alone: the
/// verified client certificate and the token's identity (`auth::HeaderNames`). A
/// backend trusts them, so a client's copy is never passed on (EX-MTLS-1, AUTH-ID-1).
pub const GATEWAY_PREFIX: &str = "x-phr-";

/// What the gateway does with a header it receives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `HOP_BY_HOP[i]`: belongs to one connection, dropped.
    HopByHop(u8),
    /// Dropped, except on a WebSocket handshake the route allows.
    Upgrade,
    /// One of `FORWARDING`: rewritten by the gateway.
    Forwarding,
    /// Starts with [`GATEWAY_PREFIX`]: written by the gateway alone.
    Gateway,
    /// Everything else: passed on.
    EndToEnd,
}

/// Why a `match` on the name's text: these functions run on every request and
/// response, and almost none carries any of these names. Matching each present
/// name once (length, then bytes) is what a proxy can afford; a hashed `remove`
/// per absent name, and then comparing every present name with every listed
/// one, were most of the gateway's own work on the small-response path
/// (callgrind, HTTP/1.1 100 B: 59,300, then 53,100 user-space instructions per
/// proxied request, then 51,000 with this match; the bare hyper proxy in
/// `bench/` needs 44,500).
fn kind(name: &HeaderName) -> Kind {
    match name.as_str() {
        "connection" => Kind::HopByHop(0),
        "keep-alive" => Kind::HopByHop(1),
        "proxy-connection" => Kind::HopByHop(2),
        "proxy-authenticate" => Kind::HopByHop(3),
        "proxy-authorization" => Kind::HopByHop(4),
        "te" => Kind::HopByHop(5),
        "trailer" => Kind::HopByHop(6),
        "transfer-encoding" => Kind::HopByHop(7),
        "upgrade" => Kind::Upgrade,
        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-prefix" | "forwarded"
        | "x-real-ip" => Kind::Forwarding,
        n if n.starts_with(GATEWAY_PREFIX) => Kind::Gateway,
        _ => Kind::EndToEnd,
    }
}

/// Which kinds of header one pass over a map found.
#[derive(Default)]
struct Found {
    /// Bit `i`: `HOP_BY_HOP[i]` is present.
    hop_by_hop: u8,
    upgrade: bool,
    forwarding: bool,
    gateway: bool,
}

impl Found {
    fn scan(headers: &HeaderMap) -> Self {
        let mut found = Found::default();
        for name in headers.keys() {
            match kind(name) {
                Kind::HopByHop(i) => found.hop_by_hop |= 1 << i,
                Kind::Upgrade => found.upgrade = true,
                Kind::Forwarding => found.forwarding = true,
                Kind::Gateway => found.gateway = true,
                Kind::EndToEnd => {}
            }
        }
        found
    }
}

/// Prepares a client's request headers for the upstream: drops the hop-by-hop
/// headers (and any header `Connection` names), every forwarding header and every
/// [`GATEWAY_PREFIX`] header, which the gateway then writes itself
/// ([`insert_forwarded`], [`set_client_identity`], the identity headers).
/// `keep_upgrade` keeps `Upgrade` and sets `Connection: upgrade` for a WebSocket
/// handshake. Read a trusted hop's chain ([`trusted_forwarded_for`]) before this.
pub fn clean_request(headers: &mut HeaderMap, keep_upgrade: bool) {
    let found = Found::scan(headers);
    remove_hop_by_hop_found(headers, &found, keep_upgrade);
    if found.forwarding {
        for name in FORWARDING {
            headers.remove(name);
        }
    }
    if found.gateway {
        // Rare (a client trying its luck), so the allocation is fine here.
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with(GATEWAY_PREFIX))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Removes hop-by-hop headers, including any header the `Connection` header names.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for a WebSocket handshake.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let found = Found::scan(headers);
    remove_hop_by_hop_found(headers, &found, keep_upgrade);
}

fn remove_hop_by_hop_found(headers: &mut HeaderMap, found: &Found, keep_upgrade: bool) {
    if found.hop_by_hop & 1 != 0 {
        remove_connection_named(headers, keep_upgrade);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found.hop_by_hop & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if found.upgrade && !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the headers the `Connection` header lists (RFC 9110 §7.6.1). The
/// tokens almost always seen, `keep-alive` and `close`, name no other header
/// (`Keep-Alive` is hop-by-hop anyway), so they cost no lookup.
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            let skip = token.is_empty()
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("close")
                || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"));
            if !skip {
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
}

/// The `X-Forwarded-For` chain of a trusted proxy in front of the gateway, to be
/// extended by [`insert_forwarded`]; `None` from anyone else, whose copy is dropped.
pub fn trusted_forwarded_for(headers: &HeaderMap, peer_trusted: bool) -> Option<String> {
    if !peer_trusted {
        return None;
    }
    headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// Writes the client-certificate headers from the identity rustls verified on
/// this connection, if any. [`clean_request`] has already dropped a client's copies.
pub fn set_client_identity(headers: &mut HeaderMap, client: Option<&crate::tls::ClientIdentity>) {
    if let Some(c) = client {
        if let Ok(v) = HeaderValue::from_str(&c.fingerprint_hex()) {
            headers.insert(&X_CLIENT_CERT_SHA256, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(c.subject.as_bytes()) {
            headers.insert(&X_CLIENT_CERT_SUBJECT, v);
        }
    }
}

/// The `Forwarded` elements (RFC 7239) a trusted proxy in front of the gateway wrote,
/// to be extended by [`insert_forwarded`] as `X-Forwarded-For` is; `None` from anyone
/// else, whose copy is dropped like every other forwarding header.
pub fn trusted_forwarded(headers: &HeaderMap, peer_trusted: bool) -> Option<String> {
    if !peer_trusted {
        return None;
    }
    let elements: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!elements.is_empty()).then(|| elements.join(", "))
}

/// [`forwarded_values`] then [`insert_forwarded`], as the request path does (tests).
#[cfg(test)]
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    prior: Option<&str>,
    prior_forwarded: Option<&str>,
    original_host: Option<&HeaderValue>,
) {
    let values = forwarded_values(peer, prior, prior_forwarded, original_host);
    insert_forwarded(headers, values, original_host);
}

/// The values of `X-Forwarded-For` and `Forwarded` for one request.
#[derive(Clone, Debug)]
pub struct ForwardedValues {
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

/// The forwarding headers' values for a request from `peer` ([`insert_forwarded`] writes
/// them after [`clean_request`] dropped the client's). `prior` is a trusted proxy's `X-Forwarded-For` chain
/// ([`trusted_forwarded_for`]) and `prior_forwarded` its `Forwarded` elements
/// ([`trusted_forwarded`]); both are extended rather than replaced.
///
/// `Forwarded` (RFC 7239) carries `for` (an IPv6 node bracketed and quoted, §6),
/// `proto=https` and the `host` the client addressed (quoted when it has a port, since
/// `:` is not a token character). No `by`: the gateway's own address tells a backend
/// nothing it needs.
pub fn forwarded_values(
    peer: IpAddr,
    prior: Option<&str>,
    prior_forwarded: Option<&str>,
    original_host: Option<&HeaderValue>,
) -> ForwardedValues {
    let mut xff = String::with_capacity(64);
    if let Some(p) = prior {
        xff.push_str(p);
        xff.push_str(", ");
    }
    push_ip(&mut xff, peer);
    let mut forwarded = String::with_capacity(96);
    if let Some(p) = prior_forwarded {
        forwarded.push_str(p);
        forwarded.push_str(", ");
    }
    forwarded.push_str("for=");
    match peer {
        IpAddr::V4(_) => push_ip(&mut forwarded, peer),
        // RFC 7239 §6: an IPv6 node is bracketed and quoted.
        IpAddr::V6(ip) => forwarded.push_str(&format!("\"[{ip}]\"")),
    }
    forwarded.push_str(";proto=https");
    if let Some(h) = original_host.and_then(|h| h.to_str().ok()) {
        // A Host is a name, an IPv4 address or a bracketed IPv6 one, with an optional
        // port; anything else is not passed on rather than escaped.
        if h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
            forwarded.push_str(";host=");
            if h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b)) {
                forwarded.push_str(h);
            } else {
                forwarded.push('"');
                forwarded.push_str(h);
                forwarded.push('"');
            }
        }
    }
    ForwardedValues {
        xff: HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).ok(),
        forwarded: HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)).ok(),
    }
}

/// Writes `values` and the headers that need no building (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`), in the order they have always been written.
pub fn insert_forwarded(headers: &mut HeaderMap, values: ForwardedValues, original_host: Option<&HeaderValue>) {
    if let Some(v) = values.xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Some(host) = original_host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    if let Some(v) = values.forwarded {
        headers.insert(header::FORWARDED, v);
    }
}

/// One connection's forwarding values when no trusted proxy's chain is extended: they
/// depend only on the connection's peer and the host addressed, so they are built by the
/// connection's first request and shared (reference-counted) by the rest, instead of
/// formatting an address and two strings per request. A request that addresses another
/// host than the first gets its own.
#[derive(Debug, Default)]
pub struct ForwardedCache(OnceLock<(Option<HeaderValue>, ForwardedValues)>);

impl ForwardedCache {
    /// What [`forwarded_values`] gives for `peer` (the connection's), no prior chain and
    /// `original_host`.
    pub fn get(&self, peer: IpAddr, original_host: Option<&HeaderValue>) -> ForwardedValues {
        let (host, values) = self.0.get_or_init(|| {
            (
                original_host.cloned(),
                forwarded_values(peer, None, None, original_host),
            )
        });
        if host.as_ref() == original_host {
            values.clone()
        } else {
            forwarded_values(peer, None, None, original_host)
        }
    }
}

/// Tells the backend which path prefix the route removed (`X-Forwarded-Prefix`), so
/// that it can build `Location`, `Content-Location` and Bundle links that work from
/// outside. `prefix` is the route's `path_prefix`; its trailing `/` is left out
/// (`/api/fhir/` → `/api/fhir`), as backends append their own paths to it. A prefix of
/// `/` strips nothing, so nothing is sent.
pub fn set_forwarded_prefix(headers: &mut HeaderMap, prefix: &str) {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(prefix) {
        headers.insert(&X_FORWARDED_PREFIX, v);
    }
}

/// Appends `ip` in its usual text form. IPv4 is written digit by digit: the
/// standard library's `Display` goes through the formatting machinery and
/// cost about 1,300 instructions per address here, twice per request.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get(header::TE).is_none() && h.get(header::UPGRADE).is_none());
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.9",
            "127.0.0.1",
            "192.168.100.255",
            "1.20.199.250",
            "255.255.255.255",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            let mut s = String::new();
            push_ipv4(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn ipv6_peer_is_bracketed_and_quoted_in_forwarded() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "2001:db8::1".parse().unwrap(), None, None, None);
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn removes_every_spoofed_forwarding_and_gateway_header() {
        let mut h = HeaderMap::new();
        for name in FORWARDING {
            h.insert(name, HeaderValue::from_static("spoofed"));
        }
        for name in ["x-phr-subject", "x-phr-client-cert-sha256", "X-PHR-Anything-New"] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        h.append("x-phr-subject", HeaderValue::from_static("forged twice"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("x-phr", HeaderValue::from_static("not the prefix"));
        clean_request(&mut h, false);
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), None, None, None);
        assert!(h.get(&X_REAL_IP).is_none() && h.get(&X_FORWARDED_HOST).is_none());
        assert!(h.keys().all(|k| !k.as_str().starts_with(GATEWAY_PREFIX)), "{h:?}");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.9;proto=https");
        assert!(h.get("x-keep").is_some() && h.get("x-phr").is_some());
    }

    /// `kind` spells the names of `HOP_BY_HOP` (by position) and `FORWARDING` again,
    /// as text to match on: this keeps the two in step.
    #[test]
    fn kind_matches_the_static_lists() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(kind(name), Kind::HopByHop(i as u8), "{name}");
        }
        for name in FORWARDING {
            assert_eq!(kind(name), Kind::Forwarding, "{name}");
        }
        assert_eq!(kind(&header::UPGRADE), Kind::Upgrade);
        assert_eq!(kind(&X_CLIENT_CERT_SUBJECT), Kind::Gateway);
        assert_eq!(kind(&header::ACCEPT), Kind::EndToEnd);
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_alone_and_the_rest_kept() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            remove_hop_by_hop(&mut h, false);
            assert!(h.get(name).is_none(), "{name} survived");
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }

    #[test]
    fn connection_tokens_name_headers_to_remove_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static(" X-Secret ,Upgrade"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        clean_request(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        // A WebSocket handshake keeps Upgrade, and only that.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        clean_request(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert!(h.get("x-secret").is_none());
    }

    #[test]
    fn upgrade_alone_is_removed_unless_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h, false);
        assert!(h.get(header::UPGRADE).is_none());
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        let mut h = HeaderMap::new();
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn replaces_spoofed_forwarded_for_from_untrusted_peer() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let prior = trusted_forwarded_for(&h, false);
        assert_eq!(prior, None);
        clean_request(&mut h, false);
        set_forwarded(
            &mut h,
            "10.0.0.9".parse().unwrap(),
            prior.as_deref(),
            None,
            Some(&HeaderValue::from_static("gw.example.jp")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.9;proto=https;host=gw.example.jp");
        let mut h2 = HeaderMap::new();
        h2.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        let prior = trusted_forwarded_for(&h2, true);
        clean_request(&mut h2, false);
        set_forwarded(&mut h2, "10.0.0.9".parse().unwrap(), prior.as_deref(), None, None);
        assert_eq!(h2[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h2.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn a_connection_reuses_its_forwarding_values_only_for_the_same_host() {
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let (a, b) = (
            HeaderValue::from_static("a.example.jp"),
            HeaderValue::from_static("b.example.jp"),
        );
        let cache = ForwardedCache::default();
        let written = |values: ForwardedValues, host: &HeaderValue| {
            let mut h = HeaderMap::new();
            insert_forwarded(&mut h, values, Some(host));
            (h[&X_FORWARDED_FOR].clone(), h[header::FORWARDED].clone())
        };
        for host in [&a, &b, &a] {
            let mut fresh = HeaderMap::new();
            set_forwarded(&mut fresh, peer, None, None, Some(host));
            let (xff, forwarded) = written(cache.get(peer, Some(host)), host);
            assert_eq!(xff, fresh[&X_FORWARDED_FOR]);
            assert_eq!(forwarded, fresh[header::FORWARDED], "for {host:?}");
        }
        assert_eq!(
            written(cache.get(peer, Some(&b)), &b).1,
            "for=192.0.2.7;proto=https;host=b.example.jp"
        );
    }

    #[test]
    fn forwarded_quotes_ipv6_and_a_host_with_a_port() {
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("gw.example.jp:8443");
        set_forwarded(&mut h, "::1".parse().unwrap(), None, None, Some(&host));
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";proto=https;host=\"gw.example.jp:8443\""
        );
        assert_eq!(h[&X_FORWARDED_HOST], "gw.example.jp:8443");
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("[2001:db8::5]");
        set_forwarded(&mut h, "192.0.2.7".parse().unwrap(), None, None, Some(&host));
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=https;host=\"[2001:db8::5]\"");
    }

    #[test]
    fn a_trusted_proxys_forwarded_is_extended_and_an_untrusted_one_replaced() {
        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, HeaderValue::from_static("for=192.0.2.1;proto=https"));
        h.append(header::FORWARDED, HeaderValue::from_static("for=\"[2001:db8::9]\""));
        let prior = trusted_forwarded(&h, true);
        assert_eq!(
            prior.as_deref(),
            Some("for=192.0.2.1;proto=https, for=\"[2001:db8::9]\"")
        );
        assert_eq!(trusted_forwarded(&h, false), None);
        clean_request(&mut h, false);
        assert!(h.get(header::FORWARDED).is_none());
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), None, prior.as_deref(), None);
        assert_eq!(
            h[header::FORWARDED],
            "for=192.0.2.1;proto=https, for=\"[2001:db8::9]\", for=10.0.0.9;proto=https"
        );
        assert_eq!(h.get_all(header::FORWARDED).iter().count(), 1);
    }

    #[test]
    fn the_stripped_prefix_is_announced_without_its_trailing_slash() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_PREFIX, HeaderValue::from_static("/forged"));
        clean_request(&mut h, false);
        assert!(h.get(&X_FORWARDED_PREFIX).is_none(), "a client's prefix is dropped");
        set_forwarded_prefix(&mut h, "/api/fhir/");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/api/fhir");
        set_forwarded_prefix(&mut h, "/x");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/x");
        let mut h = HeaderMap::new();
        set_forwarded_prefix(&mut h, "/");
        assert!(h.get(&X_FORWARDED_PREFIX).is_none());
    }
}
