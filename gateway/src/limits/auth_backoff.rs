//! Failed-authentication back-off (AUTH-LOCK-1 「一定回数以上ログインに失敗した
//! IDを停止」, EX-IDS-1 anomaly counters).
//!
//! The gateway records every 401 against the source (IP, IPv6 by prefix) and,
//! when known, the subject. `after_failures` failures within `window` block
//! that key for `block_for`, doubled on each repeat (`exponential`, up to
//! `max_block`). [`AuthBackoff::is_blocked`] is checked *before* token
//! verification, so a guessing client stops costing signature checks.
//!
//! Subject lockout is a denial-of-service lever against the real user: record
//! subject failures only where the subject is credibly identified (valid
//! signature but e.g. expired, wrong audience, second factor missing); an
//! unverifiable token counts against the IP only.
//!
//! Memory: each table holds at most `max_keys` 64-bit digests. When full,
//! entries neither blocked nor inside their window are purged; if it is still
//! full, failures of untracked keys are counted in one overflow entry per
//! table, which then blocks all untracked keys together — a distributed
//! guessing attack large enough to fill the table is throttled as a group.
//! Lockouts are returned as [`Lockout`] for the access log (LOG) and counted
//! in `phr_auth_lockouts_total{scope}`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bounded_store::DigestMap;
use super::config::AuthBackoffConfig;
use super::keys::{IpKey, KeyHasher};

/// What a lockout applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockoutScope {
    /// A source address or IPv6 prefix.
    Ip(IpKey),
    /// An account.
    Subject(String),
    /// Untracked keys counted together while the table was full.
    Overflow,
}

/// A lockout that a failure just triggered, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// What is blocked.
    pub scope: LockoutScope,
    /// How long.
    pub blocked_for: Duration,
    /// How many lockouts this key has had in a row (1 for the first).
    pub strikes: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    strikes: u32,
}

impl Entry {
    fn fresh(now: Instant) -> Self {
        Self {
            window_start: now,
            failures: 0,
            blocked_until: None,
            strikes: 0,
        }
    }
}

struct Table {
    map: DigestMap<Entry>,
    overflow: Entry,
    /// Purges are O(table); at most one per second, so a flood of new keys
    /// cannot turn every failure into a full scan.
    last_purge: Option<Instant>,
}

/// Failure counters and blocks, per IP and per subject.
pub struct AuthBackoff {
    cfg: AuthBackoffConfig,
    hasher: KeyHasher,
    ips: Mutex<Table>,
    subjects: Mutex<Table>,
    /// Set (for good) by the first block. Until then nothing can be blocked, and
    /// [`Self::is_blocked`], asked on every request, answers without hashing a key or
    /// taking a lock.
    any_blocked: AtomicBool,
}

impl AuthBackoff {
    /// Builds empty tables from `[auth_backoff]`.
    pub fn new(cfg: &AuthBackoffConfig) -> Self {
        let table = || {
            let now = Instant::now();
            Mutex::new(Table {
                map: DigestMap::default(),
                overflow: Entry::fresh(now),
                last_purge: None,
            })
        };
        Self {
            cfg: cfg.clone(),
            hasher: KeyHasher::new(),
            ips: table(),
            subjects: table(),
            any_blocked: AtomicBool::new(false),
        }
    }

    fn ip_digest(&self, ip: IpAddr) -> (u64, IpKey) {
        let key = IpKey::new(ip, 64);
        (self.hasher.hash_ip(key), key)
    }

    /// Records a failed authentication now; returns the lockouts it triggered.
    pub fn record_failure(&self, ip: IpAddr, subject: Option<&str>) -> Vec<Lockout> {
        self.record_failure_at(ip, subject, Instant::now())
    }

    /// As [`Self::record_failure`] at a given instant (tests, replays).
    pub fn record_failure_at(&self, ip: IpAddr, subject: Option<&str>, now: Instant) -> Vec<Lockout> {
        let mut out = Vec::new();
        if self.cfg.per_ip {
            let (digest, key) = self.ip_digest(ip);
            if let Some((strikes, d, overflow)) = self.fail(&self.ips, digest, now) {
                let scope = if overflow {
                    LockoutScope::Overflow
                } else {
                    LockoutScope::Ip(key)
                };
                out.push(Lockout {
                    scope,
                    blocked_for: d,
                    strikes,
                });
            }
        }
        if let (true, Some(s)) = (self.cfg.per_subject, subject) {
            if let Some((strikes, d, overflow)) = self.fail(&self.subjects, self.hasher.hash_str(s), now) {
                let scope = if overflow {
                    LockoutScope::Overflow
                } else {
                    LockoutScope::Subject(s.to_owned())
                };
                out.push(Lockout {
                    scope,
                    blocked_for: d,
                    strikes,
                });
            }
        }
        for l in &out {
            let scope = match l.scope {
                LockoutScope::Ip(_) => "ip",
                LockoutScope::Subject(_) => "subject",
                LockoutScope::Overflow => "overflow",
            };
            metrics::counter!("phr_auth_lockouts_total", "scope" => scope).increment(1);
        }
        out
    }

    fn block_length(&self, strikes: u32) -> Duration {
        if !self.cfg.exponential {
            return self.cfg.block_for;
        }
        let factor = 1u32.checked_shl(strikes.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.cfg.block_for.saturating_mul(factor).min(self.cfg.max_block)
    }

    /// One failure for `digest`; `Some((strikes, block, overflow))` if it blocks.
    fn fail(&self, table: &Mutex<Table>, digest: u64, now: Instant) -> Option<(u32, Duration, bool)> {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.cfg.window;
        let purge_due = t
            .last_purge
            .is_none_or(|p| now.saturating_duration_since(p) >= Duration::from_secs(1));
        if purge_due && !t.map.contains_key(&digest) && t.map.len() >= self.cfg.max_keys {
            t.last_purge = Some(now);
            t.map
                .retain(|_, e| e.blocked_until.is_some_and(|u| u > now) || now.duration_since(e.window_start) < window);
        }
        let overflow = !t.map.contains_key(&digest) && t.map.len() >= self.cfg.max_keys;
        let e = if overflow {
            &mut t.overflow
        } else {
            t.map.entry(digest).or_insert_with(|| Entry::fresh(now))
        };
        if e.blocked_until.is_some_and(|u| u > now) {
            return None; // already blocked: the gateway should not have asked
        }
        if now.duration_since(e.window_start) >= window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures < self.cfg.after_failures {
            return None;
        }
        e.strikes = e.strikes.saturating_add(1);
        e.failures = 0;
        e.window_start = now;
        let strikes = e.strikes;
        let d = self.block_length(strikes);
        e.blocked_until = Some(now + d);
        // Under the table's lock, so a reader that sees `false` could not have seen
        // this block under the lock either.
        self.any_blocked.store(true, Ordering::Release);
        Some((strikes, d, overflow))
    }

    /// Remaining block of the IP or the subject (the longer), if any.
    pub fn is_blocked(&self, ip: IpAddr, subject: Option<&str>) -> Option<Duration> {
        self.is_blocked_at(ip, subject, Instant::now())
    }

    /// As [`Self::is_blocked`] at a given instant.
    pub fn is_blocked_at(&self, ip: IpAddr, subject: Option<&str>, now: Instant) -> Option<Duration> {
        if !self.any_blocked.load(Ordering::Acquire) {
            return None;
        }
        let remaining = |table: &Mutex<Table>, digest: u64| {
            let t = table.lock().unwrap_or_else(|e| e.into_inner());
            let e = match t.map.get(&digest) {
                Some(e) => *e,
                None if t.map.len() >= self.cfg.max_keys => t.overflow,
                None => return None,
            };
            e.blocked_until
                .and_then(|u| u.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let ip_block = if self.cfg.per_ip {
            remaining(&self.ips, self.ip_digest(ip).0)
        } else {
            None
        };
        let subject_block = match (self.cfg.per_subject, subject) {
            (true, Some(s)) => remaining(&self.subjects, self.hasher.hash_str(s)),
            _ => None,
        };
        ip_block.max(subject_block)
    }

    #[cfg(test)]
    /// Keys tracked (IPs, subjects); each at most `max_keys`.
    pub fn tracked(&self) -> (usize, usize) {
        let len = |t: &Mutex<Table>| t.lock().unwrap_or_else(|e| e.into_inner()).map.len();
        (len(&self.ips), len(&self.subjects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthBackoffConfig {
        AuthBackoffConfig {
            after_failures: 3,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(300),
            max_block: Duration::from_secs(1000),
            max_keys: 100,
            ..AuthBackoffConfig::default()
        }
    }

    #[test]
    fn blocks_after_n_failures_in_window_and_backs_off_exponentially() {
        let b = AuthBackoff::new(&cfg());
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let t0 = Instant::now();
        assert!(b.record_failure_at(ip, Some("alice"), t0).is_empty());
        assert!(b.record_failure_at(ip, Some("alice"), t0).is_empty());
        assert_eq!(b.is_blocked_at(ip, Some("alice"), t0), None, "two failures: not yet");
        let locks = b.record_failure_at(ip, Some("alice"), t0);
        assert_eq!(locks.len(), 2, "IP and subject both locked: {locks:?}");
        assert_eq!(locks[1].scope, LockoutScope::Subject("alice".into()));
        assert_eq!(b.is_blocked_at(ip, None, t0), Some(Duration::from_secs(300)));
        let other_ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            b.is_blocked_at(other_ip, Some("alice"), t0),
            Some(Duration::from_secs(300))
        );
        assert_eq!(b.is_blocked_at(other_ip, Some("bob"), t0), None);
        // After the block: three more failures block for twice as long.
        let t1 = t0 + Duration::from_secs(301);
        assert_eq!(b.is_blocked_at(ip, Some("alice"), t1), None);
        for _ in 0..2 {
            assert!(b.record_failure_at(ip, None, t1).is_empty());
        }
        let locks = b.record_failure_at(ip, None, t1);
        assert_eq!(locks[0].blocked_for, Duration::from_secs(600));
        assert_eq!(locks[0].strikes, 2);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let b = AuthBackoff::new(&cfg());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t0 = Instant::now();
        b.record_failure_at(ip, None, t0);
        b.record_failure_at(ip, None, t0);
        let later = t0 + Duration::from_secs(61);
        assert!(b.record_failure_at(ip, None, later).is_empty());
        assert_eq!(b.is_blocked_at(ip, None, later), None);
    }

    #[test]
    fn memory_is_bounded_and_overflow_blocks_as_a_group() {
        let b = AuthBackoff::new(&cfg());
        let t0 = Instant::now();
        let mut locked_overflow = false;
        for i in 0..10_000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            for l in b.record_failure_at(ip, None, t0) {
                locked_overflow |= l.scope == LockoutScope::Overflow;
            }
        }
        assert!(b.tracked().0 <= 100);
        assert!(locked_overflow, "untracked sources were counted together");
        assert!(b.is_blocked_at("10.200.0.1".parse().unwrap(), None, t0).is_some());
        // Once the window passes, stale entries are purged and new sources tracked.
        let later = t0 + Duration::from_secs(2000);
        b.record_failure_at("192.0.2.1".parse().unwrap(), None, later);
        assert!(b.tracked().0 <= 100);
        assert_eq!(b.is_blocked_at("192.0.2.1".parse().unwrap(), None, later), None);
    }
}
