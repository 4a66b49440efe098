//! Verified-token cache: steady traffic must not pay for a signature check
//! (RSA/ECDSA verification) on every request.
//!
//! Keyed by the SHA-256 of the token string (the token itself is never
//! stored as a key), bounded by capacity, and each entry expires at the
//! token's own `exp`. Only the *signature and static claim* checks are
//! cached: revocation, key withdrawal, DPoP and certificate binding, scopes
//! and two-factor are re-checked on every request, cache hit or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::jwt::TokenClaims;
use crate::util::clock::unix_now;

/// A token whose signature and claims were verified once.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The verified claims.
    pub claims: TokenClaims,
    /// `kid` of the verifying key (re-checked against the live JWKS on hits).
    pub kid: Option<String>,
    /// SHA-256 of the token string.
    pub token_hash: [u8; 32],
}

struct UntilExp;

impl Expiry<[u8; 32], Arc<VerifiedToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value.claims.exp.saturating_sub(unix_now()).max(0) as u64;
        Some(Duration::from_secs(left))
    }
}

/// Bounded cache of verified tokens.
pub struct TokenCache {
    inner: Cache<[u8; 32], Arc<VerifiedToken>>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Cache::builder().max_capacity(capacity).expire_after(UntilExp).build(),
        }
    }

    /// Cached verification of the token with this hash, if still unexpired.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<VerifiedToken>> {
        self.inner.get(hash)
    }

    /// Remember a verified token until its `exp`.
    pub fn insert(&self, token: Arc<VerifiedToken>) {
        self.inner.insert(token.token_hash, token);
    }

    /// Drop one entry (e.g. its key was withdrawn).
    pub fn remove(&self, hash: &[u8; 32]) {
        self.inner.invalidate(hash);
    }

    /// Drop everything (configuration reload).
    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// Approximate number of entries.
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    /// Whether the cache is (approximately) empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(h: u8, exp: i64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            claims: TokenClaims {
                exp,
                ..Default::default()
            },
            kid: None,
            token_hash: [h; 32],
        })
    }

    #[test]
    fn expires_at_exp_and_is_bounded() {
        let c = TokenCache::new(10);
        c.insert(tok(1, unix_now() + 3600));
        c.insert(tok(2, unix_now() - 5));
        assert!(c.get(&[1; 32]).is_some());
        assert!(c.get(&[2; 32]).is_none(), "expired token must not be served");
        for i in 10..100u8 {
            c.insert(tok(i, unix_now() + 3600));
        }
        assert!(c.len() <= 10);
    }
}
