//! `[routes.smart]`: the SMART App Launch discovery document a FHIR route publishes at
//! `<fhir base>/.well-known/smart-configuration` (SMART App Launch 2.x §2.1.2 "Retrieve
//! .well-known/smart-configuration").
//!
//! SMART clients find the authorization server from the FHIR base alone, so the gateway
//! answers this one path itself, without a token (the document holds no medical data),
//! from these keys. Field names are the document's own, so the file reads like the JSON
//! it produces.
//!
//! Requirement IDs: AUTH-ID-1 (clients find the one authorization server that issues the
//! tokens this route accepts, over `https` only, with PKCE `S256` and never `plain`, as
//! SMART v2 requires). The catalogue has no SMART-specific ID; AUTH-ID-1 is the closest.

use super::ConfigIssue;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The SMART configuration document of one FHIR route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartConfig {
    /// The authorization server's issuer (`iss` of its tokens); required by SMART when
    /// `sso-openid-connect` is among the capabilities.
    pub issuer: Option<String>,
    /// Where the authorization server publishes its keys.
    pub jwks_uri: Option<String>,
    /// The OAuth 2.0 authorization endpoint (`https`).
    pub authorization_endpoint: String,
    /// The OAuth 2.0 token endpoint (`https`).
    pub token_endpoint: String,
    /// Dynamic client registration endpoint (RFC 7591).
    pub registration_endpoint: Option<String>,
    /// Token introspection endpoint (RFC 7662).
    pub introspection_endpoint: Option<String>,
    /// Token revocation endpoint (RFC 7009).
    pub revocation_endpoint: Option<String>,
    /// Where a user can review and revoke the apps they authorised.
    pub management_endpoint: Option<String>,
    /// Scopes the authorization server supports (omitted from the document when empty).
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// OAuth response types supported.
    #[serde(default = "default_response_types")]
    pub response_types_supported: Vec<String>,
    /// SMART capabilities (`launch-standalone`, `client-public`, `permission-v2`, ...).
    pub capabilities: Vec<String>,
    /// PKCE methods; must include `S256` and must not include `plain` (SMART v2).
    #[serde(default = "default_code_challenge_methods")]
    pub code_challenge_methods_supported: Vec<String>,
    /// OAuth grant types supported.
    #[serde(default = "default_grant_types")]
    pub grant_types_supported: Vec<String>,
    /// Client authentication methods at the token endpoint (omitted when empty).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

fn default_response_types() -> Vec<String> {
    vec!["code".into()]
}

fn default_code_challenge_methods() -> Vec<String> {
    vec!["S256".into()]
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into()]
}

impl SmartConfig {
    /// Every problem of this table, under `key` (`routes[0].smart`).
    pub fn issues(&self, key: &str) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (name, value) in self.urls() {
            if let Some(url) = value {
                if !is_https_url(url) {
                    out.push(ConfigIssue::new(
                        format!("{key}.{name}"),
                        format!("{url:?} is not an https URL with a host"),
                        "write it as \"https://auth.example.jp/...\"; SMART clients must reach the authorization server over TLS",
                    ));
                }
            }
        }
        let methods = &self.code_challenge_methods_supported;
        if methods.iter().any(|m| m == "plain") {
            out.push(ConfigIssue::new(
                format!("{key}.code_challenge_methods_supported"),
                "\"plain\" is listed, which SMART App Launch 2 forbids (it gives no protection against a stolen code)",
                "remove \"plain\"; list [\"S256\"]",
            ));
        }
        if !methods.iter().any(|m| m == "S256") {
            out.push(ConfigIssue::new(
                format!("{key}.code_challenge_methods_supported"),
                "\"S256\" is missing, which SMART App Launch 2 requires",
                "list [\"S256\"]",
            ));
        }
        if self.capabilities.iter().any(|c| c == "sso-openid-connect") && self.issuer.is_none() {
            out.push(ConfigIssue::new(
                format!("{key}.issuer"),
                "capability \"sso-openid-connect\" is listed but no issuer is set",
                "set issuer to the authorization server's issuer URL",
            ));
        }
        out
    }

    /// The URL-valued keys, by name.
    fn urls(&self) -> [(&'static str, Option<&String>); 8] {
        [
            ("issuer", self.issuer.as_ref()),
            ("jwks_uri", self.jwks_uri.as_ref()),
            ("authorization_endpoint", Some(&self.authorization_endpoint)),
            ("token_endpoint", Some(&self.token_endpoint)),
            ("registration_endpoint", self.registration_endpoint.as_ref()),
            ("introspection_endpoint", self.introspection_endpoint.as_ref()),
            ("revocation_endpoint", self.revocation_endpoint.as_ref()),
            ("management_endpoint", self.management_endpoint.as_ref()),
        ]
    }

    /// The JSON document served at `.well-known/smart-configuration`: the URL keys that
    /// are set and the lists (empty optional lists left out).
    pub fn document(&self) -> Value {
        let mut doc = Map::new();
        for (name, value) in self.urls() {
            if let Some(url) = value {
                doc.insert(name.into(), json!(url));
            }
        }
        let lists = [
            ("scopes_supported", &self.scopes_supported),
            ("response_types_supported", &self.response_types_supported),
            ("capabilities", &self.capabilities),
            (
                "code_challenge_methods_supported",
                &self.code_challenge_methods_supported,
            ),
            ("grant_types_supported", &self.grant_types_supported),
            (
                "token_endpoint_auth_methods_supported",
                &self.token_endpoint_auth_methods_supported,
            ),
        ];
        for (name, list) in lists {
            // `capabilities` is required by SMART even when empty.
            if !list.is_empty() || name == "capabilities" {
                doc.insert(name.into(), json!(list));
            }
        }
        Value::Object(doc)
    }
}

fn is_https_url(s: &str) -> bool {
    s.parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> SmartConfig {
        toml::from_str(&format!(
            "authorization_endpoint = \"https://auth.example.jp/authorize\"\ntoken_endpoint = \"https://auth.example.jp/token\"\ncapabilities = [\"launch-standalone\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn defaults_make_a_valid_smart_v2_document() {
        let c = parse("");
        assert!(c.issues("s").is_empty(), "{:?}", c.issues("s"));
        assert_eq!(
            c.document(),
            json!({
                "authorization_endpoint": "https://auth.example.jp/authorize",
                "token_endpoint": "https://auth.example.jp/token",
                "response_types_supported": ["code"],
                "capabilities": ["launch-standalone"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
            })
        );
    }

    #[test]
    fn plain_pkce_http_endpoints_and_a_missing_issuer_are_refused() {
        let c = parse(
            "code_challenge_methods_supported = [\"S256\", \"plain\"]\nrevocation_endpoint = \"http://auth.example.jp/revoke\"",
        );
        let keys: Vec<String> = c.issues("routes[0].smart").into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "routes[0].smart.revocation_endpoint",
                "routes[0].smart.code_challenge_methods_supported"
            ]
        );
        let c = parse("code_challenge_methods_supported = []");
        assert_eq!(c.issues("s")[0].key, "s.code_challenge_methods_supported");
        let mut c = parse("");
        c.capabilities.push("sso-openid-connect".into());
        assert_eq!(c.issues("s")[0].key, "s.issuer");
        assert!(toml::from_str::<SmartConfig>("token_endpoint = \"https://a/t\"").is_err());
    }
}
