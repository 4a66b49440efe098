//! Shared fixtures of the auth tests: a scriptable JWKS fetcher, an authenticator built
//! on it, and request builders. Keys, JWKS documents and signed tokens come from
//! `phr_test_support::tokens`, which the end-to-end tests share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use phr_gateway::auth::{
    AuthConfig, AuthRequest, Authenticator, BoxFuture, IssuerConfig, JwksFetcher, MemoryRevocations, RoutePolicy,
};
pub use phr_test_support::tokens::*;

/// JWKS fetcher whose answer a test can change, counting calls.
pub struct MockFetcher {
    pub answer: Mutex<Result<Bytes, String>>,
    pub calls: AtomicUsize,
    pub delay: Duration,
}

impl MockFetcher {
    pub fn new(body: Bytes) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Ok(body)),
            calls: AtomicUsize::new(0),
            delay: Duration::ZERO,
        })
    }
    pub fn set(&self, a: Result<Bytes, String>) {
        *self.answer.lock().unwrap() = a;
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for MockFetcher {
    fn fetch<'a>(&'a self, issuer: &'a str, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>> {
        Box::pin(async move {
            assert_eq!((issuer, url), (ISS, JWKS_URL));
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.answer.lock().unwrap().clone()
        })
    }
}

pub fn issuer() -> IssuerConfig {
    let mut i = IssuerConfig::new(ISS, JWKS_URL, &[AUD]);
    i.algorithms = ["RS256", "PS256", "ES256", "EdDSA"].map(String::from).to_vec();
    i
}

pub fn config() -> AuthConfig {
    AuthConfig {
        issuers: vec![issuer()],
        ..Default::default()
    }
}

pub struct Env {
    pub auth: Arc<Authenticator>,
    pub fetcher: Arc<MockFetcher>,
    pub revocations: Arc<MemoryRevocations>,
}

pub async fn env_with(config: AuthConfig, fetcher: Arc<MockFetcher>) -> Env {
    let revocations = Arc::new(MemoryRevocations::new());
    let auth = Arc::new(Authenticator::new(config, fetcher.clone(), revocations.clone()).unwrap());
    auth.refresh_all().await.unwrap();
    Env {
        auth,
        fetcher,
        revocations,
    }
}

pub async fn env() -> Env {
    env_with(config(), MockFetcher::new(default_jwks())).await
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// Request on the default URL with GET.
pub fn request<'a>(headers: &'a HeaderMap, policy: &'a RoutePolicy) -> AuthRequest<'a> {
    AuthRequest {
        method: &Method::GET,
        url: URL,
        headers,
        policy,
        client_cert_sha256: None,
    }
}

impl Env {
    pub async fn check(&self, token: &str) -> Result<phr_gateway::auth::Identity, phr_gateway::auth::AuthError> {
        self.check_policy(token, &RoutePolicy::default()).await
    }
    pub async fn check_policy(
        &self,
        token: &str,
        policy: &RoutePolicy,
    ) -> Result<phr_gateway::auth::Identity, phr_gateway::auth::AuthError> {
        let h = bearer(token);
        self.auth.authenticate(&request(&h, policy)).await
    }
}
