//! Checks that need no network: every problem is collected, each with its key and the fix.
//! Certificate contents are checked when the TLS configs are built (`tls::cert_check`),
//! which `check-config` also does.

use super::auth::AuthMode;
use super::{ClientAuth, Config, ConfigIssue};
use std::collections::BTreeSet;
use std::path::Path;

struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn add(&mut self, key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigIssue::new(key, problem, fix));
    }

    fn file(&mut self, key: String, path: &Path) {
        if !path.is_file() {
            self.add(
                key,
                format!("file {} does not exist or is not a file", path.display()),
                "point it at an existing PEM file (relative paths are relative to the config file)",
            );
        }
    }
}

/// Returns every problem found; an empty list means the file may be used.
pub fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Issues(Vec::new());
    check_listeners(config, &mut issues);
    check_upstreams(config, &mut issues);
    check_routes(config, &mut issues);
    check_limits(config, &mut issues);
    check_residency(config, &mut issues);
    check_auth(config, &mut issues);
    check_protection(config, &mut issues);
    issues.0.extend(super::health::config_issues(config));
    issues.0
}

fn check_listeners(config: &Config, issues: &mut Issues) {
    if config.listeners.is_empty() {
        issues.add(
            "listeners",
            "no listener is configured",
            "add a [[listeners]] table with a bind address and a certificate",
        );
    }
    let mut names = BTreeSet::new();
    let mut binds = BTreeSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        if !names.insert(&l.name) {
            issues.add(
                format!("{key}.name"),
                format!("the name {:?} is used twice", l.name),
                "give every listener its own name",
            );
        }
        if !binds.insert(l.bind) {
            issues.add(
                format!("{key}.bind"),
                format!("{} is bound by two listeners", l.bind),
                "use one listener per address",
            );
        }
        if l.certificates.is_empty() {
            issues.add(
                format!("{key}.certificates"),
                "the listener has no certificate",
                "add a [[listeners.certificates]] table with cert_file and key_file",
            );
        }
        for (j, c) in l.certificates.iter().enumerate() {
            issues.file(format!("{key}.certificates[{j}].cert_file"), &c.cert_file);
            issues.file(format!("{key}.certificates[{j}].key_file"), &c.key_file);
        }
        match (l.client_auth, &l.client_ca_file) {
            (ClientAuth::None, Some(_)) => issues.add(
                format!("{key}.client_ca_file"),
                "a client CA is set but client_auth = \"none\", so it would never be used",
                "set client_auth = \"optional\" or \"required\", or remove client_ca_file",
            ),
            (ClientAuth::Optional | ClientAuth::Required, None) => issues.add(
                format!("{key}.client_auth"),
                "mutual TLS needs a CA bundle to verify client certificates against",
                "set client_ca_file to the institutions' CA bundle (PEM)",
            ),
            (_, Some(ca)) => issues.file(format!("{key}.client_ca_file"), ca),
            _ => {}
        }
        if l.client_auth == ClientAuth::None && !l.crl_files.is_empty() {
            issues.add(
                format!("{key}.crl_files"),
                "CRLs are set but client_auth = \"none\"",
                "enable client_auth or remove crl_files",
            );
        }
        for (j, crl) in l.crl_files.iter().enumerate() {
            issues.file(format!("{key}.crl_files[{j}]"), crl);
        }
    }
}

fn check_upstreams(config: &Config, issues: &mut Issues) {
    for (name, u) in &config.upstreams {
        let key = format!("upstreams.{name}");
        if u.endpoints.is_empty() {
            issues.add(
                format!("{key}.endpoints"),
                "no endpoint is listed",
                "list at least one \"https://host:port\"",
            );
        }
        for (i, e) in u.endpoints.iter().enumerate() {
            let ekey = format!("{key}.endpoints[{i}]");
            match super::endpoint::EndpointUrl::parse(e) {
                Err(why) => issues.add(
                    ekey,
                    format!("{e:?} is not a usable endpoint: {why}"),
                    "write it as \"https://host:port\"",
                ),
                Ok(ep) if !ep.tls => {
                    if !u.allow_plaintext {
                        issues.add(
                            ekey,
                            format!("{e:?} is plain HTTP"),
                            "use https:// with ca_file; plain HTTP is only for loopback backends with allow_plaintext = true",
                        );
                    } else if !ep.is_loopback() {
                        issues.add(
                            ekey,
                            format!("{e:?} is plain HTTP to a non-loopback host, so medical data would cross a network unencrypted"),
                            "use https:// with ca_file (allow_plaintext only applies to 127.0.0.0/8, ::1 and localhost)",
                        );
                    }
                }
                Ok(_) => {
                    if u.ca_file.is_none() {
                        issues.add(
                            format!("{key}.ca_file"),
                            format!("{e:?} uses TLS but no CA bundle is set to verify it"),
                            "set ca_file to the CA bundle that signed the backend's certificate",
                        );
                    }
                }
            }
        }
        if let Some(ca) = &u.ca_file {
            issues.file(format!("{key}.ca_file"), ca);
        }
        match (&u.client_cert_file, &u.client_key_file) {
            (Some(c), Some(k)) => {
                issues.file(format!("{key}.client_cert_file"), c);
                issues.file(format!("{key}.client_key_file"), k);
            }
            (None, None) => {}
            _ => issues.add(
                format!("{key}.client_cert_file"),
                "only one of client_cert_file and client_key_file is set",
                "set both (mutual TLS to the backend) or neither",
            ),
        }
        if u.connect_timeout.is_zero() || u.response_timeout.is_zero() {
            issues.add(
                key.clone(),
                "a timeout is zero",
                "use a positive duration such as \"2s\"",
            );
        }
    }
}

fn check_routes(config: &Config, issues: &mut Issues) {
    let mut names = BTreeSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !names.insert(&r.name) {
            issues.add(
                format!("{key}.name"),
                format!("the name {:?} is used twice", r.name),
                "give every route its own name",
            );
        }
        if !r.path_prefix.starts_with('/') {
            issues.add(
                format!("{key}.path_prefix"),
                format!("{:?} does not start with '/'", r.path_prefix),
                "write it as \"/fhir/\"",
            );
        }
        let earlier_twin = config.routes[..i]
            .iter()
            .any(|o| o.host == r.host && o.path_prefix == r.path_prefix && share_a_listener(config, o, r));
        if earlier_twin {
            issues.add(
                format!("{key}.path_prefix"),
                format!(
                    "another route already matches host {:?} and prefix {:?} on the same listener",
                    r.host, r.path_prefix
                ),
                "remove one of the two routes, or bind them to different listeners with `listeners = [...]`",
            );
        }
        check_route_listeners(config, r, &key, issues);
        check_route_smart(r, &key, issues);
        if let Some(base) = &r.public_base_url {
            if let Err(problem) = check_public_base_url(base) {
                issues.add(
                    format!("{key}.public_base_url"),
                    format!("{base:?} {problem}"),
                    "write the URL clients use, as \"https://phr.example.jp\" (scheme, host and optional port only)",
                );
            }
        }
        for (op, letters) in &r.fhir_operations {
            if !op.starts_with('$') || fhir_adapter::Perms::from_v2(letters).is_none() {
                issues.add(
                    format!("{key}.fhir_operations.{op}"),
                    format!("{op:?} = {letters:?} is not an operation name with SMART v2 letters"),
                    "write it as \"$lastn\" = \"rs\" (letters in cruds order)",
                );
            }
        }
        if !config.upstreams.contains_key(&r.upstream) {
            let known: Vec<_> = config.upstreams.keys().map(String::as_str).collect();
            issues.add(
                format!("{key}.upstream"),
                format!("no upstream named {:?} (known: {})", r.upstream, known.join(", ")),
                "add an [upstreams.NAME] table or correct the name",
            );
        }
    }
}

/// `public_base_url` is an origin: `https://host[:port]`, nothing before or after it.
/// The route's prefix is appended to it, so a path would end up in front of the prefix
/// in some URLs and not in others.
fn check_public_base_url(base: &str) -> Result<(), &'static str> {
    let uri: http::Uri = base.parse().map_err(|_| "is not a URL")?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https URL: clients reach the gateway over TLS only");
    }
    let Some(authority) = uri.authority() else {
        return Err("has no host");
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err("must name a host without user information");
    }
    if uri.query().is_some() || base.contains('#') {
        return Err("must not have a query or a fragment");
    }
    if !matches!(uri.path(), "" | "/") {
        return Err("must not have a path: the route's path_prefix is appended to it");
    }
    Ok(())
}

/// AUTH-ID-1: SMART discovery only where FHIR is served, pointing at `https` endpoints.
fn check_route_smart(r: &super::Route, key: &str, issues: &mut Issues) {
    if !r.fhir && r.metadata_requires_auth {
        issues.add(
            format!("{key}.metadata_requires_auth"),
            "the key only applies to FHIR routes (fhir = true)",
            "remove it, or set fhir = true if the route serves FHIR",
        );
    }
    let Some(smart) = &r.smart else { return };
    if !r.fhir {
        issues.add(
            format!("{key}.smart"),
            "a SMART configuration is published from a FHIR base, and this route is not a FHIR route",
            "remove [routes.smart], or set fhir = true if the route serves FHIR",
        );
    }
    issues.0.extend(smart.issues(&format!("{key}.smart")));
}

/// The listeners a route can be reached from (all of them when it names none).
fn reachable_from<'c>(config: &'c Config, r: &'c super::Route) -> impl Iterator<Item = &'c super::Listener> {
    config
        .listeners
        .iter()
        .filter(|l| r.listeners.is_empty() || r.listeners.contains(&l.name))
}

fn share_a_listener(config: &Config, a: &super::Route, b: &super::Route) -> bool {
    reachable_from(config, a).any(|l| reachable_from(config, b).any(|m| m.name == l.name))
}

/// EX-SEG-1, EX-MTLS-1: a route is bound to listeners that exist, and a route that needs
/// a client certificate is not reachable where none is ever asked for (every request
/// there would be refused: the binding is what the operator meant to write).
fn check_route_listeners(config: &Config, r: &super::Route, key: &str, issues: &mut Issues) {
    let known: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    for name in &r.listeners {
        if !known.contains(&name.as_str()) {
            issues.add(
                format!("{key}.listeners"),
                format!("no listener named {name:?} (known: {})", known.join(", ")),
                "use the name of a [[listeners]] entry",
            );
        }
    }
    if r.client_cert != super::RouteClientCert::Required {
        return;
    }
    for l in reachable_from(config, r).filter(|l| l.client_auth == ClientAuth::None) {
        issues.add(
            format!("{key}.client_cert"),
            format!(
                "route {:?} requires a client certificate but is reachable from listener {:?}, which never asks for one (client_auth = \"none\")",
                r.name, l.name
            ),
            "bind the route to the listeners that ask for client certificates with `listeners = [...]`, or set client_auth = \"required\" on that listener",
        );
    }
}

fn check_limits(config: &Config, issues: &mut Issues) {
    let l = &config.limits;
    if l.max_header_bytes < 8192 {
        issues.add(
            "limits.max_header_bytes",
            format!("{} is below the HTTP/1 parser's minimum of 8192", l.max_header_bytes),
            "use at least 8192",
        );
    }
    if l.max_connections == 0 {
        issues.add(
            "limits.max_connections",
            "0 would refuse every connection",
            "use a positive number such as 10000",
        );
    }
    for (name, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("idle_timeout", l.idle_timeout),
        ("tls_handshake_timeout", l.tls_handshake_timeout),
        ("websocket_idle_timeout", l.websocket_idle_timeout),
    ] {
        if d.is_zero() {
            issues.add(
                format!("limits.{name}"),
                "a zero timeout disables the protection",
                "use a positive duration such as \"10s\"",
            );
        }
    }
    // LOG-PROT-1: checkpoints bound the tail a crash leaves unvouched; zero means never.
    if config.audit.checkpoint_every == 0 || config.audit.checkpoint_interval.is_zero() {
        issues.add(
            "audit.checkpoint_every",
            "audit.checkpoint_every and audit.checkpoint_interval must be above zero",
            "use the defaults, 100 and \"1s\"",
        );
    }
    if config.gateway.hsts_max_age.as_secs() > 0 && config.gateway.hsts_max_age.as_secs() < 86_400 {
        issues.add(
            "gateway.hsts_max_age",
            "HSTS shorter than a day protects little",
            "use at least \"1day\" (the default is one year)",
        );
    }
}

/// DATA-JP-1..3: every target declares the required jurisdiction; the allow-list loads.
fn check_residency(config: &Config, issues: &mut Issues) {
    use crate::residency::{allow_list::AllowList, jurisdiction::check_declaration};
    for t in crate::residency::targets::from_config(config) {
        if let Err(e) = check_declaration(&config.residency.required, &t) {
            issues.add(
                format!("{}.jurisdiction", t.config_section().trim_matches(['[', ']'])),
                e.to_string(),
                format!(
                    "declare jurisdiction = \"{}\" only once the hosting contract places the target there",
                    config.residency.required
                ),
            );
        }
    }
    if let Err(e) = AllowList::load(
        &config.residency.allowed_networks,
        &config.residency.allowed_networks_files,
    ) {
        issues.add(
            "residency.allowed_networks",
            e.to_string(),
            "write one CIDR per entry (e.g. \"203.0.113.0/24\"); files hold one per line",
        );
    }
    if let Some(f) = &config.residency.hosts_file {
        issues.file("residency.hosts_file".into(), f);
    }
}

/// AUTH-ID-1: issuers are usable, route policies are consistent, and no PHI route is open.
fn check_auth(config: &Config, issues: &mut Issues) {
    issues.0.extend(config.auth.validate());
    for (i, r) in config.routes.iter().enumerate() {
        let key = format!("routes[{i}].auth");
        issues.0.extend(r.auth.validate(&key));
        if r.phi && r.auth.mode == AuthMode::None {
            issues.add(
                format!("{key}.mode"),
                "a route carrying personal health information cannot be unauthenticated",
                "use mode = \"required\", or set phi = false if the route serves no medical data",
            );
        }
        if r.auth.mode != AuthMode::None && config.auth.issuers.is_empty() {
            issues.add(
                format!("{key}.mode"),
                "the route needs tokens but no issuer is configured",
                "add an [[auth.issuers]] table, or set mode = \"none\" and phi = false for a public route",
            );
        }
    }
}

/// AV-DOS-1, AUTH-LOCK-1, EX-FILE-1: the limits' own checks, and routes naming policies
/// and upload rules that exist.
fn check_protection(config: &Config, issues: &mut Issues) {
    if let Err(found) = config.protection().validate() {
        issues.0.extend(found);
    }
    for (i, r) in config.routes.iter().enumerate() {
        for name in &r.rate_limits {
            if !config.rate_limits.policies.contains_key(name) {
                issues.add(
                    format!("routes[{i}].rate_limits"),
                    format!("no policy named {name:?}"),
                    "add a [rate_limits.policies.NAME] table or correct the name",
                );
            }
        }
    }
    for name in config.upload_filter.routes.keys() {
        if !config.routes.iter().any(|r| &r.name == name) {
            issues.add(
                format!("upload_filter.routes.{name}"),
                "no route has this name, so the filter would never run",
                "use the name of a [[routes]] entry",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped reference file, with `edit` applied, as parsed (`${...}` references
    /// stay literal strings: parsing and these checks do not need their values).
    fn shipped_with(edit: impl Fn(String) -> String) -> Config {
        let text = edit(include_str!("../../../config/gateway.toml").to_string());
        toml::from_str(&text).expect("the edited reference file parses")
    }

    fn keys(config: &Config) -> Vec<String> {
        validate(config).into_iter().map(|i| i.key).collect()
    }

    /// AUTH-ID-1: SMART discovery is published from a FHIR base only, and the shipped
    /// SMART table is valid.
    #[test]
    fn smart_and_metadata_keys_belong_to_fhir_routes() {
        let shipped = shipped_with(|t| t);
        assert!(shipped.routes[0].smart.is_some());
        assert!(!keys(&shipped).iter().any(|k| k.contains("smart")));
        let plain = shipped_with(|t| {
            t.replacen("fhir = true\n", "fhir = false\n", 1).replacen(
                "metadata_requires_auth = false",
                "metadata_requires_auth = true",
                1,
            )
        });
        let keys = keys(&plain);
        assert!(keys.contains(&"routes[0].smart".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"routes[0].metadata_requires_auth".to_string()),
            "{keys:?}"
        );
        let plain_pkce = shipped_with(|t| {
            t.replacen(
                "code_challenge_methods_supported = [\"S256\"]",
                "code_challenge_methods_supported = [\"S256\", \"plain\"]",
                1,
            )
        });
        assert!(
            super::tests::keys(&plain_pkce).contains(&"routes[0].smart.code_challenge_methods_supported".to_string())
        );
    }

    #[test]
    fn public_base_url_is_an_https_origin() {
        for ok in [
            "https://phr.example.jp",
            "https://phr.example.jp/",
            "https://phr.example.jp:8443",
        ] {
            assert_eq!(check_public_base_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://phr.example.jp", "https"),
            ("phr.example.jp", "https"),
            ("https://phr.example.jp/phr", "path"),
            ("https://phr.example.jp?x=1", "query"),
            ("https://phr.example.jp#top", "fragment"),
            ("https://user@phr.example.jp", "user information"),
            ("not a url", "URL"),
        ] {
            let problem = check_public_base_url(bad).expect_err(bad);
            assert!(problem.contains(why), "{bad}: {problem}");
        }
    }
}
