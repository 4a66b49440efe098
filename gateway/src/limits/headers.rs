//! `RateLimit-Policy`, `RateLimit` and `Retry-After` from a [`RateLimitDecision`] (AV-DOS-1).
//!
//! Why advertise limits: well-behaved clients (PHR apps, hospital systems)
//! can pace themselves instead of discovering the limit by failing, and a
//! 429 with `Retry-After` tells them exactly when to come back. So every
//! response of a route with policies carries them: an admitted request the
//! policies that admitted it, a 429 the one that refused it.
//!
//! Follows **draft-ietf-httpapi-ratelimit-headers-10** (27 September 2025),
//! the structured-field form introduced in -08 (a revision -11 of May 2026
//! exists; its field syntax was not re-checked here):
//! * `RateLimit-Policy: "per_subject";q=100;w=1` — a List of Items; the item
//!   is the policy name as an sf-string, `q` the quota (the policy's `rate`),
//!   `w` the window in seconds (the policy's `per`, rounded up to ≥ 1). `qu`
//!   is omitted: the unit is requests, or FHIR cost units where the policy
//!   has `costs`.
//! * `RateLimit: "per_subject";r=42;t=1` — `r` the remaining units, `t` the
//!   seconds until the budget is full again (rounded up).
//! * `Retry-After: 3` on a denial (RFC 9110 §10.2.3, delay-seconds), rounded
//!   up and at least 1, so a client never retries before the budget allows.
//!
//! No partition key (`pk`) is sent: it would expose the key the client is
//! counted by (subject, certificate, address).

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::decision::RateLimitDecision;

/// `RateLimit-Policy` header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up (a client must not come back early).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `Retry-After` value for a denial: rounded up, at least 1 second.
pub fn retry_after_secs(d: &RateLimitDecision) -> Option<u64> {
    if d.allowed {
        return None;
    }
    Some(ceil_secs(d.retry_after.unwrap_or(Duration::from_secs(1))).max(1))
}

/// The policy name as an sf-string (`"` and `\` escaped; other characters
/// outside printable ASCII dropped — configured names are `[a-z0-9_-]`).
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One `RateLimit-Policy` list member for `d`'s policy.
pub fn policy_item(d: &RateLimitDecision) -> String {
    format!(
        "{};q={};w={}",
        sf_string(&d.policy),
        d.limit,
        ceil_secs(d.window).max(1)
    )
}

/// One `RateLimit` list member for `d`.
pub fn ratelimit_item(d: &RateLimitDecision) -> String {
    format!(
        "{};r={};t={}",
        sf_string(&d.policy),
        d.remaining,
        ceil_secs(d.reset_after)
    )
}

/// Sets `RateLimit-Policy` and `RateLimit` (one list member per decision,
/// e.g. the IP and the subject policy of one request) and, if any decision
/// denies, `Retry-After` with the longest wait among the denials.
/// A decision that was not checked (its Redis unavailable, the policy's failure
/// mode decided) gets no list member: `r=0` or a quota would be a claim about a
/// budget nobody looked at. Its denial still sets `Retry-After`.
pub fn insert_headers(headers: &mut HeaderMap, decisions: &[&RateLimitDecision]) {
    let policies: Vec<String> = decisions.iter().filter(|d| d.checked).map(|d| policy_item(d)).collect();
    if !policies.is_empty() {
        let limits: Vec<String> = decisions
            .iter()
            .filter(|d| d.checked)
            .map(|d| ratelimit_item(d))
            .collect();
        // Built only from digits, '"', ';', '=', ',' and sanitised names: always valid.
        if let Ok(v) = HeaderValue::from_str(&policies.join(", ")) {
            headers.insert(RATELIMIT_POLICY, v);
        }
        if let Ok(v) = HeaderValue::from_str(&limits.join(", ")) {
            headers.insert(RATELIMIT, v);
        }
    }
    if let Some(secs) = decisions.iter().filter_map(|d| retry_after_secs(d)).max() {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::decision::Denial;
    use super::*;

    fn decision(allowed: bool) -> RateLimitDecision {
        RateLimitDecision {
            allowed,
            limit: 100,
            window: Duration::from_secs(1),
            remaining: if allowed { 42 } else { 0 },
            reset_after: Duration::from_millis(580),
            retry_after: (!allowed).then(|| Duration::from_millis(2_100)),
            policy: Arc::from("per_subject"),
            denial: (!allowed).then_some(Denial::RateLimited),
            checked: true,
        }
    }

    #[test]
    fn allowed_decision_has_policy_and_ratelimit_but_no_retry_after() {
        let mut h = HeaderMap::new();
        insert_headers(&mut h, &[&decision(true)]);
        assert_eq!(h["ratelimit-policy"], "\"per_subject\";q=100;w=1");
        assert_eq!(h["ratelimit"], "\"per_subject\";r=42;t=1");
        assert!(h.get(RETRY_AFTER).is_none());
    }

    #[test]
    fn denial_has_retry_after_rounded_up_and_at_least_one() {
        let mut h = HeaderMap::new();
        let ip = RateLimitDecision {
            policy: Arc::from("pre_auth"),
            ..decision(true)
        };
        insert_headers(&mut h, &[&ip, &decision(false)]);
        assert_eq!(h["retry-after"], "3");
        assert_eq!(h["ratelimit"], "\"pre_auth\";r=42;t=1, \"per_subject\";r=0;t=1");
        let mut tiny = decision(false);
        tiny.retry_after = Some(Duration::from_millis(1));
        assert_eq!(retry_after_secs(&tiny), Some(1));
        tiny.retry_after = Some(Duration::ZERO);
        assert_eq!(retry_after_secs(&tiny), Some(1));
    }

    #[test]
    fn unchecked_decisions_advertise_no_limit() {
        let mut h = HeaderMap::new();
        let unchecked_open = RateLimitDecision {
            checked: false,
            remaining: 0,
            ..decision(true)
        };
        insert_headers(&mut h, &[&unchecked_open]);
        assert!(h.is_empty(), "a fail-open decision sends nothing: {h:?}");
        let unchecked_closed = RateLimitDecision {
            checked: false,
            denial: Some(Denial::StoreUnavailable),
            ..decision(false)
        };
        let ip = RateLimitDecision {
            policy: Arc::from("pre_auth"),
            ..decision(true)
        };
        insert_headers(&mut h, &[&ip, &unchecked_closed]);
        assert_eq!(h["ratelimit"], "\"pre_auth\";r=42;t=1", "only the checked policy");
        assert_eq!(h["ratelimit-policy"], "\"pre_auth\";q=100;w=1");
        assert_eq!(
            h["retry-after"], "3",
            "the unchecked denial still says when to come back"
        );
    }

    #[test]
    fn names_are_escaped_as_sf_strings() {
        assert_eq!(sf_string("a\"b\\c\u{7f}é"), "\"a\\\"b\\\\c\"");
    }
}
