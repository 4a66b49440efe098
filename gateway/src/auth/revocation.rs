//! Token and account revocation (ACL-ACCT-1: leavers' and unused accounts
//! must stop working at once, not when their last token expires).
//!
//! The check runs on every request, cache hit or not, so it must be cheap
//! and synchronous: the gateway keeps an in-memory snapshot of its database
//! (refreshed each second) behind [`RevocationList`]; [`MemoryRevocations`]
//! is that snapshot's ready-made form.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// Answers "is this token revoked?". Must not block (no I/O): it is called
/// on the request path for every authenticated request.
pub trait RevocationList: Send + Sync {
    /// Whether the token (`issuer`, `jti`, `subject`, `iat`) is revoked.
    fn is_revoked(&self, issuer: &str, jti: Option<&str>, subject: &str, issued_at: Option<u64>) -> bool;
}

/// A list that revokes nothing, for deployments without a revocation source.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRevocations;

impl RevocationList for NoRevocations {
    fn is_revoked(&self, _: &str, _: Option<&str>, _: &str, _: Option<u64>) -> bool {
        false
    }
}

#[derive(Default)]
struct Snapshot {
    /// (issuer, jti)
    jtis: HashSet<(String, String)>,
    /// (issuer, subject) → tokens issued at or before this time are revoked.
    subjects: HashMap<(String, String), u64>,
}

/// In-memory revocations: by `jti`, and by subject for every token issued
/// at or before a time. After a subject revocation, that subject's tokens
/// without `iat` are refused too (their age cannot be proven).
#[derive(Default)]
pub struct MemoryRevocations {
    inner: RwLock<Snapshot>,
}

impl MemoryRevocations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revoke one token by its `jti`.
    pub fn revoke_jti(&self, issuer: &str, jti: &str) {
        self.write().jtis.insert((issuer.into(), jti.into()));
    }

    /// Revoke every token of `subject` issued at or before `before` (Unix
    /// seconds); the later of two calls wins. Use "now" to disable an account.
    pub fn revoke_subject(&self, issuer: &str, subject: &str, before: u64) {
        let mut w = self.write();
        let e = w.subjects.entry((issuer.into(), subject.into())).or_insert(0);
        *e = (*e).max(before);
    }

    /// Lift a subject revocation (account re-enabled).
    pub fn restore_subject(&self, issuer: &str, subject: &str) {
        self.write().subjects.remove(&(issuer.to_string(), subject.to_string()));
    }

    /// Replace the whole snapshot atomically (the gateway's periodic reload):
    /// `jtis` are (issuer, jti); `subjects` are (issuer, subject, before).
    pub fn replace(
        &self,
        jtis: impl IntoIterator<Item = (String, String)>,
        subjects: impl IntoIterator<Item = (String, String, u64)>,
    ) {
        let snap = Snapshot {
            jtis: jtis.into_iter().collect(),
            subjects: subjects.into_iter().map(|(i, s, t)| ((i, s), t)).collect(),
        };
        *self.write() = snap;
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl RevocationList for MemoryRevocations {
    fn is_revoked(&self, issuer: &str, jti: Option<&str>, subject: &str, issued_at: Option<u64>) -> bool {
        let r = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = jti {
            if r.jtis.contains(&(issuer.to_string(), j.to_string())) {
                return true;
            }
        }
        match r.subjects.get(&(issuer.to_string(), subject.to_string())) {
            Some(before) => issued_at.is_none_or(|iat| iat <= *before),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_revoked_by_jti_or_by_subject_until_restored() {
        let m = MemoryRevocations::new();
        assert!(!m.is_revoked("i", Some("j1"), "s", Some(10)));
        m.revoke_jti("i", "j1");
        assert!(m.is_revoked("i", Some("j1"), "s", Some(10)));
        assert!(!m.is_revoked("other", Some("j1"), "s", Some(10)));
        m.revoke_subject("i", "alice", 100);
        assert!(m.is_revoked("i", None, "alice", Some(100)));
        assert!(m.is_revoked("i", None, "alice", None));
        assert!(!m.is_revoked("i", None, "alice", Some(101)));
        m.restore_subject("i", "alice");
        assert!(!m.is_revoked("i", None, "alice", None));
        m.replace(vec![], vec![("i".into(), "bob".into(), 5)]);
        assert!(!m.is_revoked("i", Some("j1"), "s", Some(10)));
        assert!(m.is_revoked("i", None, "bob", Some(5)));
    }
}
