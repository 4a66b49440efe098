//! Configuration + state → one row per requirement ID, each with its state under this
//! configuration and the evidence taken from it. Pure: the state is gathered first
//! (`state.rs`), so every judgement here is testable offline.

use super::catalogue::{Catalogue, Control, Responsibility};
use super::profile::Profile;
use super::state::{AuditStoreState, State, VerifyEvidence};
use crate::config::auth::AuthMode;
use crate::config::{AuditMode, ClientAuth, Config, Route, RouteClientCert, TlsVersion};
use serde::Serialize;
use std::time::Duration;

/// Version of the JSON form (`docs/compliance-report.schema.json`). Bump the major part
/// when a field is removed or changes meaning, the minor part when one is added.
pub const SCHEMA_VERSION: &str = "1.0";

/// A row's state under this configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// The control is on as the guideline asks.
    Met,
    /// On, but weakened (a stated exception, an expiring certificate ...).
    Partly,
    /// Off.
    NotMet,
    /// Nothing in this deployment it applies to.
    NotApplicable,
    /// An organisational matter, stated in the operator profile.
    Organisational,
    /// The state needed to judge it could not be read (the evidence says why).
    Unknown,
}

impl RowState {
    /// The JSON value, also used in Markdown and HTML as a CSS class.
    pub fn key(self) -> &'static str {
        match self {
            RowState::Met => "met",
            RowState::Partly => "partly",
            RowState::NotMet => "not_met",
            RowState::NotApplicable => "not_applicable",
            RowState::Organisational => "organisational",
            RowState::Unknown => "unknown",
        }
    }
}

/// One row of the disclosure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Requirement ID.
    pub id: String,
    /// The control's label in `docs/compliance.md` (may name several IDs).
    pub control_label: String,
    /// Disclosure group key.
    pub group: String,
    /// Key phrase of the requirement, Japanese.
    pub requirement_ja: String,
    /// Key phrase of the requirement, English.
    pub requirement_en: String,
    /// The control that implements it.
    pub control: String,
    /// Where its code is.
    pub code: String,
    /// Which tests show it.
    pub tests: String,
    /// Who answers for it.
    pub responsibility: Responsibility,
    /// `--strict` fails when it is not met.
    pub mandatory: bool,
    /// Its state under this configuration.
    pub state: RowState,
    /// Evidence from the effective configuration and state, one fact per line.
    pub evidence: Vec<String>,
}

/// The report: the technical part of the サービス仕様適合開示書.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// `phr-gateway X.Y.Z`.
    pub generator: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
    /// The configuration file the report is about.
    pub config_file: String,
    /// The gateway instance.
    pub instance_id: String,
    /// The profile file, if one was given.
    pub profile_file: Option<String>,
    /// Disclosure groups in order, with both headings.
    pub groups: Vec<GroupHeading>,
    /// One row per requirement ID, in disclosure order.
    pub rows: Vec<Row>,
    /// Rows per state.
    pub summary: Summary,
    /// IDs of mandatory rows that are not met (or unknown): `--strict` fails on these.
    pub strict_failures: Vec<String>,
}

/// A disclosure group heading.
#[derive(Debug, Clone, Serialize)]
pub struct GroupHeading {
    /// Key, as in [`Row::group`].
    pub key: String,
    /// Japanese heading.
    pub ja: String,
    /// English heading.
    pub en: String,
}

/// How many rows are in each state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// [`RowState::Met`].
    pub met: usize,
    /// [`RowState::Partly`].
    pub partly: usize,
    /// [`RowState::NotMet`].
    pub not_met: usize,
    /// [`RowState::NotApplicable`].
    pub not_applicable: usize,
    /// [`RowState::Organisational`].
    pub organisational: usize,
    /// [`RowState::Unknown`].
    pub unknown: usize,
}

/// Where the report came from (for its header).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The configuration file.
    pub config_file: String,
    /// The profile file, if any.
    pub profile_file: Option<String>,
    /// Generation time, RFC 3339.
    pub generated_at: String,
}

/// A control's verdict before it is spread over its IDs.
struct Verdict {
    state: RowState,
    evidence: Vec<String>,
}

fn verdict(state: RowState, evidence: Vec<String>) -> Verdict {
    Verdict { state, evidence }
}

/// Evaluates every control of `catalogue` under `config`, `state` and `profile`.
pub fn evaluate(
    catalogue: &Catalogue,
    config: &Config,
    state: &State,
    profile: Option<&Profile>,
    origin: &Origin,
) -> Report {
    let ctx = Ctx { config, state, profile };
    let mut rows = Vec::new();
    for group in &catalogue.groups {
        for control in catalogue.controls.iter().filter(|c| c.group == group.key) {
            let v = ctx.judge(control);
            for id in &control.ids {
                rows.push(row(control, id, &v));
            }
        }
    }
    let mut summary = Summary::default();
    for r in &rows {
        *match r.state {
            RowState::Met => &mut summary.met,
            RowState::Partly => &mut summary.partly,
            RowState::NotMet => &mut summary.not_met,
            RowState::NotApplicable => &mut summary.not_applicable,
            RowState::Organisational => &mut summary.organisational,
            RowState::Unknown => &mut summary.unknown,
        } += 1;
    }
    let strict_failures = rows
        .iter()
        .filter(|r| r.mandatory && matches!(r.state, RowState::NotMet | RowState::Unknown))
        .map(|r| r.id.clone())
        .collect();
    Report {
        schema_version: SCHEMA_VERSION.to_string(),
        generator: format!("phr-gateway {}", env!("CARGO_PKG_VERSION")),
        generated_at: origin.generated_at.clone(),
        config_file: origin.config_file.clone(),
        instance_id: config.gateway.instance_id.clone(),
        profile_file: origin.profile_file.clone(),
        groups: catalogue
            .groups
            .iter()
            .map(|g| GroupHeading {
                key: g.key.clone(),
                ja: g.ja.clone(),
                en: g.en.clone(),
            })
            .collect(),
        rows,
        summary,
        strict_failures,
    }
}

fn row(c: &Control, id: &str, v: &Verdict) -> Row {
    Row {
        id: id.to_string(),
        control_label: c.label.clone(),
        group: c.group.clone(),
        requirement_ja: c.ja.clone(),
        requirement_en: c.en.clone(),
        control: c.what.clone(),
        code: c.code.clone(),
        tests: c.tests.clone(),
        responsibility: c.responsibility,
        mandatory: c.mandatory,
        state: v.state,
        evidence: v.evidence.clone(),
    }
}

struct Ctx<'a> {
    config: &'a Config,
    state: &'a State,
    profile: Option<&'a Profile>,
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn version(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Tls13 => "TLS 1.3 only",
        TlsVersion::Tls12 => "TLS 1.2 and 1.3",
    }
}

fn client_auth(c: ClientAuth) -> &'static str {
    match c {
        ClientAuth::None => "none",
        ClientAuth::Optional => "optional",
        ClientAuth::Required => "required",
    }
}

impl Ctx<'_> {
    fn judge(&self, c: &Control) -> Verdict {
        match c.check.as_str() {
            "tls_versions" => self.tls_versions(),
            "client_certificates" => self.client_certificates(),
            "mutual_tls" => self.mutual_tls(),
            "https_only" => self.https_only(),
            "certificates" => self.certificates(),
            "route_binding" => self.route_binding(),
            "admin_loopback" => self.admin_loopback(),
            "connection_limits" => self.connection_limits(),
            "upload_filter" => self.upload_filter(),
            "evidence" => self.detection(),
            "authentication" => self.authentication(),
            "two_factor" => self.two_factor(),
            "auth_backoff" => self.auth_backoff(),
            "auth_age" => self.auth_age(),
            "revocation" => self.revocation(),
            "compartment" => self.compartment(),
            "access_records" => self.access_records(),
            "record_protection" => self.record_protection(),
            "time_source" => self.time_source(),
            "retention" => self.retention(),
            "record_encryption" => self.record_encryption(),
            "shredding" => self.shredding(),
            "durable_records" => self.durable_records(),
            "residency" => self.residency(),
            "data_location" => self.data_location(),
            "rate_limits" => self.rate_limits(),
            "failover" => self.failover(),
            "disclosure" => self.disclosure(),
            other => match other.strip_prefix("profile:") {
                Some(section) => self.profile_row(section),
                None => verdict(
                    RowState::Unknown,
                    vec![format!("no evaluator {other:?} (a defect of controls.toml)")],
                ),
            },
        }
    }

    fn phi_routes(&self) -> impl Iterator<Item = (usize, &Route)> {
        self.config.routes.iter().enumerate().filter(|(_, r)| r.phi)
    }

    /// Listeners a route is reachable from.
    fn reachable(&self, route: &Route) -> Vec<&crate::config::Listener> {
        self.config
            .listeners
            .iter()
            .filter(|l| route.listeners.is_empty() || route.listeners.contains(&l.name))
            .collect()
    }

    fn institutions_use_certs(&self) -> bool {
        self.profile
            .map(|p| p.network.institutions_use_client_certificates)
            .unwrap_or(false)
    }

    fn tls_versions(&self) -> Verdict {
        let mut ev = Vec::new();
        let mut state = RowState::Met;
        let mut judge = |what: String, v: TlsVersion, reason: &Option<String>| match (v, reason) {
            (TlsVersion::Tls13, _) => ev.push(format!("{what}: {}", version(v))),
            (TlsVersion::Tls12, Some(r)) => {
                ev.push(format!("{what}: {} (stated reason: {r})", version(v)));
                if state == RowState::Met {
                    state = RowState::Partly;
                }
            }
            (TlsVersion::Tls12, None) => {
                ev.push(format!("{what}: {} WITHOUT a stated reason (tls12_reason)", version(v)));
                state = RowState::NotMet;
            }
        };
        for l in &self.config.listeners {
            judge(
                format!("listener {} ({})", l.name, l.bind),
                l.tls_min_version,
                &l.tls12_reason,
            );
        }
        for (name, u) in &self.config.upstreams {
            judge(format!("upstream {name}"), u.tls_min_version, &u.tls12_reason);
        }
        let provider = crate::tls::provider();
        let suites = |v: u16| {
            provider
                .cipher_suites
                .iter()
                .filter(|s| u16::from(s.version().version) == v)
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        ev.push(format!("TLS 1.3 suites: {}", suites(0x0304)));
        ev.push(format!(
            "TLS 1.2 suites (only where 1.2 is enabled): {}",
            suites(0x0303)
        ));
        ev.push(format!(
            "key-exchange groups: {}",
            provider
                .kx_groups
                .iter()
                .map(|g| format!("{:?}", g.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        verdict(state, ev)
    }

    fn listener_evidence(&self) -> Vec<String> {
        self.config
            .listeners
            .iter()
            .map(|l| {
                let ca = l
                    .client_ca_file
                    .as_ref()
                    .map(|f| format!(", CA {}", f.display()))
                    .unwrap_or_default();
                format!(
                    "listener {} ({}): client_auth = {}{ca}, {} CRL file(s)",
                    l.name,
                    l.bind,
                    client_auth(l.client_auth),
                    l.crl_files.len()
                )
            })
            .collect()
    }

    fn client_certificates(&self) -> Verdict {
        let mut ev = self.listener_evidence();
        let mut open = Vec::new();
        for (i, r) in self.phi_routes() {
            let reach = self.reachable(r);
            let names: Vec<&str> = reach.iter().map(|l| l.name.as_str()).collect();
            let needs = r.client_cert == RouteClientCert::Required
                || reach.iter().all(|l| l.client_auth == ClientAuth::Required);
            ev.push(format!(
                "routes[{i}] {} (PHI): listeners [{}], client certificate {}",
                r.name,
                names.join(", "),
                if needs { "required" } else { "not required" }
            ));
            if !needs {
                open.push(r.name.clone());
            }
        }
        let asking = self.config.listeners.iter().any(|l| l.client_auth != ClientAuth::None);
        if self.institutions_use_certs() {
            ev.push("profile: institutions connect with client certificates".to_string());
            match open.is_empty() {
                true => verdict(RowState::Met, ev),
                false => {
                    ev.push(format!(
                        "PHI routes reachable without a client certificate: {}",
                        open.join(", ")
                    ));
                    verdict(RowState::NotMet, ev)
                }
            }
        } else if asking {
            verdict(RowState::Met, ev)
        } else {
            ev.push("no listener asks for client certificates and the profile does not say institutions use them; patients authenticate with two-factor tokens".to_string());
            verdict(RowState::NotApplicable, ev)
        }
    }

    fn mutual_tls(&self) -> Verdict {
        let mut ev = self.listener_evidence();
        for (name, u) in &self.config.upstreams {
            ev.push(format!(
                "upstream {name}: gateway client certificate {}",
                u.client_cert_file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "none".to_string())
            ));
        }
        let verifying = self
            .config
            .listeners
            .iter()
            .any(|l| l.client_auth != ClientAuth::None && l.client_ca_file.is_some());
        match (verifying, self.institutions_use_certs()) {
            (true, _) => verdict(RowState::Met, ev),
            (false, true) => {
                ev.push(
                    "profile: institutions connect with client certificates, but no listener verifies any".to_string(),
                );
                verdict(RowState::NotMet, ev)
            }
            (false, false) => verdict(RowState::NotApplicable, ev),
        }
    }

    fn https_only(&self) -> Verdict {
        let hsts = self.config.gateway.hsts_max_age;
        let mut ev = vec![
            format!(
                "{} TLS listener(s); no plaintext listener can be configured",
                self.config.listeners.len()
            ),
            format!("Strict-Transport-Security max-age: {}", dur(hsts)),
        ];
        for (name, u) in self.config.upstreams.iter().filter(|(_, u)| u.allow_plaintext) {
            ev.push(format!(
                "upstream {name}: plain HTTP allowed to loopback only ({})",
                u.endpoints.join(", ")
            ));
        }
        let state = if hsts.is_zero() {
            ev.push("HSTS is disabled (gateway.hsts_max_age = \"0s\")".to_string());
            RowState::NotMet
        } else if hsts < Duration::from_secs(31_536_000) {
            RowState::Partly
        } else {
            RowState::Met
        };
        verdict(state, ev)
    }

    fn certificates(&self) -> Verdict {
        let certs = &self.state.certificates;
        if certs.is_empty() {
            return verdict(RowState::Unknown, vec!["certificates were not read".to_string()]);
        }
        let mut state = RowState::Met;
        let mut ev = Vec::new();
        for c in certs {
            let days = c.days_left.map(|d| format!(" ({d} days left)")).unwrap_or_default();
            ev.push(format!(
                "{} (listener {}) {}: {}, valid until {}{days}",
                c.key,
                c.listener,
                c.file.display(),
                c.subject.as_deref().unwrap_or("?"),
                c.not_after.as_deref().unwrap_or("?")
            ));
            if let Some(p) = &c.problem {
                ev.push(format!("{}: REFUSED: {p}", c.key));
                state = RowState::NotMet;
            } else if c.days_left.is_some_and(|d| d < 30) && state == RowState::Met {
                state = RowState::Partly;
            }
        }
        ev.push(
            "start-up refuses expired, not-yet-valid, RSA < 2048, EC < 256 and SHA-1-signed certificates".to_string(),
        );
        verdict(state, ev)
    }

    fn route_binding(&self) -> Verdict {
        let several = self.config.listeners.len() > 1;
        let mut state = RowState::Met;
        let mut ev = Vec::new();
        for (i, r) in self.config.routes.iter().enumerate() {
            let listeners = match r.listeners.is_empty() {
                true => "every listener".to_string(),
                false => r.listeners.join(", "),
            };
            ev.push(format!(
                "routes[{i}] {} {}{} → upstream {}; from {listeners}; phi = {}, fhir = {}",
                r.name,
                r.host.as_deref().unwrap_or("*"),
                r.path_prefix,
                r.upstream,
                r.phi,
                r.fhir
            ));
            if several && r.phi && r.listeners.is_empty() {
                ev.push(format!(
                    "routes[{i}] {}: a PHI route reachable from every listener",
                    r.name
                ));
                state = RowState::Partly;
            }
        }
        ev.push(
            "path tricks (dot segments, encoded separators) and ambiguous Host headers are refused before routing"
                .to_string(),
        );
        verdict(state, ev)
    }

    fn admin_loopback(&self) -> Verdict {
        let bind = self.config.admin.bind;
        let ev = vec![format!("admin listener (plain HTTP: health, metrics, reload): {bind}")];
        match bind.ip().is_loopback() {
            true => verdict(RowState::Met, ev),
            false => verdict(RowState::Partly, {
                let mut ev = ev;
                ev.push("not loopback: it must only be reachable from a management network".to_string());
                ev
            }),
        }
    }

    fn connection_limits(&self) -> Verdict {
        let c = &self.config.connection_limits;
        let l = &self.config.limits;
        verdict(
            RowState::Met,
            vec![
                format!("max_connections_per_ip = {}", c.max_connections_per_ip),
                format!(
                    "TLS handshakes per IP: {}/s, burst {}",
                    c.tls_handshakes_per_ip_per_second, c.tls_handshake_burst
                ),
                format!("max_connections = {}", l.max_connections),
                format!("trusted_proxies: {}", self.config.gateway.trusted_proxies.len()),
            ],
        )
    }

    fn upload_filter(&self) -> Verdict {
        let routes = &self.config.upload_filter.routes;
        let ev: Vec<String> = routes
            .iter()
            .map(|(name, r)| {
                format!(
                    "route {name}: content must be one of {}",
                    r.allowed_media_types.join(", ")
                )
            })
            .collect();
        match ev.is_empty() {
            true => verdict(
                RowState::NotMet,
                vec!["no route filters uploads ([upload_filter.routes.NAME])".to_string()],
            ),
            false => verdict(RowState::Met, ev),
        }
    }

    fn detection(&self) -> Verdict {
        let mut ev = vec![format!(
            "refusal, authentication-failure, throttling and egress-refusal counters on http://{}/metrics; JSON logs",
            self.config.admin.bind
        )];
        match &self.config.bulk_access {
            Some(b) => ev.push(format!(
                "bulk-access detector: more than {} patients in {} → {:?}",
                b.max_distinct_patients,
                dur(b.window),
                b.action
            )),
            None => ev.push("bulk-access detector: off".to_string()),
        }
        ev.push("IDS/IPS in front of the gateway: the platform's".to_string());
        verdict(RowState::Met, ev)
    }

    fn authentication(&self) -> Verdict {
        let mut state = RowState::Met;
        let mut ev = Vec::new();
        for (i, is) in self.config.auth.issuers.iter().enumerate() {
            let keys = match (&is.jwks_url, &is.jwks_file) {
                (Some(u), _) => format!("JWKS {u}"),
                (None, Some(f)) => format!("JWKS file {}", f.display()),
                (None, None) if is.shared_secret.is_some() => "shared secret".to_string(),
                _ => "no keys".to_string(),
            };
            ev.push(format!(
                "auth.issuers[{i}] {}: {keys}; algorithms {}; audiences {}",
                is.issuer,
                is.algorithms.join(", "),
                is.audiences.join(", ")
            ));
            let symmetric = is.shared_secret.is_some()
                || is
                    .algorithms
                    .iter()
                    .any(|a| a.starts_with("HS") || a.eq_ignore_ascii_case("none"));
            if symmetric {
                ev.push(format!(
                    "auth.issuers[{i}]: symmetric (HS*) tokens accepted: anyone holding the secret can mint them"
                ));
                if state == RowState::Met {
                    state = RowState::Partly;
                }
            }
        }
        for (i, r) in self.config.routes.iter().enumerate() {
            let mode = match r.auth.mode {
                AuthMode::Required => "token required",
                AuthMode::Optional => "token optional",
                AuthMode::None => "no authentication",
            };
            ev.push(format!("routes[{i}] {} (phi = {}): {mode}", r.name, r.phi));
            if r.phi && r.auth.mode != AuthMode::Required {
                state = RowState::NotMet;
            }
        }
        verdict(state, ev)
    }

    fn two_factor(&self) -> Verdict {
        let mut ev = Vec::new();
        let mut off = false;
        let mut any = false;
        for (i, r) in self.phi_routes() {
            any = true;
            let how = match (r.auth.two_factor, r.auth.acr_values.is_empty()) {
                (true, true) => "amr must span two factor categories".to_string(),
                (true, false) => format!("two factor categories, or acr in {}", r.auth.acr_values.join(", ")),
                (false, false) => format!("acr in {}", r.auth.acr_values.join(", ")),
                (false, true) => {
                    off = true;
                    "NOT required (routes.auth.two_factor = false, no acr_values)".to_string()
                }
            };
            ev.push(format!("routes[{i}] {}: two factors {how}", r.name));
        }
        ev.push(format!(
            "\"mfa\" counts as two factors: {}",
            self.config.auth.factors.trust_mfa_claim
        ));
        match (any, off) {
            (false, _) => verdict(RowState::NotApplicable, vec!["no PHI route".to_string()]),
            (true, true) => verdict(RowState::NotMet, ev),
            (true, false) => verdict(RowState::Met, ev),
        }
    }

    fn auth_backoff(&self) -> Verdict {
        let b = &self.config.auth_backoff;
        verdict(
            RowState::Met,
            vec![
                format!(
                    "after {} failed tokens within {}: refused for {}",
                    b.after_failures,
                    dur(b.window),
                    dur(b.block_for)
                ),
                format!("doubling: {}, up to {}", b.exponential, dur(b.max_block)),
                "per source IP and per subject".to_string(),
            ],
        )
    }

    fn auth_age(&self) -> Verdict {
        let mut ev = Vec::new();
        let issuers_bounded =
            !self.config.auth.issuers.is_empty() && self.config.auth.issuers.iter().all(|i| i.max_token_age.is_some());
        for (i, is) in self.config.auth.issuers.iter().enumerate() {
            ev.push(format!(
                "auth.issuers[{i}] max_token_age: {}",
                is.max_token_age.map(dur).unwrap_or_else(|| "not set".to_string())
            ));
        }
        let mut all_routes = true;
        for (i, r) in self.phi_routes() {
            ev.push(format!(
                "routes[{i}] {} max_auth_age: {}",
                r.name,
                r.auth.max_auth_age.map(dur).unwrap_or_else(|| "not set".to_string())
            ));
            all_routes &= r.auth.max_auth_age.is_some();
        }
        ev.push("every token's exp is enforced; revoked tokens are refused within 2 s".to_string());
        match issuers_bounded || all_routes {
            true => verdict(RowState::Met, ev),
            false => verdict(RowState::Partly, ev),
        }
    }

    fn store_url(&self) -> String {
        crate::util::redact::redact_url(self.config.store.url.as_deref().unwrap_or("(default SQLite)"))
    }

    fn revocation(&self) -> Verdict {
        verdict(
            RowState::Met,
            vec![
                format!("revocations and the block list are kept in {}", self.store_url()),
                "synced to every instance each second".to_string(),
            ],
        )
    }

    fn compartment(&self) -> Verdict {
        let mut ev = Vec::new();
        let mut off = false;
        let mut any = false;
        for (i, r) in self.phi_routes() {
            any = true;
            if r.fhir {
                ev.push(format!(
                    "routes[{i}] {}: FHIR R4, SMART scopes and the patient compartment enforced, responses checked",
                    r.name
                ));
            } else if !r.auth.required_scopes.is_empty() {
                ev.push(format!(
                    "routes[{i}] {}: required scopes {}",
                    r.name,
                    r.auth.required_scopes.join(" ")
                ));
            } else {
                ev.push(format!(
                    "routes[{i}] {}: NO scope or compartment check (not fhir, no required_scopes)",
                    r.name
                ));
                off = true;
            }
        }
        match (any, off) {
            (false, _) => verdict(RowState::NotApplicable, vec!["no PHI route".to_string()]),
            (true, true) => verdict(RowState::NotMet, ev),
            (true, false) => verdict(RowState::Met, ev),
        }
    }

    fn audit_off(&self) -> Option<Verdict> {
        (!self.config.audit.enabled).then(|| {
            verdict(
                RowState::NotMet,
                vec!["access records are DISABLED (audit.enabled = false)".to_string()],
            )
        })
    }

    fn access_records(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let a = &self.config.audit;
        let mut ev = vec![
            format!("one record per request, allowed or refused, in {}", self.store_url()),
            format!(
                "access-record mode: {}",
                match a.mode {
                    AuditMode::Durable => "durable",
                    AuditMode::Relaxed => "relaxed",
                }
            ),
            "periodic review: phr-gateway audit report".to_string(),
        ];
        let state = match &self.config.bulk_access {
            Some(b) => {
                ev.push(format!(
                    "bulk-access detector: more than {} patients in {}",
                    b.max_distinct_patients,
                    dur(b.window)
                ));
                RowState::Met
            }
            None => {
                ev.push("bulk-access detector: off ([bulk_access] absent)".to_string());
                RowState::Partly
            }
        };
        verdict(state, ev)
    }

    fn record_protection(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let a = &self.config.audit;
        let mut ev = vec![
            format!(
                "signed checkpoint every {} records or {} (checkpoint_grace {})",
                a.checkpoint_every,
                dur(a.checkpoint_interval),
                dur(a.checkpoint_grace)
            ),
            format!("signing key: {}", a.signing_key_file.display()),
            format!(
                "published checkpoints: {}",
                a.checkpoint_file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "not configured (audit.checkpoint_file)".to_string())
            ),
        ];
        let mut state = match a.checkpoint_every > 1000 || a.checkpoint_interval > Duration::from_secs(60) {
            true => {
                ev.push(
                    "the unvouched tail may be long (checkpoint_every > 1000 or checkpoint_interval > 60s)".to_string(),
                );
                RowState::Partly
            }
            false => RowState::Met,
        };
        match &self.state.audit_store {
            AuditStoreState::NotRead => ev.push("last verify: not run".to_string()),
            AuditStoreState::NotCreated { file } => {
                ev.push(format!("last verify: no records yet ({file} not created)"))
            }
            AuditStoreState::Unreachable { reason } => {
                ev.push(format!("last verify: store unreachable: {reason}"));
                state = RowState::Unknown;
            }
            AuditStoreState::Read { verify, .. } => match verify {
                VerifyEvidence::Intact(s) => ev.push(format!("last verify (now): {s}")),
                VerifyEvidence::Failed(s) => {
                    ev.push(format!("last verify (now): FAILED: {}", s.replace('\n', "; ")));
                    state = RowState::NotMet;
                }
                VerifyEvidence::NotRun(s) => {
                    ev.push(format!("last verify: not run: {s}"));
                    if state == RowState::Met {
                        state = RowState::Partly;
                    }
                }
            },
        }
        verdict(state, ev)
    }

    fn profile_value(&self, f: impl Fn(&Profile) -> Option<String>, what: &str) -> String {
        match self.profile.and_then(f) {
            Some(v) => format!("{what}: {v}"),
            None => format!("{what}: not stated in the operator profile"),
        }
    }

    fn time_source(&self) -> Verdict {
        verdict(
            RowState::Organisational,
            vec![
                "record times are UTC from the host clock".to_string(),
                self.profile_value(|p| p.physical.time_source.clone(), "host time source"),
            ],
        )
    }

    fn retention(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let days = self.config.audit.retention_days;
        let ev = vec![
            format!(
                "audit.retention_days = {days} (about {:.1} years)",
                f64::from(days) / 365.0
            ),
            "removed by phr-gateway audit purge; verification stays green".to_string(),
        ];
        match days >= 1825 {
            true => verdict(RowState::Met, ev),
            false => verdict(RowState::Partly, {
                let mut ev = ev;
                ev.push("shorter than the 5-year retention of 診療録".to_string());
                ev
            }),
        }
    }

    fn key_evidence(&self, ev: &mut Vec<String>) -> RowState {
        match &self.state.audit_store {
            AuditStoreState::NotRead => {
                ev.push("data keys: not read".to_string());
                RowState::Met
            }
            AuditStoreState::NotCreated { file } => {
                ev.push(format!("data keys: none yet ({file} not created)"));
                RowState::Met
            }
            AuditStoreState::Unreachable { reason } => {
                ev.push(format!("data keys: store unreachable: {reason}"));
                RowState::Unknown
            }
            AuditStoreState::Read { keys, key_count, .. } => {
                ev.push(format!("data keys: {key_count}"));
                for k in keys {
                    ev.push(format!(
                        "data key {} created {}, wrapped by KEK {}",
                        k.key_id, k.created, k.kek_id
                    ));
                }
                RowState::Met
            }
        }
    }

    fn record_encryption(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let a = &self.config.audit;
        let mut ev = vec![
            "cipher: AES-256-GCM per record, data keys wrapped by the key-encryption key (envelope)".to_string(),
            match &a.kek_env {
                Some(var) => format!("key-encryption key: environment variable {var}"),
                None => format!("key-encryption key: file {} (mode 0600 required)", a.kek_file.display()),
            },
            "rotation: phr-gateway keys rotate (re-wraps data keys)".to_string(),
        ];
        let state = self.key_evidence(&mut ev);
        verdict(state, ev)
    }

    fn shredding(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let mut ev = vec![
            "phr-gateway keys destroy --key-id ID makes that key's records unreadable, with a signed record"
                .to_string(),
        ];
        let state = self.key_evidence(&mut ev);
        verdict(state, ev)
    }

    fn durable_records(&self) -> Verdict {
        if let Some(v) = self.audit_off() {
            return v;
        }
        let a = &self.config.audit;
        match a.mode {
            AuditMode::Durable => verdict(
                RowState::Met,
                vec![
                    "audit.mode = durable: a response leaves only after its record is committed or spooled".to_string(),
                    format!("spool: {}", a.spool_file.display()),
                ],
            ),
            AuditMode::Relaxed => verdict(
                RowState::NotMet,
                vec![
                    "audit.mode = relaxed: responses leave before their record is stored (load tests only)".to_string(),
                ],
            ),
        }
    }

    fn residency_rows(&self, ev: &mut Vec<String>) -> Option<bool> {
        match &self.state.residency {
            None => {
                ev.push("targets were not resolved".to_string());
                None
            }
            Some(Err(e)) => {
                ev.push(format!("residency report failed: {e}"));
                None
            }
            Some(Ok(r)) => {
                ev.push(format!("required jurisdiction: {}", r.required));
                for t in &r.rows {
                    ev.push(format!(
                        "{} {}: declared {}, address {}: {}",
                        t.kind,
                        t.name,
                        t.jurisdiction.as_deref().unwrap_or("NOT DECLARED"),
                        t.address.as_deref().unwrap_or("-"),
                        t.result
                    ));
                }
                ev.extend(r.problems.iter().cloned());
                Some(r.ok)
            }
        }
    }

    fn residency(&self) -> Verdict {
        let mut ev = Vec::new();
        let state = match self.residency_rows(&mut ev) {
            None => RowState::Unknown,
            Some(true) => RowState::Met,
            Some(false) => RowState::NotMet,
        };
        verdict(state, ev)
    }

    fn data_location(&self) -> Verdict {
        let mut ev = vec![format!("store: {}", self.store_url())];
        let state = match self.residency_rows(&mut ev) {
            None => RowState::Unknown,
            Some(_) => RowState::Met,
        };
        ev.push(self.profile_value(|p| p.physical.facility.clone(), "facility"));
        verdict(state, ev)
    }

    fn rate_limits(&self) -> Verdict {
        let mut ev = Vec::new();
        for (name, p) in &self.config.rate_limits.policies {
            ev.push(format!(
                "policy {name}: {:?} {} per {}, burst {}",
                p.key,
                p.rate,
                dur(p.per),
                p.burst.map(|b| b.to_string()).unwrap_or_else(|| "-".to_string())
            ));
        }
        let mut state = RowState::Met;
        for (i, r) in self.phi_routes() {
            match r.rate_limits.is_empty() {
                true => {
                    ev.push(format!("routes[{i}] {}: NO rate-limit policy", r.name));
                    state = RowState::NotMet;
                }
                false => ev.push(format!("routes[{i}] {}: {}", r.name, r.rate_limits.join(", "))),
            }
        }
        let l = &self.config.limits;
        ev.push(format!(
            "header read timeout {}, idle timeout {}, body limit {} bytes, {} HTTP/2 streams",
            dur(l.header_read_timeout),
            dur(l.idle_timeout),
            l.max_body_bytes,
            l.h2_max_concurrent_streams
        ));
        verdict(state, ev)
    }

    fn failover(&self) -> Verdict {
        let mut state = RowState::Met;
        let mut ev = Vec::new();
        for (name, u) in &self.config.upstreams {
            let hc = &u.health_check;
            ev.push(format!(
                "upstream {name}: {} endpoint(s), ejected after {} failures for {}, health check {}",
                u.endpoints.len(),
                u.eject_after_failures,
                dur(u.eject_for),
                match hc.enabled {
                    true => format!("every {} on {}", dur(hc.interval), hc.path),
                    false => "OFF".to_string(),
                }
            ));
            if !hc.enabled {
                state = RowState::Partly;
            }
        }
        ev.push(format!(
            "graceful drain on SIGTERM: {}",
            dur(self.config.limits.drain_timeout)
        ));
        verdict(state, ev)
    }

    fn disclosure(&self) -> Verdict {
        verdict(
            RowState::Met,
            vec![
                format!(
                    "this report: generated by phr-gateway {} from the configuration in force, JSON schema_version {SCHEMA_VERSION}",
                    env!("CARGO_PKG_VERSION")
                ),
                format!(
                    "operator profile: {}",
                    match self.profile {
                        Some(_) => "given",
                        None => "not given (organisational rows say so)",
                    }
                ),
            ],
        )
    }

    fn profile_row(&self, section: &str) -> Verdict {
        let Some(p) = self.profile else {
            return verdict(
                RowState::Organisational,
                vec![
                    "no operator profile given: pass --profile (template: config/compliance-profile.toml)".to_string(),
                ],
            );
        };
        let line = |what: &str, v: &Option<String>| match v {
            Some(v) => format!("{what}: {v}"),
            None => format!("{what}: not stated in the operator profile"),
        };
        let ev = match section {
            "organisation" => vec![
                line("provider", &p.organisation.name),
                line("security officer", &p.organisation.security_officer),
                line("administrators", &p.organisation.administrators),
                line("responsibility split", &p.organisation.responsibility_split),
            ],
            "physical" => vec![
                line("facility", &p.physical.facility),
                line("entry control", &p.physical.entry_control),
                line("disaster measures", &p.physical.disaster_measures),
            ],
            "certifications" => {
                let mut ev = vec![
                    line("ISMS", &p.certifications.isms),
                    line("Privacy Mark", &p.certifications.privacy_mark),
                    line("ISMAP", &p.certifications.ismap),
                ];
                ev.extend(p.certifications.other.iter().map(|o| format!("other: {o}")));
                ev
            }
            "people" => vec![
                line("training", &p.people.training),
                line("confidentiality", &p.people.confidentiality),
                line("administrator credentials", &p.people.credentials),
            ],
            "sla" => vec![
                line("availability", &p.sla.availability),
                line("backup generations", &p.sla.backup_generations.map(|g| g.to_string())),
                line("backup method", &p.sla.backup_method),
                line("backup location", &p.sla.backup_location),
                line("planned maintenance notice", &p.sla.maintenance_notice),
            ],
            "incident" => vec![
                line("incident contact", &p.organisation.incident_contact),
                "evidence for a period: phr-gateway audit export --from --to".to_string(),
            ],
            other => vec![format!("no profile section {other:?} (a defect of controls.toml)")],
        };
        verdict(RowState::Organisational, ev)
    }
}
