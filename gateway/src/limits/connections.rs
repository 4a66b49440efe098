//! Per-IP connection cap and TLS handshake rate, applied at accept
//! (EX-NET-3 接続元制限, AV-DOS-1).
//!
//! Why at accept: one client holding thousands of idle connections, or
//! opening handshakes in a loop (each costs the server a private-key
//! operation), exhausts the gateway before any request exists to limit.
//! The gateway's total connection cap stays in the gateway; this adds the
//! per-source share. IPv6 sources count by prefix (default /64, see
//! [`IpKey`]); addresses in `exempt` (health checkers, the load balancer)
//! are not counted.
//!
//! Memory: the open-connection table holds only sources with at least one
//! open connection (entries are removed when their count drops to zero), so
//! it is bounded by the gateway's total connection cap; the handshake limiter
//! is a bounded [`LocalLimiter`].
//!
//! A refusal closes the socket before TLS, so it leaves no request and no access
//! record: each is counted, and logged once per source per minute ([`RefusalLog`]),
//! naming the limit and the key that raises it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use ipnet::IpNet;

use super::config::ConnectionLimitsConfig;
use super::decision::RateLimitDecision;
use super::keys::IpKey;
use super::local::{LimiterError, LocalLimiter, RateSpec};
use super::refusal_log::RefusalLog;

type Counts = Arc<Mutex<HashMap<IpKey, u32>>>;

/// Per-source connection counting and handshake limiting.
pub struct ConnectionLimiter<C: Clock = DefaultClock> {
    max_per_ip: u32,
    v6_prefix: u8,
    exempt: Vec<IpNet>,
    open: Counts,
    handshakes: LocalLimiter<C>,
    /// One log line per source per interval for each kind of refusal.
    handshake_refusals: RefusalLog<C>,
    cap_refusals: RefusalLog<C>,
}

/// Holds one counted connection; dropping it releases the slot. Keep it in
/// the connection task so every exit path (error, timeout, panic unwind)
/// releases.
#[must_use = "dropping the guard releases the connection slot at once"]
pub struct ConnGuard {
    slot: Option<(Counts, IpKey)>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some((counts, key)) = self.slot.take() {
            let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

impl ConnectionLimiter<DefaultClock> {
    /// Builds the limiter from `[connection_limits]` on the monotonic clock.
    pub fn new(cfg: &ConnectionLimitsConfig) -> Result<Self, LimiterError> {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ConnectionLimiter<C> {
    /// As [`ConnectionLimiter::new`] on a given clock (tests).
    pub fn with_clock(cfg: &ConnectionLimitsConfig, clock: C) -> Result<Self, LimiterError> {
        let spec = RateSpec {
            rate: cfg.tls_handshakes_per_ip_per_second,
            per: std::time::Duration::from_secs(1),
            burst: cfg.tls_handshake_burst,
        };
        Ok(Self {
            max_per_ip: cfg.max_connections_per_ip,
            v6_prefix: cfg.ipv6_prefix,
            exempt: cfg.exempt.clone(),
            open: Arc::default(),
            handshake_refusals: RefusalLog::new(clock.clone()),
            cap_refusals: RefusalLog::new(clock.clone()),
            handshakes: LocalLimiter::with_clock("tls_handshake", spec, cfg.max_tracked_ips, clock)?,
        })
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Counts a new connection from `ip`; `None` when the source already
    /// holds `max_connections_per_ip` (close the socket, log the refusal).
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnGuard> {
        if self.is_exempt(ip) {
            return Some(ConnGuard { slot: None });
        }
        let key = IpKey::new(ip, self.v6_prefix);
        let mut map = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_ip {
            if *n == 0 {
                map.remove(&key);
            }
            drop(map);
            metrics::counter!("phr_connections_refused_total", "reason" => "per_ip_cap").increment(1);
            if self.cap_refusals.should_log(key) {
                tracing::warn!(
                    source = %key,
                    limit = self.max_per_ip,
                    config_key = "connection_limits.max_connections_per_ip",
                    silent_for_s = self.cap_refusals.interval().as_secs(),
                    "connection refused before TLS: the source already holds connection_limits.max_connections_per_ip = {} open connections; raise that key, or list the source in connection_limits.exempt if it is a load balancer or health checker (further refusals of this source are counted in phr_connections_refused_total{{reason=\"per_ip_cap\"}}, not logged, for {} s)",
                    self.max_per_ip,
                    self.cap_refusals.interval().as_secs(),
                );
            }
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            slot: Some((self.open.clone(), key)),
        })
    }

    #[cfg(test)]
    /// Open connections counted for `ip`'s source key.
    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        let key = IpKey::new(ip, self.v6_prefix);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    #[cfg(test)]
    /// Sources with at least one open connection.
    pub fn tracked_sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Checks (and spends) one TLS handshake for `ip` before the handshake
    /// starts; on denial close the socket without a TLS alert.
    pub fn check_handshake(&self, ip: IpAddr) -> RateLimitDecision {
        if self.is_exempt(ip) {
            let spec = self.handshakes.spec();
            return RateLimitDecision {
                allowed: true,
                limit: spec.rate,
                window: spec.per,
                remaining: spec.burst,
                reset_after: std::time::Duration::ZERO,
                retry_after: None,
                policy: self.handshakes.policy().clone(),
                denial: None,
                checked: true,
            };
        }
        let key = IpKey::new(ip, self.v6_prefix);
        let decision = self.handshakes.check_digest(self.handshakes.hasher().hash_ip(key), 1);
        if !decision.allowed && self.handshake_refusals.should_log(key) {
            let spec = self.handshakes.spec();
            tracing::warn!(
                source = %key,
                per_second = spec.rate,
                burst = spec.burst,
                config_key = "connection_limits.tls_handshakes_per_ip_per_second",
                silent_for_s = self.handshake_refusals.interval().as_secs(),
                "TLS handshake refused: the source started more than connection_limits.tls_handshake_burst = {} handshakes at once (then connection_limits.tls_handshakes_per_ip_per_second = {} per second), so its connection was closed before TLS (a scanner reports this as \"TLS not offered\"); raise those keys, or list the source in connection_limits.exempt (further refusals of this source are counted in phr_connections_refused_total{{reason=\"handshake_rate\"}}, not logged, for {} s)",
                spec.burst,
                spec.rate,
                self.handshake_refusals.interval().as_secs(),
            );
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn cfg() -> ConnectionLimitsConfig {
        ConnectionLimitsConfig {
            max_connections_per_ip: 3,
            tls_handshakes_per_ip_per_second: 2,
            tls_handshake_burst: 4,
            exempt: vec!["192.0.2.100/32".parse().unwrap()],
            ..ConnectionLimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_cap_holds_and_guards_release_slots() {
        let l = ConnectionLimiter::with_clock(&cfg(), FakeRelativeClock::default()).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let guards: Vec<_> = (0..3).map(|_| l.try_acquire(ip).expect("under cap")).collect();
        assert!(l.try_acquire(ip).is_none(), "fourth connection refused");
        assert!(
            l.try_acquire("192.0.2.2".parse().unwrap()).is_some(),
            "other sources unaffected"
        );
        drop(guards);
        assert_eq!(l.open_connections(ip), 0);
        assert_eq!(l.tracked_sources(), 0, "entries removed at zero");
        assert!(l.try_acquire(ip).is_some());
        let exempt: IpAddr = "192.0.2.100".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| l.try_acquire(exempt).expect("exempt")).collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn ipv6_sources_share_a_slot_per_64() {
        let l = ConnectionLimiter::with_clock(&cfg(), FakeRelativeClock::default()).unwrap();
        let held: Vec<_> = (1..=3)
            .map(|i| l.try_acquire(format!("2001:db8:0:1::{i}").parse().unwrap()).unwrap())
            .collect();
        assert!(l.try_acquire("2001:db8:0:1:ffff::9".parse().unwrap()).is_none());
        assert!(l.try_acquire("2001:db8:0:2::1".parse().unwrap()).is_some());
        drop(held);
    }

    #[test]
    fn handshake_rate_is_limited_per_ip() {
        let clock = FakeRelativeClock::default();
        let l = ConnectionLimiter::with_clock(&cfg(), clock.clone()).unwrap();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let admitted = (0..10).filter(|_| l.check_handshake(ip).allowed).count();
        assert_eq!(admitted, 4, "burst of 4");
        assert!(l.check_handshake("198.51.100.8".parse().unwrap()).allowed);
        clock.advance(Duration::from_millis(500));
        assert!(l.check_handshake(ip).allowed, "2/s replenishes one per 500 ms");
        assert!(!l.check_handshake(ip).allowed);
        let exempt: IpAddr = "192.0.2.100".parse().unwrap();
        assert!((0..20).all(|_| l.check_handshake(exempt).allowed));
    }
}
