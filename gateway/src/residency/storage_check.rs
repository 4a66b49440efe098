//! The residency check of the services the gateway keeps data in (a PostgreSQL store,
//! Redis), run at start-up and on every reload, and the per-connection check of the
//! store (DATA-JP-1).

use super::allow_list::{AllowList, AllowListError};
use super::error::ResidencyError;
use super::jurisdiction::TargetKind;
use super::policy::ResidencyPolicy;
use super::targets::HostsError;
use crate::config::Config;
use crate::residency::egress::{EgressPolicy, UpstreamResolver};
use std::net::SocketAddr;

/// Why the store or Redis failed the residency check, or the check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StorageCheckError {
    /// The allow-list could not be loaded.
    #[error(transparent)]
    AllowList(#[from] AllowListError),
    /// The host of a target could not be read from its URL.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// A host name could not be resolved.
    #[error("{host}:{port}: {detail}")]
    Resolve {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// The resolver's answer.
        detail: String,
    },
    /// Redis's address cannot be checked, so it is not dialled.
    #[error("{target}: cannot resolve ({source}), so its address cannot be checked")]
    Unresolvable {
        /// The target's label.
        target: String,
        /// Why resolution failed.
        source: Box<StorageCheckError>,
    },
    /// An address is outside the residency policy.
    #[error(transparent)]
    Refused(#[from] ResidencyError),
    /// Redis's name resolved to nothing, so there is nothing checked to dial.
    #[error("{target}: its name resolved to no address, so there is nothing checked to dial")]
    NoAddress {
        /// The target's label.
        target: String,
    },
}

/// What [`check_storage_targets`] established: where Redis may be dialled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedStorage {
    /// The address Redis is pinned to: the lowest of those its name resolved to, all of
    /// which passed the policy. `None` without a `[redis]` section (or for a Unix
    /// socket, which never leaves the host).
    pub redis: Option<SocketAddr>,
}

/// Check of the services the gateway keeps data in (a PostgreSQL store, Redis), at
/// start-up and on every reload: every address their names resolve to must pass the
/// residency policy, or the gateway does not start / the reload is refused (DATA-JP-1).
/// Upstreams and JWKS servers need no such pass: their connector checks every new
/// connection's address. The store's connections are checked one by one
/// ([`store_address_check`]); Redis's client resolves names itself, so it is given the
/// checked address instead of the name ([`CheckedStorage::redis`]) and every
/// reconnection dials exactly what was checked.
pub async fn check_storage_targets(config: &Config) -> Result<CheckedStorage, StorageCheckError> {
    let r = &config.residency;
    let policy = policy_of(config)?;
    let resolver = UpstreamResolver::new(r.hosts_file.as_deref());
    let mut checked = CheckedStorage::default();
    for target in super::targets::from_config(config) {
        if !matches!(target.kind, TargetKind::Database | TargetKind::Redis) {
            continue;
        }
        let addresses = match resolve_target(config, &resolver, &target).await {
            Ok(a) => a,
            // The database may come up later (the writer spools meanwhile), and each of
            // its connections is checked when it is made.
            Err(e) if target.kind == TargetKind::Database => {
                tracing::warn!(target_name = %target.name, error = %e, "store address not resolvable at start-up; each connection will be checked when made");
                continue;
            }
            // Redis is dialled only at a checked address: no start without an answer.
            Err(e) => {
                return Err(StorageCheckError::Unresolvable {
                    target: target.label(),
                    source: Box::new(e),
                })
            }
        };
        for ip in &addresses {
            policy.check_target_address(&target, ip.ip())?;
        }
        if target.kind == TargetKind::Redis {
            checked.redis = addresses.into_iter().min();
            // A name that resolved to nothing leaves nothing checked to dial: the client
            // must not fall back to resolving it itself. (A Unix socket has no name.)
            if checked.redis.is_none() && !super::targets::hosts_of(config, &target)?.is_empty() {
                return Err(StorageCheckError::NoAddress { target: target.label() });
            }
        }
    }
    Ok(checked)
}

/// The per-connection check for a PostgreSQL store: the address each new connection
/// reached must pass the same policy. `None` when the store is not PostgreSQL.
pub fn store_address_check(config: &Config) -> Result<Option<crate::store::ServerAddressCheck>, StorageCheckError> {
    let Some(target) = super::targets::from_config(config)
        .into_iter()
        .find(|t| t.kind == TargetKind::Database)
    else {
        return Ok(None);
    };
    // The port only labels the refusal in the log: the server reports its address alone.
    let port = super::targets::hosts_of(config, &target)
        .ok()
        .and_then(|h| h.first().map(|(_, port)| *port))
        .unwrap_or(5432);
    // The same check, counter and log line as an upstream connection's.
    let egress = EgressPolicy {
        policy: std::sync::Arc::new(policy_of(config)?),
        target,
    };
    Ok(Some(crate::store::ServerAddressCheck(std::sync::Arc::new(move |ip| {
        egress
            .check(std::net::SocketAddr::new(ip, port))
            .map_err(|e| e.to_string())
    }))))
}

/// Every address `target`'s hosts resolve to now.
pub(super) async fn resolve_target(
    config: &Config,
    resolver: &UpstreamResolver,
    target: &super::jurisdiction::Target,
) -> Result<Vec<SocketAddr>, StorageCheckError> {
    let mut all = Vec::new();
    for (host, port) in super::targets::hosts_of(config, target)? {
        let found = resolver
            .resolve(&host, port)
            .await
            .map_err(|e| StorageCheckError::Resolve {
                host: host.clone(),
                port,
                detail: e.to_string(),
            })?;
        all.extend(found);
    }
    Ok(all)
}

/// The residency policy of `config`: its allow-list plus the in-cluster ranges.
pub(super) fn policy_of(config: &Config) -> Result<ResidencyPolicy, StorageCheckError> {
    let r = &config.residency;
    let allow = AllowList::load(&r.allowed_networks, &r.allowed_networks_files)?;
    Ok(ResidencyPolicy::new(allow))
}
