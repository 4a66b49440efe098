//! Configuration parsing and validation messages.

use std::time::Duration;

use phr_gateway::auth::duration::parse_duration;
use phr_gateway::auth::{AuthConfig, AuthMode, RoutePolicy};
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<AuthConfig, serde_json::Error> {
    serde_json::from_value(v)
}

fn errors(v: serde_json::Value) -> Vec<String> {
    parse(v).unwrap().validate().iter().map(|e| e.to_string()).collect()
}

#[test]
fn full_config_parses_with_defaults_and_durations() {
    let c = parse(json!({
        "realm": "phr",
        "refresh_interval": "10m",
        "issuers": [{
            "issuer": "https://idp.example.jp",
            "jwks_url": "https://idp.example.jp/jwks",
            "audiences": ["https://api.example.jp"],
            "clock_skew": "30s",
            "max_token_age": "12h"
        }],
        "factors": { "trust_mfa_claim": false, "map": { "mynumber_card": "possession" } }
    }))
    .unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let i = &c.issuers[0];
    assert_eq!(i.clock_skew, Duration::from_secs(30));
    assert_eq!(i.max_token_age, Some(Duration::from_secs(43_200)));
    assert_eq!(i.max_token_bytes, 8192);
    assert_eq!(i.algorithms, ["RS256", "PS256", "ES256", "EdDSA"]);
    assert_eq!(c.refresh_interval, Duration::from_secs(600));
    assert_eq!(c.token_cache_capacity, 100_000);
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    assert!(parse_duration("5 minutes").is_err());
    // One grammar everywhere: [auth] no longer takes bare seconds.
    let e = parse(json!({"issuers": [{"issuer": "https://idp.example.jp", "clock_skew": 30}]})).unwrap_err();
    assert!(
        e.to_string()
            .contains("write durations with a unit, e.g. \"30s\" (a bare 30 is no longer accepted)"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let e = parse(json!({"issuers": [], "token_cache_capacty": 5})).unwrap_err();
    assert!(e.to_string().contains("token_cache_capacty"), "{e}");
    let r: Result<RoutePolicy, _> = serde_json::from_value(json!({"two_factors": true}));
    assert!(r.is_err());
    let r: RoutePolicy =
        serde_json::from_value(json!({"mode": "optional", "two_factor": true, "max_auth_age": "15m"})).unwrap();
    assert_eq!(r.mode, AuthMode::Optional);
    assert!(r.validate("routes[0]").is_empty());
    let r: RoutePolicy = serde_json::from_value(json!({"mode": "none", "required_scopes": ["a"]})).unwrap();
    assert_eq!(r.validate("routes[0]")[0].key, "routes[0].mode");
}

#[test]
fn validation_names_key_and_fix() {
    let errs = errors(json!({"issuers": [{
        "issuer": "https://idp",
        "jwks_url": "http://idp.example.jp/jwks",
        "audiences": [],
        "algorithms": ["RS256", "none", "HS256"],
        "shared_secret": "short"
    }]}));
    let has = |k: &str, m: &str| errs.iter().any(|e| e.starts_with(k) && e.contains(m));
    assert!(has("auth.issuers[0].jwks_url", "https"), "{errs:#?}");
    assert!(has("auth.issuers[0].audiences", "at least one"), "{errs:#?}");
    assert!(has("auth.issuers[0].algorithms", "\"none\""), "{errs:#?}");
    assert!(has("auth.issuers[0].algorithms", "cannot be mixed"), "{errs:#?}");
    assert!(has("auth.issuers[0].shared_secret", "only allowed"), "{errs:#?}");
    assert!(has("auth.issuers[0].shared_secret", "at least 32 bytes"), "{errs:#?}");
}

#[test]
fn loopback_http_and_hmac_only_issuers_are_fine() {
    let errs = errors(json!({"issuers": [
        {"issuer": "a", "jwks_url": "http://127.0.0.1:8080/jwks", "audiences": ["x"]},
        {"issuer": "b", "jwks_url": "http://[::1]/jwks", "audiences": ["x"]},
        {"issuer": "c", "algorithms": ["HS256"], "shared_secret": "0123456789abcdef0123456789abcdef", "audiences": ["x"]}
    ]}));
    assert!(errs.is_empty(), "{errs:#?}");
    let errs = errors(json!({"issuers": [
        {"issuer": "a", "jwks_url": "https://x/j", "audiences": ["x"]},
        {"issuer": "a", "audiences": ["x"]}
    ]}));
    assert!(errs.iter().any(|e| e.contains("duplicate issuer")), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.starts_with("auth.issuers[1].jwks_url")),
        "{errs:#?}"
    );
}

#[test]
fn discovery_is_exclusive_with_hand_configured_keys_and_needs_https() {
    let ok = parse(json!({"issuers": [
        {"issuer": "https://idp.example.jp/realms/phr/", "discovery": true, "audiences": ["x"]},
        {"issuer": "b", "discovery_url": "https://idp.example.jp/.well-known/oauth-authorization-server/b", "audiences": ["x"]},
        {"issuer": "http://127.0.0.1:8080", "discovery": true, "audiences": ["x"]}
    ]}))
    .unwrap();
    assert!(ok.validate().is_empty(), "{:#?}", ok.validate());
    // OIDC Discovery §4.1: the issuer's trailing slash is removed before the well-known path.
    assert_eq!(
        ok.issuers[0].discovery_document_url().as_deref(),
        Some("https://idp.example.jp/realms/phr/.well-known/openid-configuration")
    );
    assert_eq!(
        ok.issuers[1].fetch_url().as_deref(),
        Some("https://idp.example.jp/.well-known/oauth-authorization-server/b")
    );

    let errs = errors(json!({"issuers": [
        {"issuer": "https://a.example", "discovery": true, "jwks_url": "https://a.example/jwks", "audiences": ["x"]},
        {"issuer": "https://b.example", "discovery_url": "https://b.example/m", "jwks_file": "/k.json", "audiences": ["x"]},
        {"issuer": "http://c.example", "discovery": true, "audiences": ["x"]},
        {"issuer": "https://d.example", "discovery_url": "http://d.example/m", "audiences": ["x"]}
    ]}));
    let has = |k: &str, m: &str| errs.iter().any(|e| e.starts_with(k) && e.contains(m));
    assert!(
        has("auth.issuers[0].discovery", "cannot be combined with jwks_url") && has("", "remove jwks_url"),
        "{errs:#?}"
    );
    assert!(
        has("auth.issuers[1].discovery_url", "cannot be combined with jwks_file"),
        "{errs:#?}"
    );
    assert!(
        has(
            "auth.issuers[2].discovery",
            "\"http://c.example/.well-known/openid-configuration\", must be https"
        ),
        "{errs:#?}"
    );
    assert!(
        has("auth.issuers[3].discovery_url", "must be an https URL"),
        "{errs:#?}"
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
}
