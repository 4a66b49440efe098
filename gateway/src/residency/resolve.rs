//! Name resolution for the residency check (supports DATA-JP-1 / DATA-JP-2 /
//! DATA-JP-3 and ONL-3 enforcement).
//!
//! The address check is only meaningful if it sees the addresses the socket
//! will really connect to. The connector should therefore resolve once with
//! this [`Resolver`], check every address with [`super::policy::ResidencyPolicy`], and connect
//! only to addresses that passed, never handing the hostname to a library
//! that resolves again (DNS rebinding would slip past the check).
//!
//! Pinning a name to addresses (what tests use to move `fhir.test` from
//! 127.0.0.1, "in Japan", to 127.0.0.2, "abroad", while the gateway runs) is the
//! hosts file's job ([`super::hosts`]), consulted before this resolver.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Resolves `host:port` through the system resolver, IP literals without it.
#[derive(Debug, Default)]
pub struct Resolver {}

impl Resolver {
    /// A resolver with no overrides: plain system DNS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves `host` (a name, an IP literal, or a bracketed IPv6 literal)
    /// to socket addresses, without duplicates, in the resolver's order.
    ///
    /// Order: IP literal, then `tokio::net::lookup_host`.
    /// Literals bypass DNS but not the policy: the caller checks them too.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let key = normalize(host);
        if let Ok(ip) = key.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((key.as_str(), port))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: key.clone(),
                source,
            })?
            .collect();
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

    /// Polls once: literal answers never await, so no runtime
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
}
