//! One backend address of an upstream, with passive health (AV-BCP-1): an endpoint that
//! fails to connect `eject_after_failures` times in a row is skipped for `eject_for`, so a
//! dead replica costs one connect timeout per ejection period instead of one per request.
//! Active health checks ([`super::health`]) can take it out until a probe succeeds, and
//! bring it back early after a successful probe. It also holds its keep-alive connections.

use super::pool::Connections;
pub use crate::config::endpoint::{EndpointError, EndpointUrl};
use http::HeaderValue;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `ejected_until_ms` of an endpoint the health checks took out: no timer brings it back.
const DOWN: u64 = u64::MAX;

/// A parsed `scheme://host:port` endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// `https` (true) or plain `http` (loopback only).
    pub tls: bool,
    /// The host name or address, without IPv6 brackets.
    pub host: String,
    /// The port (default 443 or 80).
    pub port: u16,
    /// `scheme://host:port`, reported in access records as the upstream. Shared: every
    /// request that goes here takes a copy (an `Arc` clone, not a string copy).
    pub base: Arc<str>,
    /// `host:port` as configured: the `Host` header unless the route preserves the client's.
    pub authority: String,
    /// `authority` as a header value, built once rather than per request; `None` if it
    /// cannot be one (then every request to the endpoint is refused, as before).
    pub host_header: Option<HeaderValue>,
    pub(super) connections: Connections,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the endpoint is ejected; 0 = healthy;
    /// [`DOWN`] = until a health probe succeeds.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

impl Endpoint {
    /// Parses an endpoint URL (see [`EndpointUrl::parse`]).
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let EndpointUrl {
            tls,
            host,
            port,
            base,
            authority,
        } = EndpointUrl::parse(url)?;
        Ok(Self {
            tls,
            host,
            port,
            base: Arc::from(base),
            host_header: HeaderValue::from_str(&authority).ok(),
            authority,
            connections: Connections::new(0, Duration::ZERO),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Keeps up to `max_kept` connections open, each reused while idle for at most
    /// `idle_timeout`.
    pub(super) fn keeping(mut self, max_kept: usize, idle_timeout: Duration) -> Self {
        self.connections = Connections::new(max_kept, idle_timeout);
        self
    }

    /// Whether passive or active health checks have taken the endpoint out.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// How much longer the endpoint stays out (`Duration::MAX`: until a probe succeeds);
    /// `None` when it is in service.
    pub fn ejected_for(&self) -> Option<Duration> {
        match self.ejected_until_ms.load(Ordering::Relaxed) {
            0 => None,
            DOWN => Some(Duration::MAX),
            until => {
                let now = self.now_ms();
                (now < until).then(|| Duration::from_millis(until - now))
            }
        }
    }

    /// Takes the endpoint out until a health probe succeeds; true if it was in service
    /// or only ejected for a time.
    pub(super) fn mark_down(&self) -> bool {
        self.ejected_until_ms.swap(DOWN, Ordering::Relaxed) != DOWN
    }

    /// A health probe succeeded: back in service at once; true if it was out.
    pub(super) fn restore(&self) -> bool {
        let was_out = self.is_ejected();
        if was_out {
            self.failures.store(0, Ordering::Relaxed);
        }
        self.ejected_until_ms.store(0, Ordering::Relaxed);
        was_out
    }

    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a connection failure; returns true when this failure ejected the endpoint.
    pub fn record_failure(&self, eject_after: u32, eject_for: Duration) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= eject_after {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms
                .store(self.now_ms() + eject_for.as_millis() as u64, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn now_ms(&self) -> u64 {
        // +1 so that "ejected until" is never the 0 that means healthy.
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let e = Endpoint::parse("https://fhir.example.jp:8443").unwrap();
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("fhir.example.jp", 8443));
        assert_eq!(e.host_header.as_ref().unwrap(), "fhir.example.jp:8443");
        assert_eq!(&*e.base, "https://fhir.example.jp:8443");
        assert!(EndpointUrl::parse("http://[::1]:80").unwrap().is_loopback());
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("https://x/path").is_err());
        assert!(Endpoint::parse("https://u:p@x").is_err());
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let e = Endpoint::parse("http://127.0.0.1:1").unwrap();
        assert!(!e.record_failure(3, Duration::from_secs(30)));
        e.record_success();
        assert!(!e.record_failure(3, Duration::from_secs(30)));
        assert!(!e.record_failure(3, Duration::from_secs(30)));
        assert!(!e.is_ejected());
        assert!(e.record_failure(3, Duration::from_secs(30)));
        assert!(e.is_ejected());
        assert!(e.ejected_for().unwrap() > Duration::from_secs(29));
    }

    #[test]
    fn probes_take_an_endpoint_out_until_one_succeeds_and_bring_it_back_early() {
        let e = Endpoint::parse("http://127.0.0.1:1").unwrap();
        assert!(e.record_failure(1, Duration::from_secs(300)));
        assert!(e.restore(), "a passive ejection ends with a successful probe");
        assert!(!e.is_ejected() && e.ejected_for().is_none());
        assert!(!e.restore(), "nothing to restore");
        assert!(e.mark_down());
        assert!(!e.mark_down(), "already down");
        assert!(e.is_ejected());
        assert_eq!(e.ejected_for(), Some(Duration::MAX), "no timer brings it back");
        assert!(e.restore());
        assert!(!e.is_ejected());
    }
}
