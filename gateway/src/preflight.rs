//! Pre-flight checks of what a configuration names on disk and at fixed addresses:
//! listener and upstream certificates and keys (EX-TLS-1, EX-TLS-4, EX-MTLS-1), JWKS
//! files (AUTH-ID-1), upstream and JWKS addresses written as IP literals or `localhost`
//! against the residency policy (DATA-JP-1, DATA-JP-3), and the access-record keys
//! (LOG-PROT-1, DATA-ENC-1). Start-up ([`crate::startup::check`]) and reload both run
//! them, so a reload cannot accept what start-up refuses. Nothing here dials or writes.

use crate::config::{Config, ConfigIssue};
use crate::residency::policy::{AddressVerdict, Refusal, ResidencyPolicy};
use crate::tls::TlsError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The checks of a loaded config that a reload makes too: TLS files, JWKS files and
/// fixed addresses (the access-record keys cannot change on reload).
pub fn file_and_address_issues(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    listener_tls(config, &mut issues);
    upstream_tls(config, &mut issues);
    jwks_files(config, &mut issues);
    fixed_addresses(config, &mut issues);
    issues
}

pub(crate) fn issue(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        key: key.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Every listener's certificates, keys, client CA bundle and CRLs, each problem under
/// the key that names the file.
fn listener_tls(config: &Config, issues: &mut Vec<ConfigIssue>) {
    for (i, l) in config.listeners.iter().enumerate() {
        let Err(e) = crate::tls::server::build(l) else { continue };
        let mut files: Vec<(String, &Path)> = Vec::new();
        for (j, c) in l.certificates.iter().enumerate() {
            files.push((format!("listeners[{i}].certificates[{j}].cert_file"), &c.cert_file));
            files.push((format!("listeners[{i}].certificates[{j}].key_file"), &c.key_file));
        }
        if let Some(ca) = &l.client_ca_file {
            files.push((format!("listeners[{i}].client_ca_file"), ca));
        }
        for (j, crl) in l.crl_files.iter().enumerate() {
            files.push((format!("listeners[{i}].crl_files[{j}]"), crl));
        }
        issues.push(tls_issue(&format!("listeners[{i}]"), &files, &e));
    }
}

/// Every upstream's CA bundle and client certificate.
fn upstream_tls(config: &Config, issues: &mut Vec<ConfigIssue>) {
    for (name, u) in &config.upstreams {
        let Err(e) = crate::tls::upstream::build(u) else {
            continue;
        };
        let key = format!("upstreams.{name}");
        let files: Vec<(String, &Path)> = [
            ("ca_file", &u.ca_file),
            ("client_cert_file", &u.client_cert_file),
            ("client_key_file", &u.client_key_file),
        ]
        .into_iter()
        .filter_map(|(k, f)| Some((format!("{key}.{k}"), f.as_deref()?)))
        .collect();
        issues.push(tls_issue(&key, &files, &e));
    }
}

/// `e` under the key of the file it is about (`section` when it names none).
fn tls_issue(section: &str, files: &[(String, &Path)], e: &TlsError) -> ConfigIssue {
    let (file, wanted) = match e {
        TlsError::Certificate { file, .. } => (Some(file), "cert"),
        TlsError::KeyMismatch { cert, .. } => (Some(cert), "cert"),
        TlsError::Key { file, .. } => (Some(file), "key"),
        TlsError::ClientCa { file, .. } | TlsError::Crl { file, .. } | TlsError::UpstreamCa { file, .. } => {
            (Some(file), "")
        }
        TlsError::Rustls(_) => (None, ""),
    };
    // One file can be named under two keys (a key given as its own certificate): the
    // key of the kind the error is about comes first.
    let key = file
        .and_then(|f| {
            let matching = || files.iter().filter(move |(_, p)| *p == f.as_path());
            matching()
                .find(|(k, _)| k.rsplit('.').next().is_some_and(|last| last.contains(wanted)))
                .or_else(|| matching().next())
        })
        .map_or(section.to_string(), |(k, _)| k.clone());
    let mut problem = e.to_string();
    let mut fix = String::from("see the comment on this key in config/gateway.toml");
    // The message of the TLS error carries its own fix: split it off.
    if let Some((p, f)) = problem.clone().split_once(". Fix: ") {
        problem = p.to_string();
        fix = f.to_string();
    }
    if let (TlsError::Certificate { file, .. }, "cert") = (e, wanted) {
        if holds_private_key(file) {
            problem = format!("{}: the file holds a private key, not a certificate", file.display());
            fix = "set cert_file to the certificate chain (PEM, -----BEGIN CERTIFICATE-----, leaf first) and key_file to the private key"
                .into();
        }
    }
    issue(key, problem, fix)
}

fn holds_private_key(file: &Path) -> bool {
    std::fs::read(file).is_ok_and(|b| b.windows(12).any(|w| w == b"PRIVATE KEY-"))
}

/// Every `jwks_file` is read and must hold at least one usable public key: `run`
/// refuses to start without keys for every issuer.
fn jwks_files(config: &Config, issues: &mut Vec<ConfigIssue>) {
    for (i, issuer) in config.auth.issuers.iter().enumerate() {
        let Some(file) = &issuer.jwks_file else { continue };
        let problem = match std::fs::read(file) {
            Err(e) => format!("cannot read the JWKS file {}: {e}", file.display()),
            Ok(body) => match crate::auth::jwks::parse_jwks(&body) {
                Err(e) => format!("the JWKS file {}: {e}", file.display()),
                Ok((keys, skipped)) if keys.is_empty() => format!(
                    "the JWKS file {} has no usable signing key{}",
                    file.display(),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", skipped.join("; "))
                    }
                ),
                Ok(_) => continue,
            },
        };
        issues.push(issue(
            format!("auth.issuers[{i}].jwks_file"),
            format!("issuer {}: {problem}", issuer.issuer),
            "point jwks_file at the issuer's JWKS document (JSON with a \"keys\" array of public keys; relative paths are relative to the config file)",
        ));
    }
}

/// Upstream endpoints and JWKS URLs written as an IP literal or `localhost` always
/// connect to that address, so the residency policy's answer is known now; one that can
/// only be refused would answer every request 502 `egress_refused`. (Names are resolved
/// and checked on every new connection instead: their answer may change.)
fn fixed_addresses(config: &Config, issues: &mut Vec<ConfigIssue>) {
    let r = &config.residency;
    // An allow-list that does not load is reported by the config validation.
    let Ok(allow) = crate::residency::allow_list::AllowList::load(&r.allowed_networks, &r.allowed_networks_files)
    else {
        return;
    };
    let policy = ResidencyPolicy::new(allow);
    for (name, u) in &config.upstreams {
        for (i, e) in u.endpoints.iter().enumerate() {
            let Ok(ep) = crate::proxy::Endpoint::parse(e) else {
                continue;
            };
            if let Some(problem) = refused(&policy, &ep.host, u.in_cluster) {
                issues.push(egress_issue(
                    format!("upstreams.{name}.endpoints[{i}]"),
                    &format!("[upstreams.{name}]"),
                    e,
                    problem,
                ));
            }
        }
    }
    for (i, issuer) in config.auth.issuers.iter().enumerate() {
        let Some(url) = issuer.fetch_url() else { continue };
        let Some(host) = url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_string)) else {
            continue;
        };
        if let Some(problem) = refused(&policy, &host, issuer.in_cluster) {
            let key = match (&issuer.discovery_url, issuer.discovery) {
                (Some(_), _) => "discovery_url",
                (None, true) => "discovery",
                (None, false) => "jwks_url",
            };
            issues.push(egress_issue(
                format!("auth.issuers[{i}].{key}"),
                &format!("[[auth.issuers]] {}", issuer.issuer),
                &url,
                problem,
            ));
        }
    }
}

/// The refusal for a host that is a fixed address; `None` for a name or an allowed address.
fn refused(policy: &ResidencyPolicy, host: &str, in_cluster: bool) -> Option<(IpAddr, Refusal)> {
    let host = host.trim_matches(['[', ']']);
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse::<IpAddr>().ok()?
    };
    match policy.classify(ip, in_cluster) {
        AddressVerdict::Refused(why) => Some((ip, why)),
        AddressVerdict::AllowList | AddressVerdict::InCluster => None,
    }
}

fn egress_issue(key: String, section: &str, target: &str, (ip, why): (IpAddr, Refusal)) -> ConfigIssue {
    let (problem, fix) = match why {
        Refusal::PrivateNotInCluster => (
            format!("{ip} is a private, loopback or link-local address, allowed only for a target declared in_cluster = true"),
            format!("set in_cluster = true in {section} if this service runs inside your own cluster in Japan, or add the address to residency.allowed_networks"),
        ),
        Refusal::NotInAllowList => (
            format!("{ip} is not in the domestic allow-list (residency.allowed_networks)"),
            "add the server's network to the allow-list once you have confirmed it is in Japan, or use another server".to_string(),
        ),
        Refusal::Unroutable => (
            format!("{ip} is unspecified, multicast or broadcast and can never be a server"),
            "write the server's own address or name".to_string(),
        ),
    };
    issue(
        key,
        format!("{target}: {problem}, so the residency policy refuses every connection and every request would be answered 502 egress_refused"),
        fix,
    )
}

/// The access-record keys: those that exist must load (a KEK from the environment or
/// its file, the checkpoint signing key); those `run` will create need their directory.
pub(crate) fn audit_keys(config: &Config, issues: &mut Vec<ConfigIssue>) {
    use crate::audit::chain::CheckpointSigner;
    use crate::audit::crypto::LocalKek;
    let a = &config.audit;
    if !a.enabled {
        return;
    }
    match &a.kek_env {
        Some(var) => {
            if let Err(e) = LocalKek::from_env(var) {
                issues.push(issue(
                    "audit.kek_env",
                    e.to_string(),
                    format!("export {var} with the base64 key-encryption key (32 bytes) before starting the gateway"),
                ));
            }
        }
        None if a.kek_file.exists() => {
            if let Err(e) = LocalKek::from_file(&a.kek_file) {
                issues.push(issue(
                    "audit.kek_file",
                    e.to_string(),
                    "point kek_file at the key-encryption key this store was written with (base64, 32 bytes, mode 0600), or remove the setting to have a new key created",
                ));
            }
        }
        None => will_create(issues, "audit.kek_file", &a.kek_file),
    }
    if a.signing_key_file.exists() {
        if let Err(e) = CheckpointSigner::load(&a.signing_key_file) {
            issues.push(issue(
                "audit.signing_key_file",
                e.to_string(),
                "point signing_key_file at the Ed25519 checkpoint key (PKCS#8 PEM, mode 0600)",
            ));
        }
    } else {
        will_create(issues, "audit.signing_key_file", &a.signing_key_file);
    }
    will_create(issues, "audit.spool_file", &a.spool_file);
}

/// A file `run` creates when missing: its directory must exist.
fn will_create(issues: &mut Vec<ConfigIssue>, key: &str, file: &Path) {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(PathBuf::from("."), Path::to_path_buf);
    if !dir.is_dir() {
        issues.push(issue(
            key,
            format!(
                "{} cannot be created: the directory {} does not exist",
                file.display(),
                dir.display()
            ),
            "create the directory (on a volume that is backed up) or point the key at an existing one",
        ));
    }
}
