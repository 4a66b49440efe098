//! Two-factor enforcement from the token's `amr` / `acr` / `auth_time`
//! (AUTH-2FA-1, AUTH-2FA-2, AUTH-2FA-3; RFC 8176 `amr` values; RFC 9470
//! step-up challenge).
//!
//! The guideline says two *steps* of the same kind are not two *factors*
//! (AUTH-2FA-2), so `amr` values are mapped to categories — knowledge,
//! possession, inherence — and a route requiring two factors needs two
//! different categories: `pwd`+`otp` passes, `otp`+`sms` does not.
//!
//! The RFC 8176 value `mfa` only says "several factors" without saying which;
//! it counts as two categories only with `trust_mfa_claim = true` (default
//! false), for IdPs whose MFA policy has been checked to combine categories.

use std::collections::BTreeSet;
use std::time::Duration;

use super::error::AuthError;
use crate::config::auth::RoutePolicy;

pub use crate::config::auth::{FactorCategory, FactorConfig};

/// Default RFC 8176 mapping. `mfa`, `mca`, `user`, `rba`, `geo`, `wia`,
/// `kba`-less unknown values map to nothing and never count.
const DEFAULT_MAP: &[(&str, FactorCategory)] = &[
    ("pwd", FactorCategory::Knowledge),
    ("pin", FactorCategory::Knowledge),
    ("kba", FactorCategory::Knowledge),
    ("otp", FactorCategory::Possession),
    ("sms", FactorCategory::Possession),
    ("hwk", FactorCategory::Possession),
    ("swk", FactorCategory::Possession),
    ("sc", FactorCategory::Possession),
    ("tel", FactorCategory::Possession),
    ("pop", FactorCategory::Possession),
    ("face", FactorCategory::Inherence),
    ("fpt", FactorCategory::Inherence),
    ("iris", FactorCategory::Inherence),
    ("retina", FactorCategory::Inherence),
    ("vbm", FactorCategory::Inherence),
    ("bio", FactorCategory::Inherence),
];

impl FactorConfig {
    /// Category of one `amr` value, configured mapping first.
    pub fn category(&self, amr: &str) -> Option<FactorCategory> {
        self.map
            .get(amr)
            .copied()
            .or_else(|| DEFAULT_MAP.iter().find(|(k, _)| *k == amr).map(|(_, c)| *c))
    }

    /// Distinct categories proven by an `amr` list.
    pub fn categories(&self, amr: &[String]) -> BTreeSet<FactorCategory> {
        amr.iter().filter_map(|a| self.category(a)).collect()
    }

    /// Whether `amr` proves at least two different categories.
    pub fn is_two_factor(&self, amr: &[String]) -> bool {
        self.categories(amr).len() >= 2 || (self.trust_mfa_claim && amr.iter().any(|a| a == "mfa"))
    }
}

/// Check a route's user-authentication requirements against the token's
/// `amr`, `acr` and `auth_time`; the error becomes an RFC 9470 challenge.
pub fn check(
    policy: &RoutePolicy,
    factors: &FactorConfig,
    amr: &[String],
    acr: Option<&str>,
    auth_time: Option<i64>,
    now: i64,
) -> Result<(), AuthError> {
    let max_age = policy.max_auth_age.map(|d: Duration| d.as_secs());
    let fail = |reason: &str| AuthError::InsufficientUserAuthentication {
        reason: reason.to_string(),
        acr_values: policy.acr_values.clone(),
        max_age,
    };
    if let Some(max) = max_age {
        match auth_time {
            None => return Err(fail("auth_time required")),
            Some(t) if now.saturating_sub(t) > max as i64 => return Err(fail("authentication too old, log in again")),
            _ => {}
        }
    }
    let acr_ok = acr.is_some_and(|a| policy.acr_values.iter().any(|v| v == a));
    if policy.two_factor {
        if factors.is_two_factor(amr) || acr_ok {
            return Ok(());
        }
        return Err(fail("two different authentication factors required"));
    }
    if !policy.acr_values.is_empty() && !acr_ok {
        return Err(fail("acr not accepted for this resource"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn categories_not_steps() {
        let f = FactorConfig::default();
        assert!(f.is_two_factor(&v(&["pwd", "otp"])));
        assert!(f.is_two_factor(&v(&["face", "hwk"])));
        assert!(!f.is_two_factor(&v(&["otp", "sms"])));
        assert!(!f.is_two_factor(&v(&["otp", "otp"])));
        assert!(!f.is_two_factor(&v(&["pwd", "pin", "kba"])));
        assert!(!f.is_two_factor(&v(&["mfa"])));
        assert!(!f.is_two_factor(&v(&["pwd", "unknown"])));
        let trust = FactorConfig {
            trust_mfa_claim: true,
            ..Default::default()
        };
        assert!(trust.is_two_factor(&v(&["mfa"])));
        let mut custom = FactorConfig::default();
        custom.map.insert("mynumber_card".into(), FactorCategory::Possession);
        assert!(custom.is_two_factor(&v(&["pin", "mynumber_card"])));
    }

    #[test]
    fn route_policy_needs_two_factors_a_listed_acr_or_a_recent_login() {
        let f = FactorConfig::default();
        let mut p = RoutePolicy {
            two_factor: true,
            ..Default::default()
        };
        assert!(check(&p, &f, &v(&["pwd"]), None, None, 0).is_err());
        assert!(check(&p, &f, &v(&["pwd", "sms"]), None, None, 0).is_ok());
        p.acr_values = v(&["urn:jp:aal2"]);
        assert!(check(&p, &f, &v(&["pwd"]), Some("urn:jp:aal2"), None, 0).is_ok());
        p.two_factor = false;
        assert!(check(&p, &f, &v(&["pwd", "otp"]), Some("urn:jp:aal1"), None, 0).is_err());
        p.acr_values.clear();
        p.max_auth_age = Some(Duration::from_secs(600));
        assert!(check(&p, &f, &[], None, Some(1000), 1500).is_ok());
        let e = check(&p, &f, &[], None, Some(1000), 2000).unwrap_err();
        assert!(e.www_authenticate().unwrap().contains("max_age=600"));
        assert!(check(&p, &f, &[], None, None, 2000).is_err());
    }
}
