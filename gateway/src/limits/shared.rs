//! Redis-backed GCRA shared by several gateway processes (AV-DOS-1).
//!
//! Why: with N gateway processes behind a load balancer, N local limiters
//! admit N times the configured rate. A `shared = true` policy keeps each
//! key's GCRA state (its theoretical arrival time, TAT) in Redis instead.
//!
//! * **One atomic round trip per decision**: [`GCRA_LUA`] reads the TAT,
//!   decides with the server's own `TIME` (no clock skew between gateways),
//!   and writes the new TAT with `PEXPIRE`-style expiry in one script, so two
//!   gateways can never both spend the last unit (no read-then-write race).
//!   Invoked by `EVALSHA` (`redis::Script` loads it on `NOSCRIPT`).
//! * **Local pre-check**: after Redis denies a key, the same or a costlier
//!   request for that key is denied locally until its retry-after passes, so
//!   a client hammering past its limit costs no Redis traffic.
//! * **Failure mode** per policy when Redis errors or exceeds `timeout`:
//!   `closed` denies with [`Denial::StoreUnavailable`], `open` admits. Either
//!   way the event is counted in `phr_rate_limit_redis_errors_total{policy,mode}`
//!   and logged at most once per 10 s per policy.
//! * **Circuit breaker** (`limits::breaker`): after `breaker_after_errors`
//!   consecutive errors, decisions stop calling Redis for
//!   `breaker_retry_interval` and fail fast in their policy's mode; then one
//!   probe decides whether Redis is back. A decision made without Redis
//!   (error or open breaker) is marked unchecked, so it sends no `RateLimit`
//!   headers, and is counted in
//!   `phr_rate_limit_redis_short_circuited_total{policy,mode}` when the
//!   breaker spared the call.
//! * [`redis::aio::ConnectionManager`] reconnects in the background; it is
//!   created lazily, so the gateway starts even while Redis is down.
//! * **Residency (DATA-JP-1)**: the client is given the address the residency
//!   check passed, not the URL's host name, so every connection and reconnection
//!   dials exactly what was checked (the client resolves names on its own, out
//!   of the gateway's sight).
//!
//! Redis keys are `{key_prefix}{policy}:{key}` with the key text as given
//! (subjects, client ids, IPs: deployment-internal identifiers; keep Redis
//! on a private network). Keys above 200 bytes are replaced by a 128-bit
//! digest so a long token cannot bloat Redis.
//! TAT precision is 1 µs; the emission interval is rounded *up* to whole
//! microseconds so rounding never admits more than configured.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::bounded_store::DigestMap;
use super::breaker::{Admission, Breaker};
use super::config::{PolicyConfig, RedisConfig, RedisFailureMode};
use super::decision::{Denial, RateLimitDecision};
use super::keys::KeyHasher;
use super::local::RateSpec;

/// The GCRA script. `KEYS[1]` = bucket; `ARGV` = interval µs, burst, cost.
/// Returns {allowed 0|1, remaining, reset µs, retry-after µs}.
pub const GCRA_LUA: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local span = t * burst
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored) or now, now)
end
local new_tat = tat + t * cost
local allow_at = new_tat - span
if allow_at > now then
  local remaining = math.floor((now + span - tat) / t)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + span - new_tat) / t), new_tat - now, 0}
"#;

/// Why a [`RedisStore`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// The connection manager refused its configuration.
    #[error("redis connection manager: {0}")]
    Manager(#[source] redis::RedisError),
}

/// A process's handle to Redis: one reconnecting connection, shared by all
/// shared policies (clone it into each [`SharedLimiter`]).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    prefix: Arc<str>,
    /// One per Redis, shared by every policy that uses it (clones share it).
    breaker: Arc<Breaker>,
}

impl RedisStore {
    /// Creates the handle without connecting (must run inside a Tokio
    /// runtime). The first decisions fail per policy mode until Redis answers.
    /// `pin`, when given, replaces the URL's host and port: the address the
    /// residency check passed (see `residency::storage_check::check_storage_targets`).
    pub fn new(cfg: &RedisConfig, pin: Option<SocketAddr>) -> Result<Self, SharedError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str()).map_err(SharedError::Url)?;
        if let (Some(pin), redis::ConnectionAddr::Tcp(..)) = (pin, info.addr()) {
            info = info.set_addr(redis::ConnectionAddr::Tcp(pin.ip().to_string(), pin.port()));
        }
        let client = redis::Client::open(info).map_err(SharedError::Url)?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_cfg).map_err(SharedError::Manager)?;
        Ok(Self {
            conn,
            timeout: cfg.timeout,
            prefix: Arc::from(cfg.key_prefix.as_str()),
            breaker: Arc::new(Breaker::new(cfg.breaker_after_errors, cfg.breaker_retry_interval)),
        })
    }
}

/// Emits a warning at most once per interval, counting what it suppressed.
struct LogGate {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogGate {
    const EVERY: Duration = Duration::from_secs(10);

    fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(prev) if now.duration_since(prev) < Self::EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// A recent Redis denial, remembered to deny repeats without a round trip.
#[derive(Clone, Copy)]
struct RecentDenial {
    until: Instant,
    reset_at: Instant,
    cost: u32,
}

/// One shared policy: GCRA in Redis with a local pre-check and a failure mode.
pub struct SharedLimiter {
    policy: Arc<str>,
    spec: RateSpec,
    interval_us: u64,
    store: RedisStore,
    mode: RedisFailureMode,
    script: redis::Script,
    hasher: KeyHasher,
    denied: Mutex<DigestMap<RecentDenial>>,
    max_denied: usize,
    log_gate: LogGate,
    round_trips: AtomicU64,
    errors: AtomicU64,
    short_circuited: AtomicU64,
}

impl SharedLimiter {
    /// Builds the limiter of a configured `shared = true` policy.
    pub fn from_policy(name: &str, p: &PolicyConfig, store: RedisStore) -> Self {
        Self::new(name, RateSpec::from_policy(p), p.on_redis_error, p.max_keys, store)
    }

    /// Builds a limiter; `max_keys` bounds the local pre-check cache.
    pub fn new(name: &str, spec: RateSpec, mode: RedisFailureMode, max_keys: usize, store: RedisStore) -> Self {
        let interval = spec.interval();
        let interval_us = (interval.as_nanos().div_ceil(1000) as u64).max(1);
        Self {
            policy: Arc::from(name),
            spec,
            interval_us,
            store,
            mode,
            script: redis::Script::new(GCRA_LUA),
            hasher: KeyHasher::new(),
            denied: Mutex::new(DigestMap::default()),
            max_denied: max_keys.max(1),
            log_gate: LogGate {
                last: Mutex::new(None),
                suppressed: AtomicU64::new(0),
            },
            round_trips: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
        }
    }

    fn decision(&self) -> RateLimitDecision {
        RateLimitDecision::pending(&self.policy, &self.spec)
    }

    fn redis_key(&self, key: &str) -> String {
        let p = &self.store.prefix;
        let name = &self.policy;
        if key.len() <= 200 && !key.bytes().any(|b| b.is_ascii_control()) {
            return format!("{p}{name}:{key}");
        }
        // Stable across processes (unlike KeyHasher): SipHash-1-3 with fixed
        // keys, twice with different salts. A collision only merges budgets.
        let digest = |salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            salt.hash(&mut h);
            key.hash(&mut h);
            h.finish()
        };
        format!("{p}{name}:h:{:016x}{:016x}", digest(1), digest(2))
    }

    /// Checks and, if admitted, spends `cost` units (0 counts as 1) of `key`'s shared budget.
    pub async fn check(&self, key: &str, cost: u32) -> RateLimitDecision {
        let cost = cost.max(1);
        let mut d = self.decision();
        if cost > self.spec.burst {
            d.denial = Some(Denial::CostAboveBurst);
            d.reset_after = self.spec.interval() * self.spec.burst;
            return d;
        }
        let digest = self.hasher.hash_str(key);
        let now = Instant::now();
        if let Some(hit) = self.recent_denial(digest, cost, now) {
            d.retry_after = Some(hit.until - now);
            d.reset_after = hit.reset_at.saturating_duration_since(now);
            d.denial = Some(Denial::RateLimited);
            return d;
        }
        if let Admission::FailFast(open_for) = self.store.breaker.admit() {
            return self.short_circuit(d, open_for);
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.store.conn.clone();
        let mut call = self.script.key(self.redis_key(key));
        call.arg(self.interval_us).arg(self.spec.burst).arg(cost);
        let reply =
            tokio::time::timeout(self.store.timeout, call.invoke_async::<(i64, i64, i64, i64)>(&mut conn)).await;
        let (allowed, remaining, reset_us, retry_us) = match reply {
            Ok(Ok(v)) => {
                self.store.breaker.record_success();
                v
            }
            Ok(Err(e)) => return self.on_error(d, &e.to_string()),
            Err(_) => return self.on_error(d, "timed out"),
        };
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        d.remaining = remaining.clamp(0, i64::from(u32::MAX)) as u32;
        d.reset_after = us(reset_us);
        if allowed == 1 {
            d.allowed = true;
        } else {
            d.retry_after = Some(us(retry_us));
            d.denial = Some(Denial::RateLimited);
            self.remember_denial(digest, cost, now, us(retry_us), us(reset_us));
        }
        d
    }

    fn recent_denial(&self, digest: u64, cost: u32, now: Instant) -> Option<RecentDenial> {
        let mut map = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        let hit = *map.get(&digest)?;
        if now >= hit.until {
            map.remove(&digest);
            return None;
        }
        (cost >= hit.cost).then_some(hit)
    }

    fn remember_denial(&self, digest: u64, cost: u32, now: Instant, retry: Duration, reset: Duration) {
        let mut map = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max_denied && !map.contains_key(&digest) {
            map.retain(|_, v| v.until > now);
            if map.len() >= self.max_denied {
                return; // full of live denials: skip the shortcut, Redis still decides
            }
        }
        map.insert(
            digest,
            RecentDenial {
                until: now + retry,
                reset_at: now + reset,
                cost,
            },
        );
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            RedisFailureMode::Closed => "closed",
            RedisFailureMode::Open => "open",
        }
    }

    fn on_error(&self, d: RateLimitDecision, error: &str) -> RateLimitDecision {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mode = self.mode_name();
        metrics::counter!("phr_rate_limit_redis_errors_total", "policy" => self.policy.to_string(), "mode" => mode)
            .increment(1);
        if let Some(suppressed) = self.log_gate.admit() {
            tracing::warn!(policy = %self.policy, mode, error, suppressed, "shared rate limit: redis unavailable");
        }
        self.store.breaker.record_failure();
        // If this error opened the breaker, the client is told to come back when the
        // next probe may have closed it; else in a second.
        let wait = self.store.breaker.remaining().max(Duration::from_secs(1));
        self.unchecked(d, wait)
    }

    /// The breaker is open: decided by the failure mode, without a Redis call.
    fn short_circuit(&self, d: RateLimitDecision, open_for: Duration) -> RateLimitDecision {
        self.short_circuited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("phr_rate_limit_redis_short_circuited_total", "policy" => self.policy.to_string(), "mode" => self.mode_name())
            .increment(1);
        self.unchecked(d, open_for.max(Duration::from_secs(1)))
    }

    /// The policy's failure mode decides a request its limit could not be checked for.
    fn unchecked(&self, mut d: RateLimitDecision, wait: Duration) -> RateLimitDecision {
        d.checked = false;
        match self.mode {
            RedisFailureMode::Open => {
                d.allowed = true;
            }
            RedisFailureMode::Closed => {
                d.retry_after = Some(wait);
                d.denial = Some(Denial::StoreUnavailable);
            }
        }
        d
    }

    /// Decisions that went to Redis (the pre-check saves the others).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Redis errors and timeouts seen (also exported as a metric).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Decisions the open circuit breaker made without calling Redis.
    pub fn short_circuited(&self) -> u64 {
        self.short_circuited.load(Ordering::Relaxed)
    }

    /// The policy's name.
    pub fn policy(&self) -> &Arc<str> {
        &self.policy
    }
}
