//! The answer of a rate-limit check (AV-DOS-1), shared by the local and the
//! Redis limiter so the gateway handles both the same way.

use std::sync::Arc;
use std::time::Duration;

/// Why a request was not admitted. Kept apart from "allowed = false" so the
/// gateway can log and answer each case precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The key spent its budget: answer 429 with `Retry-After`.
    RateLimited,
    /// The request's cost exceeds the policy's burst, so waiting cannot help
    /// (configuration validation prevents this for configured costs).
    CostAboveBurst,
    /// A shared policy with `on_redis_error = "closed"` could not reach Redis
    /// in time: answer 503 (the limit is unknown, not exceeded).
    StoreUnavailable,
}

/// Outcome of one check: whether to admit, and what to advertise in the
/// `RateLimit` / `RateLimit-Policy` / `Retry-After` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// Admit the request.
    pub allowed: bool,
    /// Units per `window` (the policy's `rate`): the header's quota `q`.
    pub limit: u32,
    /// The policy's period (`per`): the header's window `w`.
    pub window: Duration,
    /// Units that could still be spent right now (0 when denied).
    pub remaining: u32,
    /// Time until the key's budget is full again.
    pub reset_after: Duration,
    /// When denied: how long until this request's cost fits.
    pub retry_after: Option<Duration>,
    /// The policy's name.
    pub policy: Arc<str>,
    /// Why not admitted; `None` when `allowed`.
    pub denial: Option<Denial>,
    /// False when the limit could not be consulted (a shared policy's Redis failed or
    /// its circuit breaker is open) and the policy's failure mode decided instead: no
    /// `RateLimit` / `RateLimit-Policy` is sent for such a decision, because it would
    /// advertise a budget nobody checked.
    pub checked: bool,
}

impl RateLimitDecision {
    /// A checked decision of `policy` with numbers `spec`, not yet admitting anything:
    /// the limiters fill in what their check found.
    pub(crate) fn pending(policy: &Arc<str>, spec: &super::local::RateSpec) -> Self {
        Self {
            allowed: false,
            limit: spec.rate,
            window: spec.per,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: None,
            policy: policy.clone(),
            denial: None,
            checked: true,
        }
    }
}
