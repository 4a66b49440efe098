//! Tests of the Redis limiter. Those needing Redis read `PHR_TEST_REDIS_URL`
//! (see `phr_test_support::services`); the unreachable-Redis tests always run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{RedisConfig, RedisFailureMode};
use super::decision::Denial;
use super::local::RateSpec;
use super::shared::{RedisStore, SharedLimiter};
use super::test_support::unique_prefix;
use phr_test_support::services::redis_url;

fn store(url: &str, prefix: &str) -> RedisStore {
    let cfg = RedisConfig {
        url: url.to_owned(),
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
        jurisdiction: None,
        in_cluster: true,
        breaker_after_errors: 3,
        breaker_retry_interval: Duration::from_secs(1),
    };
    RedisStore::new(&cfg, None).unwrap()
}

fn spec(rate: u32, per: Duration, burst: u32) -> RateSpec {
    RateSpec { rate, per, burst }
}

#[tokio::test]
async fn unreachable_redis_fails_closed_or_open_as_configured() {
    let cfg = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        timeout: Duration::from_millis(50),
        key_prefix: unique_prefix("unreachable"),
        jurisdiction: None,
        in_cluster: true,
        breaker_after_errors: 3,
        breaker_retry_interval: Duration::from_secs(1),
    };
    let s = spec(10, Duration::from_secs(1), 10);
    let closed = SharedLimiter::new(
        "closed",
        s,
        RedisFailureMode::Closed,
        100,
        RedisStore::new(&cfg, None).unwrap(),
    );
    let open = SharedLimiter::new(
        "open",
        s,
        RedisFailureMode::Open,
        100,
        RedisStore::new(&cfg, None).unwrap(),
    );
    for _ in 0..3 {
        let started = Instant::now();
        let d = closed.check("alice", 1).await;
        assert!(!d.allowed);
        assert_eq!(d.denial, Some(Denial::StoreUnavailable));
        assert!(d.retry_after.is_some());
        assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
        let d = open.check("alice", 1).await;
        assert!(d.allowed);
        assert_eq!(d.denial, None);
    }
    assert_eq!(closed.errors(), 3);
    assert_eq!(open.errors(), 3);
}

/// Item 8 of issue 17: with Redis refusing, the breaker opens after
/// `breaker_after_errors` errors and later decisions do not call Redis at all; they are
/// decided by the policy's mode and marked unchecked (no RateLimit headers).
#[tokio::test]
async fn open_breaker_decides_without_calling_redis() {
    let cfg = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        timeout: Duration::from_millis(50),
        key_prefix: unique_prefix("breaker"),
        jurisdiction: None,
        in_cluster: true,
        breaker_after_errors: 2,
        breaker_retry_interval: Duration::from_secs(60),
    };
    let s = spec(10, Duration::from_secs(1), 10);
    let store = RedisStore::new(&cfg, None).unwrap();
    let closed = SharedLimiter::new("closed", s, RedisFailureMode::Closed, 100, store.clone());
    let open = SharedLimiter::new("open", s, RedisFailureMode::Open, 100, store);
    assert!(!closed.check("alice", 1).await.checked);
    assert!(!open.check("alice", 1).await.checked);
    assert_eq!(
        closed.errors() + open.errors(),
        2,
        "two errors on one Redis open its breaker"
    );
    for _ in 0..20 {
        let d = closed.check("alice", 1).await;
        assert!(!d.allowed && !d.checked);
        assert_eq!(d.denial, Some(Denial::StoreUnavailable));
        assert!(d.retry_after.unwrap() > Duration::from_secs(50), "until the probe");
        let d = open.check("alice", 1).await;
        assert!(d.allowed && !d.checked);
    }
    assert_eq!(
        closed.round_trips() + open.round_trips(),
        2,
        "no call to Redis while open"
    );
    assert_eq!(closed.errors() + open.errors(), 2);
    assert_eq!(closed.short_circuited() + open.short_circuited(), 40);
}

async fn hammer(limiter: Arc<SharedLimiter>, key: &'static str, max: u32, deadline: Instant, pace: bool) -> u32 {
    let mut allowed = 0;
    for _ in 0..max {
        if Instant::now() >= deadline {
            break;
        }
        let d = limiter.check(key, 1).await;
        assert_ne!(d.denial, Some(Denial::StoreUnavailable), "redis failed during the test");
        if d.allowed {
            allowed += 1;
        } else if pace {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    allowed
}

/// One gateway process's limiter `p` (fail closed) with `s`, its state in Redis under
/// `prefix`: two of them on the same prefix are two processes sharing a limit.
fn process(url: &str, prefix: &str, s: RateSpec) -> Arc<SharedLimiter> {
    Arc::new(SharedLimiter::new(
        "p",
        s,
        RedisFailureMode::Closed,
        100,
        store(url, prefix),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_overspend_a_shared_burst() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("burst");
    // One unit per hour: nothing replenishes during the test, so exactly the
    // burst may be admitted however the two "processes" interleave.
    let s = spec(1, Duration::from_secs(3600), 50);
    let (a, b) = (process(&url, &prefix, s), process(&url, &prefix, s));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(hammer(l, "shared-key", 100, deadline, false)));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 50, "two instances together admitted {total} of a burst of 50");
    assert!(a.round_trips() + b.round_trips() < 800, "pre-check saved round trips");
}

async fn server_time(url: &str) -> Duration {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_the_sustained_rate_within_one_percent() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("sustained");
    let s = spec(200, Duration::from_secs(1), 20);
    let (a, b) = (process(&url, &prefix, s), process(&url, &prefix, s));
    let t0 = server_time(&url).await;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(hammer(l, "rate-key", 20_000, deadline, true)));
    }
    let mut total = 0u32;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = server_time(&url).await.saturating_sub(t0).as_secs_f64();
    // Redis' own clock bounds what GCRA could have replenished.
    let ceiling = 20.0 + 200.0 * elapsed * 1.01 + 1.0;
    assert!(
        f64::from(total) <= ceiling,
        "admitted {total} in {elapsed:.3}s, ceiling {ceiling:.0}"
    );
    eprintln!("admitted {total} in {elapsed:.3}s (ceiling {ceiling:.0})");
    assert!(elapsed > 1.0, "the run lasted {elapsed:.3}s");
    assert!(
        f64::from(total) >= 200.0 * elapsed * 0.5,
        "admitted only {total} in {elapsed:.3}s"
    );
}

#[tokio::test]
async fn a_recent_denial_is_answered_without_redis() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("precheck");
    let l = SharedLimiter::new(
        "p",
        spec(1, Duration::from_secs(3600), 1),
        RedisFailureMode::Closed,
        100,
        store(&url, &prefix),
    );
    assert!(l.check("k", 1).await.allowed);
    let d = l.check("k", 1).await;
    assert_eq!(d.denial, Some(Denial::RateLimited));
    let retry = d.retry_after.unwrap();
    assert!(
        retry > Duration::from_secs(3500) && retry <= Duration::from_secs(3600),
        "{retry:?}"
    );
    assert_eq!(l.round_trips(), 2);
    let d = l.check("k", 1).await;
    assert!(!d.allowed);
    assert_eq!(l.round_trips(), 2, "denied locally");
    assert!(l.check("other", 1).await.allowed);
    assert_eq!(l.round_trips(), 3);
}
