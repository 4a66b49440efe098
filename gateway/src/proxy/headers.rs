//! Header hygiene between client and upstream (RFC 9110 §7.6.1, RFC 7239).
//!
//! Hop-by-hop headers belong to one connection and are dropped. The forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are written by the gateway and never taken
//! from an untrusted client: a backend (and an access record) that believed a client's
//! `X-Forwarded-For` would log whatever address the client chose (LOG-ACC-1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, Ipv4Addr};

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
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The verified mTLS client certificate, as the gateway tells the backend (EX-MTLS-1).
pub static X_CLIENT_CERT_SHA256: HeaderName = HeaderName::from_static("x-phr-client-cert-sha256");
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-phr-client-cert-subject");

/// The headers [`set_forwarded`] writes, so never passes on from a client.
static FORWARDING: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &header::FORWARDED,
    &X_REAL_IP,
];

/// Removes every header named in `names`. These functions run on every request
/// and response, and almost none carries any of the names: one pass comparing
/// the few names present finds that out, where a `remove` per name hashes the
/// name and probes the map. Measured with callgrind (HTTP/1.1, 100 B, the
/// bench's plain route): this, `push_ip` and the same pass in
/// `remove_hop_by_hop` took the gateway from 59,300 to 53,100 user-space
/// instructions per proxied request; the bare hyper proxy in `bench/` needs 44,500.
pub fn remove_each<N: std::borrow::Borrow<HeaderName>>(headers: &mut HeaderMap, names: &[N]) {
    if headers.keys().any(|k| names.iter().any(|n| n.borrow() == k)) {
        for name in names {
            headers.remove(name.borrow());
        }
    }
}

/// Replaces any client-sent copy of the client-certificate headers with the identity
/// rustls verified on this connection (or with nothing).
pub fn set_client_identity(headers: &mut HeaderMap, client: Option<&crate::tls::ClientIdentity>) {
    remove_each(headers, &[&X_CLIENT_CERT_SHA256, &X_CLIENT_CERT_SUBJECT]);
    if let Some(c) = client {
        if let Ok(v) = HeaderValue::from_str(&c.fingerprint_hex()) {
            headers.insert(&X_CLIENT_CERT_SHA256, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(c.subject.as_bytes()) {
            headers.insert(&X_CLIENT_CERT_SUBJECT, v);
        }
    }
}

/// Removes hop-by-hop headers, including any header the `Connection` header names.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for a WebSocket handshake.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The hop-by-hop names present, found in one pass without hashing: most
    // requests carry none and most responses only `Connection` (see
    // `remove_each`); collecting nothing allocates nothing.
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|k| *k == header::UPGRADE || HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if found.contains(&header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    for name in found {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets the forwarding headers for a request from `peer`. When `peer_trusted` (a
/// configured proxy in front of the gateway), its `X-Forwarded-For` chain is kept and
/// extended; otherwise every client-sent copy is replaced.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, peer_trusted: bool, original_host: Option<&HeaderValue>) {
    let prior = if peer_trusted {
        headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    remove_each(headers, &FORWARDING);

    let mut xff = String::with_capacity(64);
    if let Some(p) = prior.filter(|p| !p.is_empty()) {
        xff.push_str(&p);
        xff.push_str(", ");
    }
    push_ip(&mut xff, peer);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    let mut forwarded = String::with_capacity(96);
    forwarded.push_str("for=");
    match peer {
        IpAddr::V4(_) => push_ip(&mut forwarded, peer),
        // RFC 7239 §6: an IPv6 node is bracketed and quoted.
        IpAddr::V6(ip) => forwarded.push_str(&format!("\"[{ip}]\"")),
    }
    forwarded.push_str(";proto=https");
    if let Some(host) = original_host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
        if let Ok(h) = host.to_str() {
            if h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
                forwarded.push_str(";host=");
                forwarded.push_str(h);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(header::FORWARDED, v);
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
        set_forwarded(&mut h, "2001:db8::1".parse().unwrap(), false, None);
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn removes_every_spoofed_forwarding_header() {
        let mut h = HeaderMap::new();
        for name in FORWARDING {
            h.insert(name, HeaderValue::from_static("spoofed"));
        }
        h.insert("x-keep", HeaderValue::from_static("1"));
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), false, None);
        assert!(h.get(&X_REAL_IP).is_none() && h.get(&X_FORWARDED_HOST).is_none());
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert!(h.get("x-keep").is_some());
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
        set_forwarded(
            &mut h,
            "10.0.0.9".parse().unwrap(),
            false,
            Some(&HeaderValue::from_static("gw.example.jp")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.9;proto=https;host=gw.example.jp");
        let mut h2 = HeaderMap::new();
        h2.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut h2, "10.0.0.9".parse().unwrap(), true, None);
        assert_eq!(h2[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
    }
}
