//! The circuit breaker in front of Redis for `shared = true` policies (AV-DOS-1).
//!
//! Why: while Redis is down, every decision of a shared policy used to wait for the
//! Redis client (its reconnection attempts, then the full `redis.timeout`) before the
//! policy's failure mode applied, even when the port refused at once. Under an outage
//! that is latency added to every request, and load added to a Redis that is trying
//! to come back. So after `breaker_after_errors` consecutive errors the breaker
//! *opens*: for `breaker_retry_interval` no decision calls Redis, each one fails fast
//! in its policy's mode (`closed`: 503 with `Retry-After`; `open`: admitted, unchecked).
//! When the interval has passed, exactly one decision is let through as a probe
//! (half-open); its success closes the breaker, its failure opens it for another
//! interval. A probe whose request is abandoned mid-way cannot wedge the breaker: the
//! next interval lets another probe through.
//!
//! One breaker per Redis (it is shared by every policy of the store), because the
//! outage is the store's, not a policy's. Lock-free: the closed path is two atomic loads.
//!
//! Metrics: `phr_rate_limit_redis_breaker_open` (1 while open), and
//! `phr_rate_limit_redis_breaker_transitions_total{state="open"|"closed"}`; decisions
//! made without Redis are counted by the limiter
//! (`phr_rate_limit_redis_short_circuited_total{policy,mode}`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a decision may do right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call Redis (closed breaker, or the one half-open probe).
    Call,
    /// Do not call Redis; the breaker is open for this much longer.
    FailFast(Duration),
}

/// Counts consecutive Redis errors and short-circuits calls while Redis is down.
#[derive(Debug)]
pub struct Breaker {
    after_errors: u32,
    retry_interval: Duration,
    consecutive: AtomicU32,
    /// Milliseconds since `epoch` until which calls are short-circuited; 0 = closed.
    /// While open and past this instant, the first caller moves it one interval on and
    /// probes: that compare-and-swap is what makes the probe single.
    open_until_ms: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    /// Opens after `after_errors` consecutive errors (at least 1), for `retry_interval`.
    pub fn new(after_errors: u32, retry_interval: Duration) -> Self {
        Self {
            after_errors: after_errors.max(1),
            retry_interval,
            consecutive: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that an instant is never the 0 that means closed.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn interval_ms(&self) -> u64 {
        (self.retry_interval.as_millis() as u64).max(1)
    }

    /// Whether this decision may call Redis.
    pub fn admit(&self) -> Admission {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Call;
        }
        let now = self.now_ms();
        if now < until {
            return Admission::FailFast(Duration::from_millis(until - now));
        }
        // Half-open: one caller wins the right to probe; the others keep failing fast
        // until the probe's outcome is known (or the next interval passes).
        let next = now + self.interval_ms();
        match self
            .open_until_ms
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Call,
            Err(_) => Admission::FailFast(self.remaining()),
        }
    }

    /// How long the breaker stays open from now (zero when closed).
    pub fn remaining(&self) -> Duration {
        let until = self.open_until_ms.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(self.now_ms()))
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    /// Redis answered: the error run ends, and an open breaker closes.
    pub fn record_success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.open_until_ms.load(Ordering::Acquire) != 0 && self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            metrics::gauge!("phr_rate_limit_redis_breaker_open").set(0.0);
            metrics::counter!("phr_rate_limit_redis_breaker_transitions_total", "state" => "closed").increment(1);
            tracing::info!("redis circuit breaker closed: redis answered the probe; shared policies consult it again");
        }
    }

    /// Redis failed or timed out. Returns true when this error opened the breaker.
    pub fn record_failure(&self) -> bool {
        if self.is_open() {
            // A failed probe (or a call that was already in flight): stay open for
            // another full interval from now.
            self.open_until_ms
                .store(self.now_ms() + self.interval_ms(), Ordering::Release);
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.after_errors {
            return false;
        }
        self.consecutive.store(0, Ordering::Relaxed);
        let opened = self
            .open_until_ms
            .compare_exchange(
                0,
                self.now_ms() + self.interval_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if opened {
            metrics::gauge!("phr_rate_limit_redis_breaker_open").set(1.0);
            metrics::counter!("phr_rate_limit_redis_breaker_transitions_total", "state" => "open").increment(1);
            tracing::warn!(
                consecutive_errors = n,
                retry_interval_ms = self.retry_interval.as_millis() as u64,
                "redis circuit breaker opened: shared policies apply their on_redis_error mode without calling redis until a probe succeeds"
            );
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_errors_only() {
        let b = Breaker::new(3, Duration::from_secs(60));
        assert!(!b.record_failure());
        b.record_success();
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        assert_eq!(b.admit(), Admission::Call, "two errors in a row are not enough");
        assert!(b.record_failure());
        assert!(matches!(b.admit(), Admission::FailFast(d) if d > Duration::from_secs(50)));
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through_and_its_outcome_decides() {
        let b = Breaker::new(1, Duration::from_millis(30));
        assert!(b.record_failure());
        assert!(matches!(b.admit(), Admission::FailFast(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admission::Call, "the first caller after the interval probes");
        assert!(matches!(b.admit(), Admission::FailFast(_)), "only one probe at a time");
        // The probe fails: open for another interval.
        assert!(!b.record_failure());
        assert!(matches!(b.admit(), Admission::FailFast(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admission::Call);
        b.record_success();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admission::Call);
        assert_eq!(b.admit(), Admission::Call);
    }

    #[test]
    fn an_abandoned_probe_does_not_wedge_the_breaker() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.record_failure();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit(), Admission::Call); // this probe never reports back
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit(), Admission::Call, "the next interval probes again");
    }
}
