//! `phr-gateway residency import-apnic` and `phr-gateway residency report`: the
//! allow-list from public data, and the evidence of where every target is (DATA-JP-1,
//! DATA-LOC-1).

use super::allow_list::AllowList;
use super::apnic::{parse_apnic, write_allow_list, SourceNote};
use super::jurisdiction::TargetKind;
use super::policy::Policy;
use super::report::{build_report, TargetResolution};
use crate::config::Config;
use crate::residency::egress::{EgressPolicy, UpstreamResolver};
use std::net::SocketAddr;
use std::path::Path;

/// Converts APNIC delegated statistics into an allow-list file; returns a summary line.
pub fn import_apnic(input: &Path, out: &Path, country: &str) -> Result<String, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let import =
        parse_apnic(std::io::BufReader::new(file), country).map_err(|e| format!("{}: {e}", input.display()))?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let note = SourceNote::from_header(&name, &import.header, country);
    let mut text = Vec::new();
    write_allow_list(&import.nets, &mut text, &note).map_err(|e| e.to_string())?;
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(format!(
        "{}: {} {country} ranges from {} records written to {}",
        input.display(),
        import.nets.len(),
        import.records_taken,
        out.display()
    ))
}

/// Resolves every target of a config and checks each address; returns the report text
/// (or JSON) and whether everything is in order.
pub async fn report(config_path: &Path, json: bool) -> Result<(String, bool), String> {
    let config = crate::config::load(config_path).map_err(|e| e.to_string())?;
    let r = &config.residency;
    let policy = policy_of(&config)?;
    let resolver = UpstreamResolver::new(r.hosts_file.as_deref());
    let mut inputs = Vec::new();
    for target in super::targets::from_config(&config) {
        let addresses = resolve_target(&config, &resolver, &target)
            .await
            .map(|found| found.iter().map(SocketAddr::ip).collect());
        inputs.push(TargetResolution { target, addresses });
    }
    let report = build_report(&policy, &r.required, &inputs);
    let text = if json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    } else {
        report.render_text()
    };
    Ok((text, report.ok))
}

/// Every address `target`'s hosts resolve to now.
async fn resolve_target(
    config: &Config,
    resolver: &UpstreamResolver,
    target: &super::jurisdiction::Target,
) -> Result<Vec<SocketAddr>, String> {
    let mut all = Vec::new();
    for (host, port) in super::targets::hosts_of(config, target)? {
        let found = resolver
            .resolve(&host, port)
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        all.extend(found);
    }
    Ok(all)
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
pub async fn check_storage_targets(config: &Config) -> Result<CheckedStorage, String> {
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
                return Err(format!(
                    "{}: cannot resolve ({e}), so its address cannot be checked",
                    target.label()
                ))
            }
        };
        for ip in &addresses {
            policy
                .check_target_address(&target, ip.ip())
                .map_err(|e| e.to_string())?;
        }
        if target.kind == TargetKind::Redis {
            checked.redis = addresses.into_iter().min();
            // A name that resolved to nothing leaves nothing checked to dial: the client
            // must not fall back to resolving it itself. (A Unix socket has no name.)
            if checked.redis.is_none() && !super::targets::hosts_of(config, &target)?.is_empty() {
                return Err(format!(
                    "{}: its name resolved to no address, so there is nothing checked to dial",
                    target.label()
                ));
            }
        }
    }
    Ok(checked)
}

/// The per-connection check for a PostgreSQL store: the address each new connection
/// reached must pass the same policy. `None` when the store is not PostgreSQL.
pub fn store_address_check(config: &Config) -> Result<Option<crate::store::ServerAddressCheck>, String> {
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
        egress.check(std::net::SocketAddr::new(ip, port))
    }))))
}

/// The residency policy of `config`: its allow-list plus the in-cluster ranges.
fn policy_of(config: &Config) -> Result<Policy, String> {
    let r = &config.residency;
    let allow = AllowList::load(&r.allowed_networks, &r.allowed_networks_files).map_err(|e| e.to_string())?;
    Ok(Policy::new(allow))
}
