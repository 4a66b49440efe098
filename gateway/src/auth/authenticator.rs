//! The request-path entry point: [`Authenticator::authenticate`].
//!
//! Order of checks, cheapest and most hostile-input-safe first: header
//! shape and size → verified-token cache → (miss) header screening, issuer
//! by exact `iss`, algorithm allow-list, key by `kid` with rotation
//! re-fetch, signature, claims → (always) revocation, DPoP / certificate
//! binding, two-factor, scopes. Tokens are never logged; only their SHA-256.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use jsonwebtoken::Algorithm;
use tokio::task::JoinHandle;

use super::bearer::{bearer_token, Scheme};
use super::dpop::DpopVerifier;
use super::error::{AuthError, DpopError};
use super::identity::{Binding, Identity};
use super::jwks::{IssuerKeys, JwksCounters, JwksFetcher, KeySource};
use super::jwt::{self, TokenClaims};
use super::revocation::RevocationList;
use super::token_cache::{TokenCache, VerifiedToken};
use super::{cert_binding, two_factor};
use crate::config::auth::{AuthConfig, AuthMode, IssuerConfig, RoutePolicy};
use crate::config::ConfigIssue;
use crate::util::clock::unix_now;

/// What the gateway knows about one request, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// Request method (DPoP `htm`).
    pub method: &'a http::Method,
    /// Absolute URL as the client addressed it, `scheme://host[:port]/path`
    /// (DPoP `htu`): built by the gateway from its listener scheme and the
    /// `Host`/`:authority`, never from `X-Forwarded-*` sent by the client.
    pub url: &'a str,
    /// Request headers (`Authorization`, `DPoP`).
    pub headers: &'a http::HeaderMap,
    /// Policy of the matched route.
    pub policy: &'a RoutePolicy,
    /// SHA-256 of the mTLS client certificate (DER), if one was presented.
    pub client_cert_sha256: Option<[u8; 32]>,
}

/// Counter snapshot for metrics and the readiness report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Signature verifications performed (cache misses that got that far).
    pub signature_verifications: u64,
    /// Requests served from the verified-token cache.
    pub cache_hits: u64,
    /// JWKS fetch attempts.
    pub jwks_fetches: u64,
    /// Failed JWKS fetch attempts (alert on growth).
    pub jwks_fetch_failures: u64,
    /// Re-fetches triggered by an unknown `kid`.
    pub unknown_kid_refetches: u64,
}

/// Some issuers have no keys at all: the gateway must not report ready.
/// Printed for an operator: each issuer in words, with where its keys were to come
/// from (a file or a URL) and the fix for that kind of source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no JWKS keys for {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct KeysNotLoaded(pub Vec<MissingKeys>);

/// One issuer without keys, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKeys {
    /// The issuer's `iss` as configured.
    pub issuer: String,
    /// `file /etc/…/jwks.json`, `url https://…` or `discovery https://…`, as configured.
    pub source: String,
    /// Why no key was loaded (read, fetch or parse error).
    pub error: String,
}

impl std::fmt::Display for MissingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fix = if self.source.starts_with("file ") {
            "make jwks_file a readable JWKS document (JSON with a \"keys\" array of the issuer's public keys)"
        } else if self.source.starts_with("discovery ") {
            "check that the discovery URL answers with the issuer's metadata (its \"issuer\" exactly as configured, \
             its \"jwks_uri\" on the same host) and that the address is inside the residency allow-list"
        } else {
            "check that jwks_url answers with the issuer's JWKS and that its address is inside the residency allow-list"
        };
        write!(
            f,
            "issuer {} (JWKS {}): {}. Fix: {fix}",
            self.issuer, self.source, self.error
        )
    }
}

struct IssuerEntry {
    cfg: IssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: IssuerKeys,
}

/// Validates access tokens against the configured issuers and route policy.
pub struct Authenticator {
    config: AuthConfig,
    issuers: HashMap<String, IssuerEntry>,
    fetcher: Arc<dyn JwksFetcher>,
    revocations: Arc<dyn RevocationList>,
    cache: TokenCache,
    dpop: DpopVerifier,
    counters: Arc<JwksCounters>,
    verifications: AtomicU64,
    cache_hits: AtomicU64,
    max_token_bytes: usize,
}

impl Authenticator {
    /// Build from a configuration; returns every configuration error at once.
    pub fn new(
        config: AuthConfig,
        fetcher: Arc<dyn JwksFetcher>,
        revocations: Arc<dyn RevocationList>,
    ) -> Result<Self, Vec<ConfigIssue>> {
        let errs = config.validate();
        if !errs.is_empty() {
            return Err(errs);
        }
        let counters = Arc::new(JwksCounters::default());
        let issuers = config
            .issuers
            .iter()
            .map(|c| {
                let source = match (c.discovery_document_url(), &c.jwks_url, &c.jwks_file, &c.shared_secret) {
                    (Some(d), _, _, _) => KeySource::Discovery(d),
                    (None, Some(u), _, _) => KeySource::Url(u.clone()),
                    (None, _, Some(f), _) => KeySource::File(f.clone()),
                    (None, _, _, s) => KeySource::Secret(s.clone().unwrap_or_default().into_bytes()),
                };
                let entry = IssuerEntry {
                    cfg: c.clone(),
                    algorithms: c.parsed_algorithms(),
                    keys: IssuerKeys::new(&c.issuer, source, Arc::clone(&counters)),
                };
                (c.issuer.clone(), entry)
            })
            .collect();
        let max_token_bytes = config.issuers.iter().map(|i| i.max_token_bytes).max().unwrap_or(0);
        Ok(Self {
            cache: TokenCache::new(config.token_cache_capacity),
            dpop: DpopVerifier::new(config.dpop_window, config.dpop_replay_capacity),
            config,
            issuers,
            fetcher,
            revocations,
            counters,
            verifications: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            max_token_bytes,
        })
    }

    /// Fetch every issuer's keys now (3 tries each). Errors if any issuer
    /// has no keys at all; a failing issuer that still has its last good
    /// keys is only logged.
    pub async fn refresh_all(&self) -> Result<(), KeysNotLoaded> {
        let mut missing = Vec::new();
        for (name, e) in &self.issuers {
            if let Err(err) = e.keys.refresh(&*self.fetcher, 3).await {
                if e.keys.key_count() == 0 {
                    let source = match (e.cfg.discovery_document_url(), &e.cfg.jwks_file, &e.cfg.jwks_url) {
                        (Some(d), _, _) => format!("discovery {d}"),
                        (None, Some(f), _) => format!("file {}", f.display()),
                        (None, None, Some(u)) => format!("url {u}"),
                        (None, None, None) => "shared secret".to_string(),
                    };
                    missing.push(MissingKeys {
                        issuer: name.clone(),
                        source,
                        error: err.to_string(),
                    });
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(KeysNotLoaded(missing))
        }
    }

    /// Load all keys, then start the background refresh. Call before the
    /// gateway reports ready; on error, do not serve protected routes.
    pub async fn start(self: &Arc<Self>) -> Result<JoinHandle<()>, KeysNotLoaded> {
        self.refresh_all().await?;
        Ok(self.spawn_refresh())
    }

    /// Background task refreshing keys every `refresh_interval`, retrying
    /// failures sooner with exponential backoff (5 s doubling, capped at the
    /// interval). Ends when the authenticator is dropped.
    pub fn spawn_refresh(self: &Arc<Self>) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let interval = self.config.refresh_interval;
        tokio::spawn(async move {
            let mut wait = interval;
            let mut backoff = Duration::from_secs(5);
            loop {
                tokio::time::sleep(wait).await;
                let Some(this) = weak.upgrade() else { break };
                let mut failed = false;
                for e in this.issuers.values() {
                    failed |= e.keys.refresh(&*this.fetcher, 3).await.is_err();
                }
                if failed {
                    wait = backoff.min(interval);
                    backoff = (backoff * 2).min(interval);
                } else {
                    wait = interval;
                    backoff = Duration::from_secs(5);
                }
            }
        })
    }

    /// Counters for metrics.
    pub fn stats(&self) -> AuthStats {
        AuthStats {
            signature_verifications: self.verifications.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            jwks_fetches: self.counters.fetches.load(Ordering::Relaxed),
            jwks_fetch_failures: self.counters.fetch_failures.load(Ordering::Relaxed),
            unknown_kid_refetches: self.counters.unknown_kid_refetches.load(Ordering::Relaxed),
        }
    }

    /// `WWW-Authenticate` for `err` with the configured realm.
    pub fn challenge(&self, err: &AuthError) -> Option<String> {
        err.www_authenticate_in(&self.config.realm)
    }

    /// Apply the route's `auth` mode: `none` → `Ok(None)` without looking;
    /// `optional` → `Ok(None)` when no `Authorization` header, but a token
    /// that is sent must be valid; `required` → [`Self::authenticate`].
    pub async fn authenticate_route(&self, req: &AuthRequest<'_>) -> Result<Option<Identity>, AuthError> {
        match req.policy.mode {
            AuthMode::None => Ok(None),
            AuthMode::Optional if !req.headers.contains_key(AUTHORIZATION) => Ok(None),
            _ => self.authenticate(req).await.map(Some),
        }
    }

    /// Authenticate a request that must carry a valid token (the route's
    /// `auth` mode is not consulted; see [`Self::authenticate_route`]).
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let now = unix_now();
        let (scheme, token) = bearer_token(req.headers)?;
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TokenTooLarge {
                size: token.len(),
                limit: self.max_token_bytes,
            });
        }
        let hash = jwt::sha256(token.as_bytes());
        let cached = self.cache.get(&hash).and_then(|v| {
            let e = self.issuers.get(&v.claims.issuer)?;
            // A withdrawn signing key also withdraws the tokens it signed.
            e.keys.still_has(v.kid.as_deref()).then_some(v)
        });
        let verified = match cached {
            Some(v) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                v
            }
            None => self.verify_token(token, hash, now).await?,
        };
        let entry = self
            .issuers
            .get(&verified.claims.issuer)
            .ok_or(AuthError::UnknownIssuer)?;
        let c = &verified.claims;
        c.check_times(&entry.cfg, now)?;
        let iat = c.iat.map(|i| i.max(0) as u64);
        if self
            .revocations
            .is_revoked(&c.issuer, c.jti.as_deref(), &c.subject, iat)
        {
            return Err(AuthError::Revoked);
        }
        let binding = self.check_binding(req, entry, c, scheme, token, now)?;
        two_factor::check(
            req.policy,
            &self.config.factors,
            &c.amr,
            c.acr.as_deref(),
            c.auth_time,
            now,
        )?;
        let missing: Vec<String> = req
            .policy
            .required_scopes
            .iter()
            .filter(|s| !c.scopes.contains(*s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope(missing));
        }
        Ok(Identity {
            issuer: c.issuer.clone(),
            subject: c.subject.clone(),
            client_id: c.client_id.clone(),
            jti: c.jti.clone(),
            scopes: c.scopes.clone(),
            patient: c.patient.clone(),
            fhir_user: c.fhir_user.clone(),
            amr: c.amr.clone(),
            factors: self.config.factors.categories(&c.amr),
            acr: c.acr.clone(),
            auth_time: c.auth_time,
            expires_at: c.exp,
            binding,
            token_hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// Full verification on a cache miss; caches the result.
    async fn verify_token(&self, token: &str, hash: [u8; 32], now: i64) -> Result<Arc<VerifiedToken>, AuthError> {
        let (h, p, _) = jwt::split(token)?;
        let header = jwt::decode_part(h, "header")?;
        let (alg, kid) = jwt::screen_header(&header)?;
        let unverified = jwt::decode_part(p, "payload")?;
        let iss = unverified.get("iss").and_then(|v| v.as_str());
        let entry = iss.and_then(|i| self.issuers.get(i)).ok_or(AuthError::UnknownIssuer)?;
        if token.len() > entry.cfg.max_token_bytes {
            return Err(AuthError::TokenTooLarge {
                size: token.len(),
                limit: entry.cfg.max_token_bytes,
            });
        }
        if !entry.algorithms.contains(&alg) {
            return Err(AuthError::AlgNotAllowed(format!("{alg:?}")));
        }
        let key = entry
            .keys
            .key_for(&*self.fetcher, kid.as_deref(), alg, self.config.min_refetch_interval)
            .await?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let payload = jwt::verify(token, &key.key, alg)?;
        let payload = payload
            .as_object()
            .ok_or_else(|| AuthError::Malformed("payload is not an object".into()))?;
        let claims = TokenClaims::from_payload(payload)?;
        if claims.issuer != entry.cfg.issuer {
            return Err(AuthError::UnknownIssuer);
        }
        claims.check(payload, &entry.cfg, now)?;
        let v = Arc::new(VerifiedToken {
            claims,
            kid,
            token_hash: hash,
        });
        self.cache.insert(Arc::clone(&v));
        Ok(v)
    }

    /// DPoP and certificate binding; returns the binding in force.
    fn check_binding(
        &self,
        req: &AuthRequest<'_>,
        entry: &IssuerEntry,
        c: &TokenClaims,
        scheme: Scheme,
        token: &str,
        now: i64,
    ) -> Result<Binding, AuthError> {
        let mut binding = Binding::Bearer;
        if let Some(jkt) = &c.cnf_jkt {
            if scheme == Scheme::Bearer {
                return Err(AuthError::DpopBoundAsBearer);
            }
            let mut proofs = req.headers.get_all("dpop").iter();
            let proof = proofs.next().ok_or(DpopError::Missing)?;
            if proofs.next().is_some() {
                return Err(DpopError::Multiple.into());
            }
            let proof = proof
                .to_str()
                .map_err(|_| DpopError::Malformed("DPoP header not ASCII".into()))?;
            self.dpop.verify(proof, req.method, req.url, token, jkt, now)?;
            binding = Binding::Dpop;
        } else if scheme == Scheme::Dpop || req.policy.require_dpop || entry.cfg.require_dpop {
            return Err(DpopError::TokenNotBound.into());
        }
        let need_cert = req.policy.require_cert_bound || entry.cfg.require_cert_bound;
        cert_binding::check(c.cnf_x5t_s256.as_deref(), req.client_cert_sha256.as_ref(), need_cert)?;
        if c.cnf_x5t_s256.is_some() && binding == Binding::Bearer {
            binding = Binding::Certificate;
        }
        Ok(binding)
    }
}
