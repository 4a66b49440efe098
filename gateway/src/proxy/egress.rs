//! The two hooks the connector calls for every new upstream connection: name resolution
//! and the egress check. The residency module implements the check (DATA-JP-1); the
//! resolver supports a static host map so operators (and tests) can pin names.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

/// Decides whether the gateway may open a connection to `addr` for `upstream`.
/// Returning an error refuses the connection; there is no "allow on error".
pub trait EgressCheck: Send + Sync {
    fn check(&self, upstream: &str, host: &str, addr: SocketAddr) -> Result<(), String>;
}

/// Allows every connection: used until the residency policy (DATA-JP-1) is configured.
pub struct AllowAll;

impl EgressCheck for AllowAll {
    fn check(&self, _: &str, _: &str, _: SocketAddr) -> Result<(), String> {
        Ok(())
    }
}

/// Resolves upstream host names: a static map first (hosts-file style), then DNS.
#[derive(Default)]
pub struct Resolver {
    overrides: RwLock<HashMap<String, Vec<IpAddr>>>,
}

impl Resolver {
    pub fn with_overrides(map: HashMap<String, Vec<IpAddr>>) -> Self {
        Self {
            overrides: RwLock::new(map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()),
        }
    }

    /// Replaces one name's answer: lets a test change "DNS" while the gateway runs.
    pub fn set_override(&self, host: &str, addrs: Vec<IpAddr>) {
        self.overrides
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), addrs);
    }

    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let pinned = self
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host.to_ascii_lowercase())
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect::<Vec<_>>());
        if let Some(addrs) = pinned {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| e.to_string())?
            .collect();
        if addrs.is_empty() {
            return Err("no address".into());
        }
        Ok(addrs)
    }
}
