//! Issuer key sets (JWKS): parsing, lookup by `kid`, refresh and rotation.
//!
//! Keys are fetched through [`JwksFetcher`], implemented by the gateway with
//! its own HTTPS client (so this module needs no HTTP stack and its TLS
//! policy stays the gateway's, EX-TLS-2). Rules:
//! - a failed or empty fetch never replaces the last good keys;
//! - an unknown `kid` triggers one immediate re-fetch (key rotation at the
//!   IdP must not cause a 401), at most once per `min_refetch_interval` per
//!   issuer, and concurrent misses wait for that one fetch;
//! - a key is only used for algorithms of its own type (RSA for RS*/PS*,
//!   P-256 for ES256, P-384 for ES384, Ed25519 for EdDSA), RSA keys need
//!   at least 2048 bits, and keys marked for encryption or carrying private
//!   members are skipped;
//! - with discovery ([`KeySource::Discovery`], [`super::discovery`]) every fetch first
//!   re-reads the provider metadata for the current `jwks_uri`; if that fails, the last
//!   good `jwks_uri` is still used, and without one the fetch fails like a JWKS fetch;
//! - every attempt is counted in `phr_jwks_fetches_total{issuer, kind, result}`
//!   (LOG-MAINT-1), with handles registered per issuer when the keys are built.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use metrics::Counter;
use serde_json::Value;
use tokio::time::Instant;

use super::error::AuthError;

/// Boxed future, so the fetcher trait stays object-safe without `async-trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches an issuer's JWKS document. The gateway implements this with its
/// HTTPS client (TLS policy, proxy, timeouts); the error string is logged.
pub trait JwksFetcher: Send + Sync {
    /// GET `url` for `issuer`, returning the raw JSON body.
    fn fetch<'a>(&'a self, issuer: &'a str, url: &'a str) -> BoxFuture<'a, Result<Bytes, String>>;
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// JWKS URL, fetched with the [`JwksFetcher`].
    Url(String),
    /// JWKS file on disk.
    File(PathBuf),
    /// HMAC shared secret (HS* issuers only; never mixed with public keys).
    Secret(Vec<u8>),
    /// Provider metadata URL (OIDC Discovery / RFC 8414) naming the `jwks_uri`.
    Discovery(String),
}

/// Key type, and so which algorithms a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA public key of `bits` modulus bits.
    Rsa {
        /// Modulus size.
        bits: usize,
    },
    /// EC P-256.
    EcP256,
    /// EC P-384.
    EcP384,
    /// OKP Ed25519.
    Ed25519,
    /// HMAC secret from configuration.
    Hmac,
}

impl KeyKind {
    /// Whether this key type may verify `alg` (prevents cross-type confusion).
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::EcP256 => alg == ES256,
            Self::EcP384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
            Self::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid`, if the JWKS gave one.
    pub kid: Option<String>,
    /// Key type.
    pub kind: KeyKind,
    /// `alg` pinned by the JWKS entry, if any: then only that alg is accepted.
    pub alg: Option<Algorithm>,
    /// The key for `jsonwebtoken`.
    pub key: DecodingKey,
}

impl VerifyKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// JWK members that only private keys have; a JWK with any is refused.
pub const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Parse one public JWK (also used for DPoP proof keys). Refuses private or
/// symmetric keys, encryption keys, weak RSA and unsupported curves.
pub fn parse_public_jwk(v: &Value) -> Result<VerifyKey, JwksError> {
    let obj = v.as_object().ok_or(JwksError::NotAnObject)?;
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(JwksError::PrivateMember(m));
    }
    if obj.get("use").is_some_and(|u| u != "sig") {
        return Err(JwksError::NotForSigning);
    }
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let kind = match (s("kty"), s("crv")) {
        (Some("RSA"), _) => {
            let n = URL_SAFE_NO_PAD
                .decode(s("n").ok_or(JwksError::RsaWithoutN)?)
                .map_err(|_| JwksError::RsaNNotBase64url)?;
            let lead = n.iter().take_while(|b| **b == 0).count();
            let bits = (n.len() - lead) * 8;
            if bits < 2048 {
                return Err(JwksError::WeakRsa { bits });
            }
            KeyKind::Rsa { bits }
        }
        (Some("EC"), Some("P-256")) => KeyKind::EcP256,
        (Some("EC"), Some("P-384")) => KeyKind::EcP384,
        (Some("OKP"), Some("Ed25519")) => KeyKind::Ed25519,
        (kty, crv) => {
            return Err(JwksError::UnsupportedKeyType {
                kty: kty.map(String::from),
                crv: crv.map(String::from),
            })
        }
    };
    let alg = match s("alg") {
        None => None,
        Some(a) => Some(
            a.parse::<Algorithm>()
                .map_err(|_| JwksError::UnknownAlg(a.to_string()))?,
        ),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err(JwksError::AlgDoesNotFit);
    }
    let jwk: Jwk = serde_json::from_value(v.clone()).map_err(JwksError::BadJwk)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(JwksError::UnusableJwk)?;
    Ok(VerifyKey {
        kid: s("kid").map(String::from),
        kind,
        alg,
        key,
    })
}

/// Parse a JWKS document; unusable keys are skipped (and reported), so one
/// odd key at the IdP does not take the others down.
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<Arc<VerifyKey>>, Vec<String>), JwksError> {
    let doc: Value = serde_json::from_slice(body).map_err(JwksError::NotJson)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeysArray)?;
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match parse_public_jwk(k) {
            Ok(key) => ok.push(Arc::new(key)),
            Err(e) => skipped.push(format!("key {i}: {e}")),
        }
    }
    Ok((ok, skipped))
}

/// Why a JWK or JWKS is refused, or why the keys of an issuer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The JWK is not a JSON object.
    #[error("JWK is not an object")]
    NotAnObject,
    /// The JWK carries a member only private or secret keys have.
    #[error("JWK contains private/secret member {0:?}")]
    PrivateMember(&'static str),
    /// The JWK's `use` is not `sig`.
    #[error("JWK use is not sig")]
    NotForSigning,
    /// An RSA JWK without its modulus.
    #[error("RSA JWK without n")]
    RsaWithoutN,
    /// An RSA modulus that is not base64url.
    #[error("RSA n not base64url")]
    RsaNNotBase64url,
    /// An RSA key shorter than 2048 bits.
    #[error("RSA key of {bits} bits, need >= 2048")]
    WeakRsa {
        /// The key's size.
        bits: usize,
    },
    /// A key type or curve the gateway does not accept.
    #[error("unsupported key type {kty:?}/{crv:?}")]
    UnsupportedKeyType {
        /// `kty`.
        kty: Option<String>,
        /// `crv`.
        crv: Option<String>,
    },
    /// An `alg` that is not a known algorithm.
    #[error("JWK alg {0:?} unknown")]
    UnknownAlg(String),
    /// An `alg` its key type cannot sign with.
    #[error("JWK alg does not fit its key type")]
    AlgDoesNotFit,
    /// The JWK does not deserialise.
    #[error("JWK: {0}")]
    BadJwk(#[source] serde_json::Error),
    /// The JWK does not make a verification key.
    #[error("JWK: {0}")]
    UnusableJwk(#[source] jsonwebtoken::errors::Error),
    /// The JWKS document is not JSON.
    #[error("JWKS is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The JWKS document has no `keys` array.
    #[error("JWKS has no keys array")]
    NoKeysArray,
    /// The JWKS file could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fetch took longer than its bound.
    #[error("JWKS fetch timed out")]
    TimedOut,
    /// The fetcher failed (network, TLS, HTTP status, size); its message.
    #[error("{0}")]
    Fetch(String),
    /// The JWKS holds no key the gateway can use.
    #[error("JWKS has no usable signing key")]
    NoUsableKey,
    /// No fetch was attempted.
    #[error("no attempt")]
    NoAttempt,
    /// The provider metadata could not be fetched or was refused, and no earlier
    /// `jwks_uri` is known.
    #[error("discovery document of issuer {issuer}: {reason} (fetched from {url})")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// The discovery URL.
        url: String,
        /// Why (fetch error or [`super::discovery::DiscoveryError`]).
        reason: String,
    },
}

/// What caused a fetch: the `kind` label of `phr_jwks_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    /// Start-up load and the background refresh.
    Scheduled,
    /// The immediate re-fetch after a token named an unknown `kid`.
    UnknownKid,
    /// A provider metadata (discovery) document fetch, whatever caused it.
    Discovery,
}

/// Name of the per-issuer fetch counter.
pub const FETCHES_METRIC: &str = "phr_jwks_fetches_total";

/// `phr_jwks_fetches_total{issuer, kind, result}` handles of one issuer, registered once
/// so a fetch increments a counter it holds instead of hashing labels.
pub struct FetchMetrics {
    /// Indexed by `[kind][0 = success, 1 = failure]`.
    counters: [[Counter; 2]; 3],
}

impl FetchMetrics {
    /// Registers the six counters of `issuer`.
    pub fn register(issuer: &str) -> Self {
        let c = |kind: &'static str, result: &'static str| metrics::counter!(FETCHES_METRIC, "issuer" => issuer.to_string(), "kind" => kind, "result" => result);
        Self {
            counters: [
                [c("scheduled", "success"), c("scheduled", "failure")],
                [c("unknown_kid", "success"), c("unknown_kid", "failure")],
                [c("discovery", "success"), c("discovery", "failure")],
            ],
        }
    }

    /// Counts one attempt of `kind`.
    pub fn record(&self, kind: FetchKind, ok: bool) {
        let k = match kind {
            FetchKind::Scheduled => 0,
            FetchKind::UnknownKid => 1,
            FetchKind::Discovery => 2,
        };
        self.counters[k][usize::from(!ok)].increment(1);
    }
}

/// Counters the gateway can export as metrics.
#[derive(Debug, Default)]
pub struct JwksCounters {
    /// JWKS fetch attempts.
    pub fetches: AtomicU64,
    /// Failed fetch attempts (network, parse, empty set).
    pub fetch_failures: AtomicU64,
    /// Immediate re-fetches caused by an unknown `kid`.
    pub unknown_kid_refetches: AtomicU64,
}

/// Keys and refresh state of one issuer.
pub struct IssuerKeys {
    issuer: String,
    source: KeySource,
    keys: RwLock<Option<Arc<Vec<Arc<VerifyKey>>>>>,
    /// Held during any fetch (single flight); holds the last on-demand re-fetch time.
    fetch_lock: tokio::sync::Mutex<Option<Instant>>,
    counters: Arc<JwksCounters>,
    metrics: FetchMetrics,
    /// With [`KeySource::Discovery`]: the last `jwks_uri` a valid document named.
    jwks_uri: RwLock<Option<String>>,
}

/// Upper bound for one fetch, whatever the fetcher does.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl IssuerKeys {
    /// Keys of `issuer` from `source`; nothing is loaded until [`Self::refresh`].
    pub fn new(issuer: &str, source: KeySource, counters: Arc<JwksCounters>) -> Self {
        let initial = match &source {
            KeySource::Secret(s) => Some(Arc::new(vec![Arc::new(VerifyKey {
                kid: None,
                kind: KeyKind::Hmac,
                alg: None,
                key: DecodingKey::from_secret(s),
            })])),
            _ => None,
        };
        Self {
            issuer: issuer.to_string(),
            source,
            keys: RwLock::new(initial),
            fetch_lock: tokio::sync::Mutex::new(None),
            counters,
            metrics: FetchMetrics::register(issuer),
            jwks_uri: RwLock::new(None),
        }
    }

    fn current(&self) -> Option<Arc<Vec<Arc<VerifyKey>>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of usable keys now (0 = never loaded).
    pub fn key_count(&self) -> usize {
        self.current().map_or(0, |k| k.len())
    }

    /// Whether a key with this `kid` is still published (cached tokens signed
    /// by a withdrawn key stop being accepted).
    pub fn still_has(&self, kid: Option<&str>) -> bool {
        match (kid, self.current()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(k), Some(keys)) => {
                matches!(self.source, KeySource::Secret(_)) || keys.iter().any(|v| v.kid.as_deref() == Some(k))
            }
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<Arc<VerifyKey>>, AuthError> {
        let Some(keys) = self.current() else {
            return Ok(None);
        };
        if matches!(self.source, KeySource::Secret(_)) {
            return Ok(keys.first().filter(|k| k.accepts(alg)).cloned());
        }
        match kid {
            Some(kid) => {
                let same: Vec<_> = keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
                if same.is_empty() {
                    return Ok(None);
                }
                same.iter()
                    .find(|k| k.accepts(alg))
                    .map(|k| Some(Arc::clone(k)))
                    .ok_or_else(|| AuthError::KeyTypeMismatch {
                        alg: format!("{alg:?}"),
                        kty: format!("{:?}", same[0].kind),
                    })
            }
            None => {
                let fit: Vec<_> = keys.iter().filter(|k| k.accepts(alg)).collect();
                Ok((fit.len() == 1).then(|| Arc::clone(fit[0])))
            }
        }
    }

    /// Key for (`kid`, `alg`); on a miss, one rate-limited re-fetch, then one retry.
    pub async fn key_for(
        &self,
        fetcher: &dyn JwksFetcher,
        kid: Option<&str>,
        alg: Algorithm,
        min_refetch: Duration,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(k) = self.lookup(kid, alg)? {
            return Ok(k);
        }
        let mut last = self.fetch_lock.lock().await;
        // Another request may have fetched while we waited.
        if let Some(k) = self.lookup(kid, alg)? {
            return Ok(k);
        }
        let unknown = || {
            if self.current().is_none() {
                AuthError::KeysUnavailable
            } else {
                AuthError::UnknownKid(kid.map(super::jwt::short))
            }
        };
        if matches!(self.source, KeySource::Secret(_)) || last.is_some_and(|t| t.elapsed() < min_refetch) {
            return Err(unknown());
        }
        *last = Some(Instant::now());
        self.counters.unknown_kid_refetches.fetch_add(1, Ordering::Relaxed);
        let _ = self.fetch_locked(fetcher, 1, FetchKind::UnknownKid).await;
        drop(last);
        self.lookup(kid, alg)?.ok_or_else(unknown)
    }

    /// Fetch now (up to `attempts` tries with backoff), replacing the keys
    /// only on success. Returns the number of usable keys.
    pub async fn refresh(&self, fetcher: &dyn JwksFetcher, attempts: u32) -> Result<usize, JwksError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked(fetcher, attempts, FetchKind::Scheduled).await
    }

    /// The `jwks_uri` in use with discovery (`None` before the first valid document).
    pub fn discovered_jwks_uri(&self) -> Option<String> {
        self.jwks_uri.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn fetch_locked(
        &self,
        fetcher: &dyn JwksFetcher,
        attempts: u32,
        kind: FetchKind,
    ) -> Result<usize, JwksError> {
        let mut backoff = Duration::from_millis(250);
        let mut last_err = JwksError::NoAttempt;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            self.counters.fetches.fetch_add(1, Ordering::Relaxed);
            let result = self.fetch_once(fetcher).await;
            if !matches!(self.source, KeySource::Secret(_)) {
                self.metrics.record(kind, result.is_ok());
            }
            match result {
                Ok(n) => return Ok(n),
                Err(e) => {
                    self.counters.fetch_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(issuer = %self.issuer, attempt, error = %e,
                        "JWKS fetch failed; keeping last good keys");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    async fn fetch_once(&self, fetcher: &dyn JwksFetcher) -> Result<usize, JwksError> {
        let body = match &self.source {
            KeySource::Secret(_) => return Ok(1),
            KeySource::File(p) => Bytes::from(std::fs::read(p).map_err(|source| JwksError::ReadFile {
                path: p.clone(),
                source,
            })?),
            KeySource::Url(u) => self.get(fetcher, u).await?,
            KeySource::Discovery(d) => {
                let uri = self.discover(fetcher, d).await?;
                self.get(fetcher, &uri).await?
            }
        };
        let (keys, skipped) = parse_jwks(&body)?;
        for s in &skipped {
            tracing::warn!(issuer = %self.issuer, "JWKS entry skipped: {s}");
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keys));
        tracing::debug!(issuer = %self.issuer, keys = n, "JWKS loaded");
        Ok(n)
    }

    /// GET `url` through the fetcher, bounded by [`FETCH_TIMEOUT`].
    async fn get(&self, fetcher: &dyn JwksFetcher, url: &str) -> Result<Bytes, JwksError> {
        tokio::time::timeout(FETCH_TIMEOUT, fetcher.fetch(&self.issuer, url))
            .await
            .map_err(|_| JwksError::TimedOut)?
            .map_err(JwksError::Fetch)
    }

    /// Re-reads the metadata at `url` and returns the `jwks_uri` to use: the one it
    /// names if it is valid, else the last good one (logged); without either, an error.
    async fn discover(&self, fetcher: &dyn JwksFetcher, url: &str) -> Result<String, JwksError> {
        let result = match self.get(fetcher, url).await {
            Ok(body) => super::discovery::jwks_uri_from_metadata(&body, &self.issuer, url).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.metrics.record(FetchKind::Discovery, result.is_ok());
        match result {
            Ok(uri) => {
                let mut current = self.jwks_uri.write().unwrap_or_else(|e| e.into_inner());
                if current.as_deref() != Some(uri.as_str()) {
                    tracing::info!(issuer = %self.issuer, jwks_uri = %uri, "discovery: JWKS URL");
                }
                *current = Some(uri.clone());
                Ok(uri)
            }
            Err(reason) => match self.discovered_jwks_uri() {
                Some(last) => {
                    tracing::warn!(issuer = %self.issuer, url, error = %reason,
                        "discovery document refused or unreachable; keeping the last good jwks_uri");
                    Ok(last)
                }
                None => Err(JwksError::Discovery {
                    issuer: self.issuer.clone(),
                    url: url.to_string(),
                    reason,
                }),
            },
        }
    }
}
