//! JWKS loading, unknown-kid re-fetch, key rotation and fetch failures.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use jsonwebtoken::Algorithm;
use phr_gateway::auth::{AuthError, Authenticator, NoRevocations};
use tokio::task::JoinSet;

fn rsa1_only() -> bytes::Bytes {
    jwks(&[("rsa1", Algorithm::RS256, "rsa1")])
}

fn rsa1_and_rsa2() -> bytes::Bytes {
    jwks(&[("rsa1", Algorithm::RS256, "rsa1"), ("rsa2", Algorithm::RS256, "rsa2")])
}

#[tokio::test]
async fn unknown_kid_fails_after_one_refetch_and_refetches_are_rate_limited() {
    let e = env_with(config(), MockFetcher::new(rsa1_only())).await;
    assert_eq!(e.fetcher.calls(), 1);
    let t = sign("rsa2", Algorithm::RS256, "nope", &claims());
    let err = e.check(&t).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownKid(Some("nope".into())));
    assert_eq!(e.fetcher.calls(), 2, "exactly one re-fetch for the unknown kid");
    // A flood of forged kids does not hammer the IdP.
    for i in 0..20 {
        let t = sign("rsa2", Algorithm::RS256, &format!("forged-{i}"), &claims());
        assert_eq!(e.check(&t).await.unwrap_err().code(), "unknown_kid");
    }
    assert_eq!(e.fetcher.calls(), 2);
    assert_eq!(e.auth.stats().unknown_kid_refetches, 1);
}

#[tokio::test(start_paused = true)]
async fn refetch_allowed_again_after_min_interval() {
    let e = env_with(config(), MockFetcher::new(rsa1_only())).await;
    let t = sign("rsa2", Algorithm::RS256, "rsa2", &claims());
    assert!(e.check(&t).await.is_err());
    assert_eq!(e.fetcher.calls(), 2);
    e.fetcher.set(Ok(rsa1_and_rsa2()));
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(
        e.check(&t).await.is_ok(),
        "rotation picked up once the rate limit lapsed"
    );
    assert_eq!(e.fetcher.calls(), 3);
}

#[tokio::test]
async fn key_rotation_mid_run_causes_no_401() {
    let e = env_with(config(), MockFetcher::new(rsa1_only())).await;
    let old = sign("rsa1", Algorithm::RS256, "rsa1", &claims());
    assert!(e.check(&old).await.is_ok());
    // The IdP publishes a new key and immediately signs with it.
    e.fetcher.set(Ok(rsa1_and_rsa2()));
    let new = sign("rsa2", Algorithm::RS256, "rsa2", &claims());
    let id = e.check(&new).await.expect("first token with the new kid must pass");
    assert_eq!(id.subject, "user-1");
    assert_eq!(e.fetcher.calls(), 2);
    assert!(
        e.check(&old).await.is_ok(),
        "old key still published, old token still good"
    );

    // The IdP withdraws the old key: its cached tokens stop working too.
    e.fetcher.set(Ok(jwks(&[("rsa2", Algorithm::RS256, "rsa2")])));
    e.auth.refresh_all().await.unwrap();
    assert_eq!(e.check(&old).await.unwrap_err().code(), "unknown_kid");
    assert!(e.check(&new).await.is_ok());
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let mut f = MockFetcher::new(rsa1_only());
    Arc::get_mut(&mut f).unwrap().delay = Duration::from_millis(50);
    let e = env_with(config(), f).await;
    e.fetcher.set(Ok(rsa1_and_rsa2()));
    let mut set = JoinSet::new();
    for _ in 0..10 {
        let auth = e.auth.clone();
        let t = sign("rsa2", Algorithm::RS256, "rsa2", &claims());
        set.spawn(async move {
            let h = bearer(&t);
            let p = phr_gateway::auth::RoutePolicy::default();
            auth.authenticate(&request(&h, &p)).await.map(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().expect("every concurrent request with the new kid passes");
    }
    assert_eq!(e.fetcher.calls(), 2, "one initial fetch + one shared re-fetch");
}

#[tokio::test(start_paused = true)]
async fn fetch_failure_keeps_last_good_keys() {
    let e = env_with(config(), MockFetcher::new(default_jwks())).await;
    e.fetcher.set(Err("connection refused".into()));
    e.auth.refresh_all().await.expect("issuer still has its last good keys");
    let s = e.auth.stats();
    assert_eq!(s.jwks_fetch_failures, 3, "three tries with backoff, each counted");
    assert!(e.check(&sign("ed1", Algorithm::EdDSA, "ed1", &claims())).await.is_ok());
    // An empty or broken JWKS is a failure too, not a replacement.
    e.fetcher.set(Ok(bytes::Bytes::from_static(br#"{"keys":[]}"#)));
    e.auth.refresh_all().await.unwrap();
    e.fetcher.set(Ok(bytes::Bytes::from_static(b"<html>")));
    e.auth.refresh_all().await.unwrap();
    assert_eq!(e.auth.stats().jwks_fetch_failures, 9);
    assert!(e.check(&sign("ec1", Algorithm::ES256, "ec1", &claims())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn start_fails_without_keys_and_background_refresh_runs() {
    let f = MockFetcher::new(default_jwks());
    f.set(Err("dns failure".into()));
    let a = Arc::new(Authenticator::new(config(), f.clone(), Arc::new(NoRevocations)).unwrap());
    let err = a.start().await.unwrap_err();
    assert_eq!(err.0[0].issuer, ISS);
    // For an operator: the issuer in words, where its keys were to come from, the fix.
    let msg = err.to_string();
    assert!(msg.contains(&format!("issuer {ISS} (JWKS url ")), "{msg}");
    assert!(
        msg.contains("dns failure") && msg.contains("Fix:") && !msg.contains("(\""),
        "{msg}"
    );
    // Requests meanwhile get 503, not a misleading 401.
    let t = sign("ec1", Algorithm::ES256, "ec1", &claims());
    let h = bearer(&t);
    let p = phr_gateway::auth::RoutePolicy::default();
    let err = a.authenticate(&request(&h, &p)).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (503, "keys_unavailable"));

    let refetches = a.stats().unknown_kid_refetches;
    f.set(Ok(rsa1_only()));
    let task = a.start().await.expect("keys load once the IdP answers");
    let before = f.calls();
    f.set(Ok(rsa1_and_rsa2()));
    tokio::time::sleep(Duration::from_secs(301)).await;
    assert_eq!(f.calls(), before + 1, "background refresh after refresh_interval");
    let t2 = sign("rsa2", Algorithm::RS256, "rsa2", &claims());
    let h2 = bearer(&t2);
    assert!(a.authenticate(&request(&h2, &p)).await.is_ok());
    assert_eq!(
        a.stats().unknown_kid_refetches,
        refetches,
        "key came from the background refresh"
    );
    drop(a);
    tokio::time::sleep(Duration::from_secs(301)).await;
    assert!(task.is_finished(), "refresh task ends with the authenticator");
}

#[tokio::test]
async fn a_missing_jwks_file_is_reported_as_a_file() {
    let mut cfg = config();
    cfg.issuers[0].jwks_url = None;
    cfg.issuers[0].jwks_file = Some("/nonexistent/phr-test-jwks.json".into());
    let f = MockFetcher::new(default_jwks());
    let a = Authenticator::new(cfg, f, Arc::new(NoRevocations)).unwrap();
    let msg = a.refresh_all().await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!("issuer {ISS} (JWKS file /nonexistent/phr-test-jwks.json)")),
        "{msg}"
    );
    assert!(
        msg.contains("jwks_file") && !msg.contains("url") && !msg.contains("(\""),
        "{msg}"
    );
}
