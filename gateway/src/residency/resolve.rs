//! Name resolution with test overrides (supports DATA-JP-1 / DATA-JP-2 /
//! DATA-JP-3 and ONL-3 enforcement).
//!
//! The address check is only meaningful if it sees the addresses the socket
//! will really connect to. The connector should therefore resolve once with
//! this [`Resolver`], check every address with [`super::policy::Policy`], and connect
//! only to addresses that passed, never handing the hostname to a library
//! that resolves again (DNS rebinding would slip past the check).
//!
//! The override map lets the gateway's tests point `fhir.test` at
//! 127.0.0.1 ("in Japan") and then switch it to 127.0.0.2 ("abroad") while
//! the gateway is running, to prove that a DNS change is caught on the next
//! connection without a restart.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{PoisonError, RwLock};

/// Resolves `host:port`, consulting a runtime-settable override map first.
///
/// Shared (`Arc<Resolver>`) between the connector and the report; the
/// override map uses interior mutability so tests can change an answer
/// through a shared reference mid-run.
#[derive(Debug, Default)]
pub struct Resolver {
    overrides: RwLock<HashMap<String, Vec<IpAddr>>>,
}

impl Resolver {
    /// A resolver with no overrides: plain system DNS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `host` resolve to `addrs` from now on, replacing any earlier
    /// override. An empty list makes the host unresolvable (NXDOMAIN-like).
    ///
    /// Meant for tests and for operators pinning a host in configuration;
    /// pinned addresses are still checked by the policy like any other.
    pub fn set_override(&self, host: &str, addrs: Vec<IpAddr>) {
        let mut map = self.overrides.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(normalize(host), addrs);
    }

    /// Removes the override for `host`; returns whether there was one.
    pub fn clear_override(&self, host: &str) -> bool {
        let mut map = self.overrides.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(&normalize(host)).is_some()
    }

    /// Resolves `host` (a name, an IP literal, or a bracketed IPv6 literal)
    /// to socket addresses, without duplicates, in the resolver's order.
    ///
    /// Order: IP literal, then override, then `tokio::net::lookup_host`.
    /// Literals bypass DNS but not the policy: the caller checks them too.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let key = normalize(host);
        if let Ok(ip) = key.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let pinned = {
            let map = self.overrides.read().unwrap_or_else(PoisonError::into_inner);
            map.get(&key).cloned()
        };
        let addrs: Vec<SocketAddr> = match pinned {
            Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            None => tokio::net::lookup_host((key.as_str(), port))
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: key.clone(),
                    source,
                })?
                .collect(),
        };
        let mut unique: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
        for a in addrs {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        if unique.is_empty() {
            return Err(ResolveError::NoAddresses { host: key });
        }
        Ok(unique)
    }
}

/// Lower-cases, strips one trailing dot and IPv6 brackets, so that
/// `FHIR.test.`, `fhir.test` and `[::1]` hit the same override or literal.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Why a host could not be resolved. The connection must then fail: an
/// unresolvable target cannot be shown to be domestic.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// DNS lookup failed.
    #[error("cannot resolve {host}: {source}; check the host name in the configuration and the DNS service")]
    Lookup {
        /// The normalized host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The lookup (or override) returned no addresses.
    #[error("{host} resolved to no addresses; check its DNS records (or the test override)")]
    NoAddresses {
        /// The normalized host name.
        host: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls once: literal and override answers never await, so no runtime
    /// is needed (the crate depends on tokio with `net` only).
    fn now<F: Future>(f: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("future did not complete without awaiting"),
        }
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literals_bypass_dns() {
        let r = Resolver::new();
        assert_eq!(now(r.resolve("127.0.0.2", 80)).unwrap(), [sa("127.0.0.2:80")]);
        assert_eq!(now(r.resolve("[::1]", 443)).unwrap(), [sa("[::1]:443")]);
    }

    #[test]
    fn override_can_change_mid_run() {
        let r = Resolver::new();
        r.set_override("fhir.test", vec!["127.0.0.1".parse().unwrap()]);
        assert_eq!(now(r.resolve("FHIR.test.", 8443)).unwrap(), [sa("127.0.0.1:8443")]);
        // The "DNS answer" moves abroad while the resolver is shared.
        r.set_override("fhir.test", vec!["127.0.0.2".parse().unwrap(); 2]);
        assert_eq!(now(r.resolve("fhir.test", 8443)).unwrap(), [sa("127.0.0.2:8443")]);
        assert!(r.clear_override("fhir.test"));
        assert!(!r.clear_override("fhir.test"));
    }

    #[test]
    fn empty_override_is_unresolvable() {
        let r = Resolver::new();
        r.set_override("gone.test", Vec::new());
        let err = now(r.resolve("gone.test", 80)).unwrap_err();
        assert!(matches!(err, ResolveError::NoAddresses { ref host } if host == "gone.test"));
        assert!(err.to_string().contains("gone.test"), "{err}");
    }
}
