//! What the connector asks before every new upstream connection: where does this name
//! point (hosts file, then DNS), and may the gateway connect there (the residency
//! policy, DATA-JP-1). Both are built from the config, so a reload swaps them with the
//! upstream pools they serve.

use super::error::ResidencyError;
use super::hosts::HostsFile;
use super::jurisdiction::Target;
use super::policy::ResidencyPolicy;
use super::resolve::{ResolveError, Resolver};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Name resolution for upstream connections: the operator's hosts file first (names
/// pinned to addresses), then DNS. Either answer is then checked by [`EgressPolicy`].
pub struct UpstreamResolver {
    hosts: Option<HostsFile>,
    dns: Resolver,
}

impl UpstreamResolver {
    /// A resolver that consults `hosts_file` first, if one is configured.
    pub fn new(hosts_file: Option<&Path>) -> Self {
        Self {
            hosts: hosts_file.map(HostsFile::new),
            dns: Resolver::new(),
        }
    }

    /// Every address `host` stands for now, with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ips) = self.hosts.as_ref().and_then(|h| h.lookup(host)) {
            return Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
        }
        self.dns.resolve(host, port).await
    }
}

/// The residency check for one upstream's connections.
pub struct EgressPolicy {
    /// The allow-list and in-cluster ranges (swapped with the runtime on reload).
    pub policy: Arc<ResidencyPolicy>,
    /// What is being connected to, with its declared jurisdiction.
    pub target: Target,
}

impl EgressPolicy {
    /// Refuses `addr` unless the policy allows this target to reach it. Every refusal is
    /// logged and counted here, so no caller can forget to.
    pub fn check(&self, addr: SocketAddr) -> Result<(), ResidencyError> {
        self.policy.check_target_address(&self.target, addr.ip()).map_err(|e| {
            metrics::counter!("phr_egress_refused_total", "target" => self.target.name.clone()).increment(1);
            tracing::warn!(target_name = %self.target.name, %addr, error = %e, "outbound connection refused by the residency policy");
            e
        })
    }
}
