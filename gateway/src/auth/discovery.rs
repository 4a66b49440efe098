//! OpenID Connect Discovery / RFC 8414 metadata: where an issuer publishes its keys.
//!
//! With `discovery = true` (or `discovery_url`) an issuer's `jwks_uri` is read from its
//! provider metadata instead of being copied into the configuration by hand. The
//! document is fetched through the same [`super::JwksFetcher`] as the keys (the
//! residency-checked connector, DATA-JP-1; TLS verified, EX-TLS-2) and trusted only if:
//! - it is a JSON object whose `issuer` equals the configured issuer *exactly* (string
//!   comparison, no normalisation: OIDC Discovery §4.3, RFC 8414 §3.3), so a document
//!   served for another issuer cannot redirect this issuer's keys;
//! - its `jwks_uri` is an absolute URL that follows the `jwks_url` rule (`https`, or
//!   `http` only to a loopback host) and names the *same host* as the discovery URL.
//!
//! Why the same-host rule: the residency declaration (and `check-config`) lists the
//! discovery URL's host as this issuer's target; a `jwks_uri` elsewhere would send the
//! gateway to a host nobody declared. The connector still checks the address of every
//! connection against the allow-list; the host rule additionally keeps the declared
//! target truthful. A provider that serves keys from another host is configured with
//! `jwks_url` instead.

use serde_json::Value;

/// Why a discovery document was refused. Displayed after
/// `discovery document of issuer X: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The body is not JSON.
    #[error("not JSON ({0})")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// No `issuer` string member.
    #[error("no \"issuer\" string; a provider metadata document must name its issuer")]
    NoIssuer,
    /// The `issuer` differs from the configured one.
    #[error("issuer is {found:?}, expected {expected:?} exactly (OIDC Discovery §4.3); fix the issuer in the configuration or discovery_url")]
    IssuerMismatch {
        /// What the document says.
        found: String,
        /// What the configuration says.
        expected: String,
    },
    /// No `jwks_uri` string member.
    #[error("no \"jwks_uri\" string; configure jwks_url instead")]
    NoJwksUri,
    /// `jwks_uri` is not an absolute https URL (http only to loopback).
    #[error("jwks_uri {0:?} must be an absolute https URL (http only to localhost/127.0.0.1/[::1])")]
    JwksUriNotHttps(String),
    /// `jwks_uri` names another host than the discovery URL.
    #[error("jwks_uri {uri:?} is not on the discovery host {host:?}; configure jwks_url (and its jurisdiction) for a key server on another host")]
    JwksUriOtherHost {
        /// The `jwks_uri`.
        uri: String,
        /// The discovery URL's host.
        host: String,
    },
}

/// The issuer's `jwks_uri` from the metadata document `body`, fetched from
/// `discovery_url` for the configured `issuer`, after the checks in the module docs.
pub fn jwks_uri_from_metadata(body: &[u8], issuer: &str, discovery_url: &str) -> Result<String, DiscoveryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| DiscoveryError::NotJson(e.to_string()))?;
    let obj = doc.as_object().ok_or(DiscoveryError::NotAnObject)?;
    let found = obj
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or(DiscoveryError::NoIssuer)?;
    if found != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            found: found.to_string(),
            expected: issuer.to_string(),
        });
    }
    let uri = obj
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or(DiscoveryError::NoJwksUri)?;
    if !crate::config::auth::is_fetchable_url(uri) {
        return Err(DiscoveryError::JwksUriNotHttps(uri.to_string()));
    }
    let host_of = |u: &str| {
        u.parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_ascii_lowercase))
    };
    let discovery_host = host_of(discovery_url).unwrap_or_default();
    if host_of(uri).as_deref() != Some(discovery_host.as_str()) {
        return Err(DiscoveryError::JwksUriOtherHost {
            uri: uri.to_string(),
            host: discovery_host,
        });
    }
    Ok(uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example.jp/realms/phr";
    const DISCO: &str = "https://idp.example.jp/realms/phr/.well-known/openid-configuration";

    fn parse(doc: Value) -> Result<String, DiscoveryError> {
        jwks_uri_from_metadata(doc.to_string().as_bytes(), ISS, DISCO)
    }

    #[test]
    fn a_matching_document_yields_its_jwks_uri() {
        let uri = "https://idp.example.jp/realms/phr/certs";
        assert_eq!(parse(json!({"issuer": ISS, "jwks_uri": uri})), Ok(uri.to_string()));
        // Host comparison ignores case (hosts are case-insensitive); the port may differ.
        let other_port = "https://IDP.example.jp:8443/certs";
        assert_eq!(
            parse(json!({"issuer": ISS, "jwks_uri": other_port})),
            Ok(other_port.to_string())
        );
    }

    #[test]
    fn the_issuer_must_match_exactly() {
        for found in [
            format!("{ISS}/"),
            ISS.to_uppercase(),
            "https://evil.example/realms/phr".into(),
        ] {
            let err = parse(json!({"issuer": found, "jwks_uri": "https://idp.example.jp/certs"})).unwrap_err();
            assert_eq!(
                err,
                DiscoveryError::IssuerMismatch {
                    found: found.clone(),
                    expected: ISS.into()
                }
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("issuer is {found:?}, expected {ISS:?} exactly")),
                "{err}"
            );
        }
        assert_eq!(
            parse(json!({"jwks_uri": "https://idp.example.jp/certs"})),
            Err(DiscoveryError::NoIssuer)
        );
        assert_eq!(
            parse(json!({"issuer": 7, "jwks_uri": "https://idp.example.jp/certs"})),
            Err(DiscoveryError::NoIssuer)
        );
    }

    #[test]
    fn shape_and_jwks_uri_are_checked() {
        assert!(matches!(
            jwks_uri_from_metadata(b"<html>", ISS, DISCO),
            Err(DiscoveryError::NotJson(_))
        ));
        assert_eq!(parse(json!([ISS])), Err(DiscoveryError::NotAnObject));
        assert_eq!(parse(json!({"issuer": ISS})), Err(DiscoveryError::NoJwksUri));
        for bad in [
            "http://idp.example.jp/certs",
            "/certs",
            "ftp://idp.example.jp/certs",
            "",
        ] {
            assert_eq!(
                parse(json!({"issuer": ISS, "jwks_uri": bad})),
                Err(DiscoveryError::JwksUriNotHttps(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse(json!({"issuer": ISS, "jwks_uri": "https://keys.elsewhere.example/certs"})),
            Err(DiscoveryError::JwksUriOtherHost {
                uri: "https://keys.elsewhere.example/certs".into(),
                host: "idp.example.jp".into()
            })
        );
    }

    #[test]
    fn loopback_http_is_allowed_like_jwks_url() {
        let iss = "http://127.0.0.1:8080";
        let disco = "http://127.0.0.1:8080/.well-known/openid-configuration";
        let doc = json!({"issuer": iss, "jwks_uri": "http://127.0.0.1:8080/jwks"}).to_string();
        assert_eq!(
            jwks_uri_from_metadata(doc.as_bytes(), iss, disco),
            Ok("http://127.0.0.1:8080/jwks".into())
        );
    }
}
