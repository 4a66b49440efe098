//! Header hygiene between client and upstream (RFC 9110 §7.6.1, RFC 7239).
//!
//! Hop-by-hop headers belong to one connection and are dropped. The forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are written by the gateway and never taken
//! from an untrusted client: a backend (and an access record) that believed a client's
//! `X-Forwarded-For` would log whatever address the client chose (LOG-ACC-1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

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

/// Replaces any client-sent copy of the client-certificate headers with the identity
/// rustls verified on this connection (or with nothing).
pub fn set_client_identity(headers: &mut HeaderMap, client: Option<&crate::tls::ClientIdentity>) {
    headers.remove(&X_CLIENT_CERT_SHA256);
    headers.remove(&X_CLIENT_CERT_SUBJECT);
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
    if headers.contains_key(header::CONNECTION) {
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
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
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
    headers.remove(&X_FORWARDED_FOR);
    headers.remove(&X_FORWARDED_PROTO);
    headers.remove(&X_FORWARDED_HOST);
    headers.remove(header::FORWARDED);
    headers.remove(&X_REAL_IP);

    let xff = match prior {
        Some(p) if !p.is_empty() => format!("{p}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    let for_node = match peer {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut forwarded = format!("for={for_node};proto=https");
    if let Some(host) = original_host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
        if let Ok(h) = host.to_str() {
            if h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
                forwarded.push_str(";host=");
                forwarded.push_str(h);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
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
