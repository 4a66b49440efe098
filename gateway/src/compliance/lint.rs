//! `phr-gateway check-config --security`: a lint of a configuration against the
//! guideline. `check-config` alone says whether the gateway *can* start; this says what
//! a guideline auditor would object to in a configuration that starts. Each finding
//! names its requirement ID, the key and the fix. Offline: only the configuration (and
//! the modes of the key files it names) is read.

use super::profile::Profile;
use crate::config::auth::AuthMode;
use crate::config::{AuditMode, ClientAuth, Config, RouteClientCert, TlsVersion};
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// One objection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Requirement ID (shared/guidelines/requirements.md).
    pub requirement: &'static str,
    /// The configuration key, e.g. `routes[0].auth.two_factor`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}. Fix: {}",
            self.requirement, self.key, self.message, self.fix
        )
    }
}

/// The longest checkpoint spacing the lint accepts (LOG-PROT-1): beyond it a `kill -9`
/// leaves a tail that could be cut without trace.
pub const MAX_CHECKPOINT_EVERY: u64 = 1000;
/// See [`MAX_CHECKPOINT_EVERY`].
pub const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Every finding for `config`; `profile` says whether institutions use client certificates.
pub fn lint(config: &Config, profile: Option<&Profile>) -> Vec<Finding> {
    let mut out = Vec::new();
    tls(config, &mut out);
    routes(config, profile, &mut out);
    issuers(config, &mut out);
    audit(config, &mut out);
    residency(config, &mut out);
    key_files(config, &mut out);
    out
}

fn finding(out: &mut Vec<Finding>, requirement: &'static str, key: String, message: String, fix: &str) {
    out.push(Finding {
        requirement,
        key,
        message,
        fix: fix.to_string(),
    });
}

fn tls(config: &Config, out: &mut Vec<Finding>) {
    for (i, l) in config.listeners.iter().enumerate() {
        if l.tls_min_version == TlsVersion::Tls12 && l.tls12_reason.is_none() {
            finding(
                out,
                "EX-TLS-1",
                format!("listeners[{i}].tls_min_version"),
                format!("listener {} allows TLS 1.2 without a stated reason", l.name),
                "set tls_min_version = \"1.3\", or state why a peer needs 1.2 in tls12_reason",
            );
        }
    }
    for (name, u) in &config.upstreams {
        if u.tls_min_version == TlsVersion::Tls12 && u.tls12_reason.is_none() {
            finding(
                out,
                "EX-TLS-1",
                format!("upstreams.{name}.tls_min_version"),
                format!("upstream {name} allows TLS 1.2 without a stated reason"),
                "set tls_min_version = \"1.3\", or state why the backend needs 1.2 in tls12_reason",
            );
        }
    }
    if config.gateway.hsts_max_age.is_zero() {
        finding(
            out,
            "EX-TLS-3",
            "gateway.hsts_max_age".to_string(),
            "Strict-Transport-Security is disabled".to_string(),
            "set hsts_max_age = \"365days\"",
        );
    }
    if !config.admin.bind.ip().is_loopback() {
        finding(
            out,
            "EX-SEG-2",
            "admin.bind".to_string(),
            format!("the plain-HTTP admin listener is bound to {}", config.admin.bind),
            "bind it to 127.0.0.1, or to an address only a management network reaches",
        );
    }
}

fn routes(config: &Config, profile: Option<&Profile>, out: &mut Vec<Finding>) {
    let certs_expected = profile.is_some_and(|p| p.network.institutions_use_client_certificates);
    for (i, r) in config.routes.iter().enumerate().filter(|(_, r)| r.phi) {
        if r.auth.mode == AuthMode::Required && !r.auth.two_factor && r.auth.acr_values.is_empty() {
            finding(
                out,
                "AUTH-2FA-1",
                format!("routes[{i}].auth.two_factor"),
                format!("PHI route {} accepts single-factor logins", r.name),
                "set two_factor = true (or list acr_values that mean two factors)",
            );
        }
        if r.auth.mode == AuthMode::Optional {
            finding(
                out,
                "AUTH-ID-1",
                format!("routes[{i}].auth.mode"),
                format!("PHI route {} lets requests without a token through", r.name),
                "set mode = \"required\"",
            );
        }
        if r.rate_limits.is_empty() {
            finding(
                out,
                "AV-DOS-1",
                format!("routes[{i}].rate_limits"),
                format!("PHI route {} has no rate-limit policy", r.name),
                "list policies of [rate_limits.policies], e.g. rate_limits = [\"per_ip\", \"per_subject\"]",
            );
        }
        if certs_expected && r.client_cert != RouteClientCert::Required {
            let open: Vec<&str> = config
                .listeners
                .iter()
                .filter(|l| r.listeners.is_empty() || r.listeners.contains(&l.name))
                .filter(|l| l.client_auth != ClientAuth::Required)
                .map(|l| l.name.as_str())
                .collect();
            if !open.is_empty() {
                finding(
                    out,
                    "EX-TLS-2",
                    format!("routes[{i}].listeners"),
                    format!(
                        "PHI route {} is reachable without a client certificate from listener(s) {}, but the profile says institutions connect with them",
                        r.name,
                        open.join(", ")
                    ),
                    "bind the route with listeners = [...] to listeners with client_auth = \"required\", or set client_cert = \"required\"",
                );
            }
        }
    }
}

fn issuers(config: &Config, out: &mut Vec<Finding>) {
    for (i, is) in config.auth.issuers.iter().enumerate() {
        let bad: Vec<&str> = is
            .algorithms
            .iter()
            .filter(|a| a.starts_with("HS") || a.eq_ignore_ascii_case("none"))
            .map(String::as_str)
            .collect();
        if !bad.is_empty() || is.shared_secret.is_some() {
            let what = match bad.is_empty() {
                true => "a shared secret".to_string(),
                false => bad.join(", "),
            };
            finding(
                out,
                "AUTH-ID-1",
                format!("auth.issuers[{i}].algorithms"),
                format!(
                    "issuer {} accepts {what}: anyone who holds the secret can mint tokens",
                    is.issuer
                ),
                "use an asymmetric algorithm (ES256, PS256, RS256, EdDSA) with jwks_url or jwks_file, and remove shared_secret",
            );
        }
    }
}

fn audit(config: &Config, out: &mut Vec<Finding>) {
    let a = &config.audit;
    if !a.enabled {
        finding(
            out,
            "LOG-ACC-1",
            "audit.enabled".to_string(),
            "access records are disabled".to_string(),
            "set enabled = true (off only for benchmarks of the proxy alone)",
        );
        return;
    }
    if a.mode == AuditMode::Relaxed {
        finding(
            out,
            "DATA-INT-1",
            "audit.mode".to_string(),
            "relaxed mode releases responses before their record is stored; a crash loses records".to_string(),
            "set mode = \"durable\" (relaxed is for load tests only)",
        );
    }
    if a.checkpoint_every > MAX_CHECKPOINT_EVERY {
        finding(
            out,
            "LOG-PROT-1",
            "audit.checkpoint_every".to_string(),
            format!(
                "{} records may follow the last signed checkpoint (unvouched, deletable without trace)",
                a.checkpoint_every
            ),
            "set checkpoint_every = 100 (at most 1000)",
        );
    }
    if a.checkpoint_interval > MAX_CHECKPOINT_INTERVAL {
        finding(
            out,
            "LOG-PROT-1",
            "audit.checkpoint_interval".to_string(),
            format!(
                "{} of records may follow the last signed checkpoint",
                humantime::format_duration(a.checkpoint_interval)
            ),
            "set checkpoint_interval = \"1s\" (at most 60s)",
        );
    }
}

/// An allow-list entry so wide it is not a residency restriction (DATA-JP-1).
fn too_wide(net: &str) -> bool {
    match net.trim().parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(n)) => n.prefix_len() < 8,
        Ok(ipnet::IpNet::V6(n)) => n.prefix_len() < 16,
        Err(_) => false,
    }
}

fn residency(config: &Config, out: &mut Vec<Finding>) {
    for (i, net) in config.residency.allowed_networks.iter().enumerate() {
        if too_wide(net) {
            finding(
                out,
                "DATA-JP-1",
                format!("residency.allowed_networks[{i}]"),
                format!("{net} admits addresses outside Japan: a residency exception"),
                "list only domestic networks (phr-gateway residency import-apnic), one provider range at a time",
            );
        }
    }
}

fn key_files(config: &Config, out: &mut Vec<Finding>) {
    let mut files: Vec<(String, &Path)> = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        for (j, c) in l.certificates.iter().enumerate() {
            files.push((format!("listeners[{i}].certificates[{j}].key_file"), &c.key_file));
        }
    }
    for (name, u) in &config.upstreams {
        if let Some(k) = &u.client_key_file {
            files.push((format!("upstreams.{name}.client_key_file"), k));
        }
    }
    if config.audit.enabled {
        if config.audit.kek_env.is_none() {
            files.push(("audit.kek_file".to_string(), &config.audit.kek_file));
        }
        files.push(("audit.signing_key_file".to_string(), &config.audit.signing_key_file));
    }
    for (key, file) in files {
        if let Some(mode) = loose_mode(file) {
            finding(
                out,
                "DATA-ENC-2",
                key,
                format!("{} is readable by others (mode {mode:o})", file.display()),
                &format!("chmod 600 {}", file.display()),
            );
        }
    }
}

/// The file's mode when group or others may read it; `None` when it is private or absent
/// (a missing file is `check-config`'s matter).
#[cfg(unix)]
fn loose_mode(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_file: &Path) -> Option<u32> {
    None
}
