//! Declared jurisdictions for every place the gateway sends or keeps data.
//!
//! DATA-JP-1 / DATA-JP-2 / DATA-JP-3 require servers holding medical
//! information to be where Japanese law is enforceable, and ONL-3 extends
//! that to online-consultation systems that touch the medical record system.
//! Whether a server is in Japan is a fact about contracts and buildings that
//! software cannot observe, so the gateway makes the operator *state* it for
//! every target and refuses to start when a statement is missing or names
//! another country. Refusing undeclared targets (rather than assuming "JP")
//! is deliberate: a new upstream added in a hurry must fail closed.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::ResidencyError;

pub use crate::config::jurisdiction::{Jurisdiction, JurisdictionError};

/// What role a target plays, so messages and reports can say which part of
/// the configuration to fix and auditors can see what kind of data flows
/// there (a JWKS fetch leaks less than a database, but still leaves a trace
/// of patients' sessions, so it is checked all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An API server requests are proxied to (FHIR server, EMR bridge, ...).
    Upstream,
    /// A JSON Web Key Set URL fetched to verify tokens.
    Jwks,
    /// An OpenID Connect issuer / discovery or introspection endpoint.
    Issuer,
    /// The gateway's own database (audit, consent, sessions).
    Database,
    /// A Redis (rate limits, sessions, caches that may hold PHI).
    Redis,
    /// A destination for exports, backups or bulk data.
    Export,
    /// A log or audit-trail sink; access logs identify patients too.
    AuditLog,
}

impl TargetKind {
    /// The configuration table this kind lives under, used only to tell the
    /// operator where to add the `jurisdiction` key. Adjust here if the
    /// gateway's config schema names them differently.
    pub fn config_table(&self) -> &'static str {
        match self {
            TargetKind::Upstream => "upstreams",
            TargetKind::Jwks => "jwks",
            TargetKind::Issuer => "issuers",
            TargetKind::Database => "database",
            TargetKind::Redis => "redis",
            TargetKind::Export => "exports",
            TargetKind::AuditLog => "audit_logs",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Upstream => "upstream",
            TargetKind::Jwks => "jwks",
            TargetKind::Issuer => "issuer",
            TargetKind::Database => "database",
            TargetKind::Redis => "redis",
            TargetKind::Export => "export",
            TargetKind::AuditLog => "audit_log",
        })
    }
}

/// One place the gateway sends data to or keeps data in, with the
/// operator's statement of where it is.
///
/// Every outbound destination must be modelled as a `Target`: anything left
/// out escapes both the start-up declaration check and the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The role of the target.
    pub kind: TargetKind,
    /// The name used in the configuration (e.g. the `fhir` of `[upstreams.fhir]`).
    pub name: String,
    /// URL or host:port, shown in messages so the operator can recognise it.
    pub url_or_host: String,
    /// Declared location; `None` is refused, never defaulted.
    pub jurisdiction: Option<Jurisdiction>,
    /// True if the target runs inside the operator's own cluster, which
    /// allows private and loopback addresses for it (see [`super::policy::ResidencyPolicy`]).
    pub in_cluster: bool,
}

impl Target {
    /// `upstream "fhir" (https://fhir.example.com)`: how every message and
    /// report names a target, so one grep finds all mentions of it.
    pub fn label(&self) -> String {
        format!("{} {:?} ({})", self.kind, self.name, self.url_or_host)
    }

    /// `[upstreams.fhir]`: where the operator edits this target.
    pub fn config_section(&self) -> String {
        format!("[{}.{}]", self.kind.config_table(), self.name)
    }
}

/// Checks one target's declaration against the required jurisdiction.
///
/// Exists separately from [`check_declarations`] so the report can show the
/// outcome per target.
pub fn check_declaration(required: &Jurisdiction, target: &Target) -> Result<(), ResidencyError> {
    match target.jurisdiction {
        Some(declared) if declared == *required => Ok(()),
        Some(declared) => Err(ResidencyError::ForeignJurisdiction {
            target: target.label(),
            declared,
            required: *required,
        }),
        None => Err(ResidencyError::Undeclared {
            target: target.label(),
            section: target.config_section(),
            required: *required,
        }),
    }
}

/// Refuses start-up unless every target is declared to be in `required`.
///
/// Returns *all* problems at once, so an operator fixing a config file does
/// not have to restart once per mistake. Called at start-up and on reload;
/// a reload that fails must keep the previous configuration.
pub fn check_declarations(required: &Jurisdiction, targets: &[Target]) -> Result<(), Vec<ResidencyError>> {
    let errors: Vec<ResidencyError> = targets
        .iter()
        .filter_map(|t| check_declaration(required, t).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: TargetKind, name: &str, url: &str, j: Option<&str>) -> Target {
        Target {
            kind,
            name: name.to_owned(),
            url_or_host: url.to_owned(),
            jurisdiction: j.map(|j| Jurisdiction::parse(j).unwrap()),
            in_cluster: false,
        }
    }

    #[test]
    fn all_japanese_targets_pass() {
        let targets = [
            target(TargetKind::Upstream, "fhir", "https://fhir.test", Some("JP")),
            target(TargetKind::Redis, "cache", "redis:6379", Some("JP")),
        ];
        assert_eq!(check_declarations(&Jurisdiction::JP, &targets), Ok(()));
    }

    #[test]
    fn every_bad_target_is_reported() {
        let targets = [
            target(TargetKind::Upstream, "fhir", "https://fhir.example.com", None),
            target(TargetKind::Jwks, "idp", "https://idp.example.com/jwks", Some("US")),
            target(TargetKind::Database, "main", "db.internal:5432", Some("JP")),
        ];
        let errors = check_declarations(&Jurisdiction::JP, &targets).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].to_string(),
            "upstream \"fhir\" (https://fhir.example.com): no jurisdiction declared; \
             add jurisdiction = \"JP\" to [upstreams.fhir] once you have confirmed \
             the server is located in Japan"
        );
        let foreign = errors[1].to_string();
        assert!(
            foreign.starts_with("jwks \"idp\" (https://idp.example.com/jwks): declared jurisdiction \"US\""),
            "{foreign}"
        );
        assert!(foreign.contains("only \"JP\" is allowed"), "{foreign}");
    }
}
