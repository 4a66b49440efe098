//! In-process GCRA limiter with bounded memory (AV-DOS-1).
//!
//! One [`LocalLimiter`] per policy. Keys are hashed to `u64`
//! ([`super::keys::KeyHasher`]) so a key costs the same memory whatever the
//! token length, and the number of keys is capped at the policy's `max_keys`:
//!
//! * when a new key arrives and its shard is full, the limiter runs governor's
//!   `retain_recent` (drops keys whose bucket is full again, i.e. that are
//!   indistinguishable from a fresh key) and `shrink_to_fit`, at most once per
//!   max(emission interval, 100 ms) of clock time; the gateway may also call
//!   [`LocalLimiter::sweep`] from a periodic task;
//! * if the shard is still full, the new key is **counted in one shared
//!   overflow bucket** with the policy's own rate and burst. A flood of random
//!   keys is thereby limited as a group instead of growing memory, while keys
//!   already tracked keep their own budgets. Overflow decisions are counted in
//!   `phr_rate_limit_overflow_total{policy}`.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::{Quota, RateLimiter};

use super::bounded_store::BoundedStore;
use super::config::PolicyConfig;
use super::decision::{Denial, RateLimitDecision};
use super::keys::KeyHasher;

/// A policy's numbers: `rate` units per `per`, bursts of `burst` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Units per `per`.
    pub rate: u32,
    /// The period of `rate`.
    pub per: Duration,
    /// Units that may be spent at once.
    pub burst: u32,
}

impl RateSpec {
    /// The numbers of a configured policy.
    pub fn from_policy(p: &PolicyConfig) -> Self {
        Self {
            rate: p.rate,
            per: p.per,
            burst: p.burst(),
        }
    }

    /// GCRA emission interval: the time one unit takes to replenish.
    pub fn interval(&self) -> Duration {
        self.per / self.rate.max(1)
    }

    fn quota(&self) -> Result<Quota, LimiterError> {
        let burst = NonZeroU32::new(self.burst).ok_or(LimiterError::ZeroBurst)?;
        if self.rate == 0 {
            return Err(LimiterError::ZeroRate);
        }
        let q = Quota::with_period(self.interval()).ok_or(LimiterError::IntervalTooSmall)?;
        Ok(q.allow_burst(burst))
    }
}

/// Why a limiter could not be built (configuration validation reports the
/// same problems with keys and fixes; these guard direct construction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    /// `rate` is zero.
    #[error("rate must be greater than zero")]
    ZeroRate,
    /// `burst` is zero.
    #[error("burst must be greater than zero")]
    ZeroBurst,
    /// `per / rate` rounds to zero.
    #[error("per / rate is below the clock resolution")]
    IntervalTooSmall,
}

type Inner<C> = RateLimiter<u64, BoundedStore, C, StateInformationMiddleware>;

/// Keyed GCRA limiter for one policy, memory bounded by `max_keys`.
///
/// Generic over governor's clock so tests can drive it with
/// `FakeRelativeClock` instead of sleeping.
pub struct LocalLimiter<C: Clock = DefaultClock> {
    policy: Arc<str>,
    limiter: Inner<C>,
    store: BoundedStore,
    clock: C,
    hasher: KeyHasher,
    spec: RateSpec,
    last_sweep: Mutex<Option<C::Instant>>,
}

impl LocalLimiter<DefaultClock> {
    /// Builds the limiter of a configured policy on the monotonic clock.
    pub fn from_policy(name: &str, p: &PolicyConfig) -> Result<Self, LimiterError> {
        Self::with_clock(name, RateSpec::from_policy(p), p.max_keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// Builds a limiter on `clock`, tracking at most `max_keys` keys.
    pub fn with_clock(name: &str, spec: RateSpec, max_keys: usize, clock: C) -> Result<Self, LimiterError> {
        let quota = spec.quota()?;
        let store = BoundedStore::new(max_keys);
        let limiter =
            RateLimiter::<u64, BoundedStore, C, NoOpMiddleware<C::Instant>>::new(quota, store.clone(), clock.clone())
                .with_middleware::<StateInformationMiddleware>();
        Ok(Self {
            policy: Arc::from(name),
            limiter,
            store,
            clock,
            hasher: KeyHasher::new(),
            spec,
            last_sweep: Mutex::new(None),
        })
    }

    /// Checks and, if admitted, spends `cost` units (0 counts as 1) of `key`'s budget.
    pub fn check(&self, key: &str, cost: u32) -> RateLimitDecision {
        self.check_digest(self.hasher.hash_str(key), cost)
    }

    /// As [`Self::check`] for a key already hashed with [`Self::hasher`]
    /// (or an IP key from [`super::keys::KeyHasher::hash_ip`]).
    pub fn check_digest(&self, digest: u64, cost: u32) -> RateLimitDecision {
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let interval = self.spec.interval();
        let burst = self.spec.burst;
        let mut d = RateLimitDecision::pending(&self.policy, &self.spec);
        match self.limiter.check_key_n(&digest, n) {
            Ok(Ok(snapshot)) => {
                d.allowed = true;
                d.remaining = snapshot.remaining_burst_capacity();
                d.reset_after = interval * burst.saturating_sub(d.remaining);
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                d.retry_after = Some(wait);
                d.reset_after = wait + interval * burst.saturating_sub(n.get());
                d.denial = Some(Denial::RateLimited);
            }
            Err(_insufficient) => {
                d.reset_after = interval * burst;
                d.denial = Some(Denial::CostAboveBurst);
            }
        }
        if self.store.take_filled() {
            metrics::counter!("phr_rate_limit_overflow_total", "policy" => self.policy.to_string()).increment(1);
            self.maybe_sweep();
        }
        d
    }

    fn maybe_sweep(&self) {
        let now = self.clock.now();
        let min_gap = self.spec.interval().max(Duration::from_millis(100));
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = *last {
            if Duration::from(now.duration_since(prev)) < min_gap {
                return;
            }
        }
        *last = Some(now);
        drop(last);
        self.sweep();
    }

    /// Drops keys whose budget is full again and releases their memory.
    /// Cost O(keys); safe to call from a periodic task.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys tracked now (never above `max_keys`; the overflow bucket is not counted).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Decisions made in the shared overflow bucket since start.
    pub fn overflow_hits(&self) -> u64 {
        self.store.overflow_hits()
    }

    /// The hasher used for string keys (for [`Self::check_digest`] callers).
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// The policy's name.
    pub fn policy(&self) -> &Arc<str> {
        &self.policy
    }

    /// The policy's numbers.
    pub fn spec(&self) -> RateSpec {
        self.spec
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        rate: u32,
        per: Duration,
        burst: u32,
        max_keys: usize,
    ) -> (LocalLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let spec = RateSpec { rate, per, burst };
        (
            LocalLimiter::with_clock("test", spec, max_keys, clock.clone()).unwrap(),
            clock,
        )
    }

    #[test]
    fn sustained_rate_is_held_within_one_percent() {
        // 100/s, burst 10, hammered every 1 ms of simulated time for 100 s.
        let (l, clock) = limiter(100, Duration::from_secs(1), 10, 1000);
        let secs = 100u64;
        let mut allowed = 0u64;
        for _ in 0..secs * 1000 {
            if l.check("client", 1).allowed {
                allowed += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        let expected = 100 * secs;
        let upper = expected + expected / 100 + 10;
        let lower = expected - expected / 100;
        assert!(
            (lower..=upper).contains(&allowed),
            "allowed {allowed}, expected ~{expected}"
        );
    }

    #[test]
    fn burst_is_honoured_then_denied_with_retry_after() {
        let (l, clock) = limiter(10, Duration::from_secs(1), 5, 100);
        for i in 0..5 {
            let d = l.check("k", 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = l.check("k", 1);
        assert!(!d.allowed);
        assert_eq!(d.denial, Some(Denial::RateLimited));
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(d.reset_after, Duration::from_millis(500));
        assert!(l.check("other", 1).allowed, "keys are independent");
        clock.advance(Duration::from_millis(100));
        assert!(l.check("k", 1).allowed);
        assert!(!l.check("k", 1).allowed);
    }

    #[test]
    fn cost_spends_several_units_and_cost_above_burst_is_refused() {
        let (l, _clock) = limiter(100, Duration::from_secs(1), 20, 100);
        assert!(l.check("k", 10).allowed);
        let d = l.check("k", 10);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!l.check("k", 1).allowed);
        let d = l.check("k2", 21);
        assert_eq!(d.denial, Some(Denial::CostAboveBurst));
        assert_eq!(d.retry_after, None);
    }

    fn rss_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn a_million_random_keys_stay_within_max_keys() {
        let cap = 10_000;
        let (l, clock) = limiter(10, Duration::from_secs(1), 5, cap);
        let before = rss_bytes();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut overflow_allowed = 0u32;
        for i in 0..1_000_000u32 {
            // xorshift64: a million distinct pseudo-random keys.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = l.check_digest(x, 1);
            if i >= 20_000 && d.allowed {
                overflow_allowed += 1;
            }
            if i % 100_000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            assert!(l.len() <= cap || i % 1000 != 0, "len {} above cap", l.len());
        }
        assert!(l.len() <= cap, "len {}", l.len());
        // Untracked keys share one bucket: burst 5 plus ~10/s over ~10 ms.
        assert!(overflow_allowed <= 6, "overflow bucket admitted {overflow_allowed}");
        assert!(l.overflow_hits() > 900_000);
        if let (Some(b), Some(a)) = (before, rss_bytes()) {
            let growth = a.saturating_sub(b);
            assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
        }
        // Once the clock moves on, expired keys are evicted and new keys are
        // tracked individually again.
        clock.advance(Duration::from_secs(10));
        let d = l.check("fresh", 1);
        assert!(d.allowed);
        assert!(l.len() <= 1, "stale keys evicted, len {}", l.len());
    }
}
