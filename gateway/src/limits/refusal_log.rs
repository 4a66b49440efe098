//! Rate-limited log lines for connections refused at accept (EX-NET-3, AV-DOS-1,
//! LOG-ACC-1).
//!
//! Why: a connection refused by the per-IP handshake rate or connection cap is closed
//! before TLS, so it has no request and no access record; the client (a TLS scanner, a
//! health checker behind one address) only sees a reset and reports, say, "TLS 1.3 not
//! offered". Without a log line an operator cannot tell that from a TLS misconfiguration.
//! Why rate-limited: the refusals come from a client that is already over a limit; one
//! line per refusal would let it flood the log. So one line per source per interval
//! (the refusal counter still counts every one).
//!
//! Memory: at most `capacity` sources are remembered; entries older than the interval
//! are dropped when the table is full. While more than `capacity` distinct sources are
//! refused within one interval, the sources beyond it are not logged (a flood from many
//! addresses is visible in `phr_connections_refused_total`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};

use super::keys::IpKey;

/// One log line per source per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most sources remembered within one interval.
const CAPACITY: usize = 4096;

/// Remembers when each source was last logged.
pub struct RefusalLog<C: Clock> {
    interval: Duration,
    capacity: usize,
    clock: C,
    last: Mutex<HashMap<IpKey, C::Instant>>,
}

impl<C: Clock> RefusalLog<C> {
    /// One line per source per [`REFUSAL_LOG_INTERVAL`], on `clock`.
    pub fn new(clock: C) -> Self {
        Self::with(clock, REFUSAL_LOG_INTERVAL, CAPACITY)
    }

    fn with(clock: C, interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            capacity,
            clock,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The interval between two lines for one source, for the log line itself.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether a refusal of `source` now should be logged; if so, the source is
    /// silent for the next interval.
    pub fn should_log(&self, source: IpKey) -> bool {
        let now = self.clock.now();
        let fresh = |t: &C::Instant| Duration::from(now.duration_since(*t)) < self.interval;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(&source) {
            Some(t) if fresh(t) => return false,
            Some(_) => {}
            None if last.len() >= self.capacity => {
                last.retain(|_, t| fresh(t));
                if last.len() >= self.capacity {
                    return false;
                }
            }
            None => {}
        }
        last.insert(source, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn key(s: &str) -> IpKey {
        IpKey::new(s.parse().unwrap(), 64)
    }

    #[test]
    fn one_line_per_source_per_interval() {
        let clock = FakeRelativeClock::default();
        let log = RefusalLog::with(clock.clone(), Duration::from_secs(60), 10);
        assert!(log.should_log(key("192.0.2.1")));
        assert!(!log.should_log(key("192.0.2.1")), "same source, same interval");
        assert!(log.should_log(key("192.0.2.2")), "another source has its own line");
        clock.advance(Duration::from_secs(59));
        assert!(!log.should_log(key("192.0.2.1")));
        clock.advance(Duration::from_secs(1));
        assert!(log.should_log(key("192.0.2.1")), "a new interval, a new line");
        assert!(!log.should_log(key("192.0.2.1")));
    }

    #[test]
    fn the_table_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let log = RefusalLog::with(clock.clone(), Duration::from_secs(60), 2);
        assert!(log.should_log(key("192.0.2.1")));
        assert!(log.should_log(key("192.0.2.2")));
        assert!(!log.should_log(key("192.0.2.3")), "full within the interval");
        clock.advance(Duration::from_secs(60));
        assert!(log.should_log(key("192.0.2.3")), "expired entries make room");
        assert!(log.last.lock().unwrap().len() <= 2);
    }
}
