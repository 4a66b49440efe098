//! What the connector asks before every new upstream connection: where does this name
//! point (hosts file, then DNS), and may the gateway connect there (the residency
//! policy, DATA-JP-1). Both are built from the config, so a reload swaps them with the
//! upstream pools they serve.

use super::hosts::HostsFile;
use super::jurisdiction::Target;
use super::policy::Policy;
use super::resolve::Resolver;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Name resolution for upstream connections.
pub struct UpstreamResolver {
    hosts: Option<HostsFile>,
    dns: Resolver,
}

impl UpstreamResolver {
    pub fn new(hosts_file: Option<&Path>) -> Self {
        Self {
            hosts: hosts_file.map(HostsFile::new),
            dns: Resolver::new(),
        }
    }

    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Some(ips) = self.hosts.as_ref().and_then(|h| h.lookup(host)) {
            return Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
        }
        self.dns.resolve(host, port).await.map_err(|e| e.to_string())
    }
}

/// The residency check for one upstream's connections.
pub struct EgressPolicy {
    pub policy: Arc<Policy>,
    pub target: Target,
}

impl EgressPolicy {
    /// Refuses `addr` unless the policy allows this target to reach it. Every refusal is
    /// logged and counted here, so no caller can forget to.
    pub fn check(&self, addr: SocketAddr) -> Result<(), String> {
        self.policy.check_target_address(&self.target, addr.ip()).map_err(|e| {
            metrics::counter!("phr_egress_refused_total", "target" => self.target.name.clone()).increment(1);
            tracing::warn!(target_name = %self.target.name, %addr, error = %e, "outbound connection refused by the residency policy");
            e.to_string()
        })
    }
}
