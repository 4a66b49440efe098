//! The one shape every configuration problem takes: which key, what is wrong, how to fix
//! it. `check-config`, a refused start and a refused reload all print these; the
//! validators of every section (the file's own checks, the limits', the auth
//! configuration's, the health checks') return them.

use std::fmt;

/// One problem in the file: where (`key`), what (`problem`) and what to do (`fix`).
///
/// Printed as `key: problem. Fix: fix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the offending key, e.g. `rate_limits.policies.api.burst` or
    /// `auth.issuers[0].jwks_url`.
    pub key: String,
    /// What is wrong, in the operator's terms.
    pub problem: String,
    /// What to write instead.
    pub fix: String,
}

impl ConfigIssue {
    /// An issue under `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}. Fix: {}", self.key, self.problem, self.fix)
    }
}

impl std::error::Error for ConfigIssue {}
