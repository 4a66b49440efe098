//! OIDC discovery (issue 19 item 2): the `jwks_uri` comes from the provider metadata,
//! which must name the configured issuer exactly; the metadata is re-read with the keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use phr_gateway::auth::{AuthConfig, Authenticator, BoxFuture, JwksFetcher, NoRevocations, RoutePolicy};
use serde_json::json;

use crate::common::*;

const DISCO: &str = "https://idp.example.jp/.well-known/openid-configuration";

/// A provider: answers per URL, counting calls per URL.
#[derive(Default)]
struct Provider {
    answers: Mutex<HashMap<String, Result<Bytes, String>>>,
    calls: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Provider {
    fn set(&self, url: &str, a: Result<Bytes, String>) {
        self.answers.lock().unwrap().insert(url.to_string(), a);
    }
    fn metadata(&self, issuer: &str, jwks_uri: &str) {
        let doc = json!({"issuer": issuer, "jwks_uri": jwks_uri, "response_types_supported": ["code"]});
        self.set(DISCO, Ok(Bytes::from(doc.to_string())));
    }
    fn calls(&self, url: &str) -> usize {
        self.calls.lock().unwrap().get(url).copied().unwrap_or(0)
    }
}

impl JwksFetcher for Provider {
    fn fetch<'a>(&'a self, issuer: &'a str, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            assert_eq!(issuer, ISS);
            self.total.fetch_add(1, Ordering::SeqCst);
            *self.calls.lock().unwrap().entry(url.to_string()).or_default() += 1;
            self.answers
                .lock()
                .unwrap()
                .get(url)
                .cloned()
                .unwrap_or_else(|| Err("HTTP 404 Not Found".into()))
        })
    }
}

fn discovery_config() -> AuthConfig {
    let mut c = config();
    c.issuers[0].jwks_url = None;
    c.issuers[0].discovery = true;
    c.min_refetch_interval = std::time::Duration::ZERO;
    c
}

fn authenticator(p: &Arc<Provider>) -> Arc<Authenticator> {
    Arc::new(Authenticator::new(discovery_config(), p.clone(), Arc::new(NoRevocations)).unwrap())
}

async fn accepts(a: &Authenticator, token: &str) -> bool {
    let h = bearer(token);
    a.authenticate(&request(&h, &RoutePolicy::default())).await.is_ok()
}

#[tokio::test]
async fn keys_come_from_the_discovered_jwks_uri_and_rotation_is_followed() {
    let p = Arc::new(Provider::default());
    p.metadata(ISS, "https://idp.example.jp/keys/v1");
    p.set(
        "https://idp.example.jp/keys/v1",
        Ok(jwks(&[("rsa1", Algorithm::RS256, "k1")])),
    );
    let a = authenticator(&p);
    a.refresh_all().await.expect("keys load through discovery");
    assert_eq!((p.calls(DISCO), p.calls("https://idp.example.jp/keys/v1")), (1, 1));
    assert!(accepts(&a, &sign("rsa1", Algorithm::RS256, "k1", &claims())).await);

    // The provider rotates: a new kid at a new jwks_uri. The unknown kid re-reads the
    // metadata, follows it to the new key set and accepts the token.
    p.metadata(ISS, "https://idp.example.jp/keys/v2");
    p.set(
        "https://idp.example.jp/keys/v2",
        Ok(jwks(&[("rsa2", Algorithm::RS256, "k2")])),
    );
    assert!(accepts(&a, &sign("rsa2", Algorithm::RS256, "k2", &claims())).await);
    assert_eq!(p.calls(DISCO), 2);
    assert_eq!(p.calls("https://idp.example.jp/keys/v2"), 1);
    assert_eq!(a.stats().unknown_kid_refetches, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_metadata_fetch_keeps_the_last_jwks_uri_and_still_refreshes_keys() {
    let p = Arc::new(Provider::default());
    p.metadata(ISS, "https://idp.example.jp/keys");
    p.set(
        "https://idp.example.jp/keys",
        Ok(jwks(&[("rsa1", Algorithm::RS256, "k1")])),
    );
    let a = authenticator(&p);
    a.refresh_all().await.unwrap();

    p.set(DISCO, Err("HTTP 503 Service Unavailable".into()));
    p.set(
        "https://idp.example.jp/keys",
        Ok(jwks(&[("rsa2", Algorithm::RS256, "k2")])),
    );
    a.refresh_all()
        .await
        .expect("keys refreshed from the last good jwks_uri");
    assert_eq!(p.calls("https://idp.example.jp/keys"), 2);
    // The new key arrived with the scheduled refresh: no unknown-kid re-fetch needed.
    assert!(accepts(&a, &sign("rsa2", Algorithm::RS256, "k2", &claims())).await);
    assert_eq!(a.stats().unknown_kid_refetches, 0);

    // A document that turns hostile (another issuer) is not followed either.
    p.metadata("https://evil.example", "https://idp.example.jp/evil-keys");
    a.refresh_all().await.unwrap();
    assert_eq!(p.calls("https://idp.example.jp/evil-keys"), 0);
}

#[tokio::test(start_paused = true)]
async fn start_fails_with_the_precise_reason_when_discovery_never_succeeded() {
    let p = Arc::new(Provider::default());
    p.metadata("https://idp.example.jp/", "https://idp.example.jp/keys");
    p.set("https://idp.example.jp/keys", Ok(default_jwks()));
    let a = authenticator(&p);
    let msg = a.start().await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!(
            "discovery document of issuer {ISS}: issuer is \"https://idp.example.jp/\", expected \"{ISS}\" exactly"
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("(JWKS discovery {DISCO})")), "{msg}");
    assert!(msg.contains("Fix:"), "{msg}");
    assert_eq!(
        p.calls("https://idp.example.jp/keys"),
        0,
        "keys of a refused document are never fetched"
    );

    // A jwks_uri on another host than the discovery URL is refused too.
    p.metadata(ISS, "https://keys.elsewhere.example/jwks");
    let msg = a.refresh_all().await.unwrap_err().to_string();
    assert!(msg.contains("is not on the discovery host \"idp.example.jp\""), "{msg}");

    // Unreachable metadata fails like an unreachable jwks_url.
    p.set(DISCO, Err("connection refused".into()));
    let msg = a.refresh_all().await.unwrap_err().to_string();
    assert!(msg.contains("connection refused"), "{msg}");
}

#[tokio::test]
async fn discovery_url_overrides_the_derived_url() {
    let p = Arc::new(Provider::default());
    let rfc8414 = "https://idp.example.jp/.well-known/oauth-authorization-server";
    p.set(
        rfc8414,
        Ok(Bytes::from(
            json!({"issuer": ISS, "jwks_uri": "https://idp.example.jp/k"}).to_string(),
        )),
    );
    p.set("https://idp.example.jp/k", Ok(default_jwks()));
    let mut c = discovery_config();
    c.issuers[0].discovery = false;
    c.issuers[0].discovery_url = Some(rfc8414.into());
    let a = Authenticator::new(c, p.clone(), Arc::new(NoRevocations)).unwrap();
    a.refresh_all().await.unwrap();
    assert_eq!((p.calls(rfc8414), p.calls(DISCO)), (1, 0));
    assert!(accepts(&a, &sign("ec1", Algorithm::ES256, "ec1", &claims())).await);
}
