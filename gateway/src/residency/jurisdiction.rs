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
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ResidencyError;

/// An ISO 3166-1 alpha-2 country code naming where a server is located.
///
/// Kept as a validated two-letter code rather than a free string so that
/// `"jp"`, `"JPN"` or `"Japan"` cannot silently fail to match `"JP"` and be
/// treated as "some other country" (or worse, as equal by a sloppy
/// comparison elsewhere). Parsing is strict; errors suggest the fix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction([u8; 2]);

impl Jurisdiction {
    /// Japan, the only jurisdiction DATA-JP-1 accepts for medical data.
    pub const JP: Jurisdiction = Jurisdiction(*b"JP");

    /// Parses and validates a code such as `"JP"`.
    ///
    /// Exists so that configuration typos are rejected at start-up with a
    /// message saying what to write instead, never at connection time.
    pub fn parse(text: &str) -> Result<Self, JurisdictionError> {
        let given = text.to_owned();
        if text.is_empty() {
            return Err(JurisdictionError::Empty);
        }
        let bytes = text.as_bytes();
        if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_uppercase) {
            let code = [bytes[0], bytes[1]];
            if is_user_assigned(code) {
                return Err(JurisdictionError::UserAssigned { given });
            }
            return Ok(Jurisdiction(code));
        }
        // Work out the most likely intended code for the error message.
        let trimmed = text.trim();
        let upper = trimmed.to_ascii_uppercase();
        if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(JurisdictionError::NotCanonical {
                given,
                suggestion: upper,
            });
        }
        let suggestion = match upper.as_str() {
            "JPN" | "JAPAN" | "日本" => Some("JP".to_owned()),
            _ => None,
        };
        Err(JurisdictionError::NotAlpha2 { given, suggestion })
    }

    /// The code as text, e.g. `"JP"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII uppercase by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// A human name for messages ("Japan" for JP, the code otherwise), so
    /// fix messages read naturally without shipping a country table.
    pub fn describe(&self) -> String {
        if *self == Self::JP {
            "Japan".to_owned()
        } else {
            format!("the country with ISO code {}", self.as_str())
        }
    }
}

/// ISO 3166-1 reserves these for private use; they never name a country, so
/// accepting one would let a placeholder pass as a real declaration.
fn is_user_assigned(code: [u8; 2]) -> bool {
    matches!(code, [b'A', b'A'] | [b'Q', b'M'..=b'Z'] | [b'X', _] | [b'Z', b'Z'])
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jurisdiction({})", self.as_str())
    }
}

impl FromStr for Jurisdiction {
    type Err = JurisdictionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Jurisdiction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Jurisdiction {
    /// Validates while deserializing so a bad code in the config file is a
    /// config error with the fix message, not a runtime refusal.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a jurisdiction string was rejected; each message says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JurisdictionError {
    /// Nothing was written; an empty declaration must not count as one.
    #[error("jurisdiction is empty; write the ISO 3166-1 alpha-2 code of the country where the server is located, e.g. \"JP\"")]
    Empty,
    /// Right letters, wrong form (lower case or surrounding spaces).
    #[error("jurisdiction {given:?} must be two upper-case letters; write {suggestion:?}")]
    NotCanonical {
        /// The text as given.
        given: String,
        /// The canonical spelling to use instead.
        suggestion: String,
    },
    /// Not a two-letter code at all (a name, an alpha-3 code, ...).
    #[error("jurisdiction {given:?} is not an ISO 3166-1 alpha-2 code (two letters A-Z){}", match suggestion { Some(s) => format!("; write {s:?}"), None => String::from("; for Japan write \"JP\"") })]
    NotAlpha2 {
        /// The text as given.
        given: String,
        /// The code we think was meant, if any.
        suggestion: Option<String>,
    },
    /// A private-use code (AA, QM-QZ, XA-XZ, ZZ) such as a placeholder "XX".
    #[error("jurisdiction {given:?} is a user-assigned ISO 3166-1 code, not a country; write the real country code, e.g. \"JP\"")]
    UserAssigned {
        /// The text as given.
        given: String,
    },
}

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
    /// allows private and loopback addresses for it (see [`super::policy::Policy`]).
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
    fn parses_valid_codes() {
        assert_eq!(Jurisdiction::parse("JP").unwrap(), Jurisdiction::JP);
        assert_eq!("US".parse::<Jurisdiction>().unwrap().as_str(), "US");
        assert_eq!(Jurisdiction::JP.to_string(), "JP");
    }

    #[test]
    fn lower_case_is_refused_with_suggestion() {
        let err = Jurisdiction::parse("jp").unwrap_err();
        assert_eq!(
            err,
            JurisdictionError::NotCanonical {
                given: "jp".into(),
                suggestion: "JP".into()
            }
        );
        assert!(err.to_string().contains("write \"JP\""), "{err}");
        assert!(matches!(
            Jurisdiction::parse(" JP"),
            Err(JurisdictionError::NotCanonical { .. })
        ));
    }

    #[test]
    fn malformed_codes_are_refused() {
        assert_eq!(Jurisdiction::parse(""), Err(JurisdictionError::Empty));
        let err = Jurisdiction::parse("Japan").unwrap_err();
        assert!(err.to_string().contains("write \"JP\""), "{err}");
        assert!(matches!(
            Jurisdiction::parse("JPN"),
            Err(JurisdictionError::NotAlpha2 { suggestion: Some(ref s), .. }) if s == "JP"
        ));
        for bad in ["J", "J1", "JPX", "ＪＰ", "J-"] {
            assert!(Jurisdiction::parse(bad).is_err(), "{bad} accepted");
        }
        for placeholder in ["XX", "ZZ", "AA", "QM"] {
            assert!(matches!(
                Jurisdiction::parse(placeholder),
                Err(JurisdictionError::UserAssigned { .. })
            ));
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

    #[test]
    fn deserialize_validates() {
        // serde's value deserializer stands in for the config file format.
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let ok: StrDeserializer<'_, Error> = "JP".into_deserializer();
        assert_eq!(Jurisdiction::deserialize(ok).unwrap(), Jurisdiction::JP);
        let bad: StrDeserializer<'_, Error> = "jp".into_deserializer();
        let err = Jurisdiction::deserialize(bad).unwrap_err().to_string();
        assert!(err.contains("write \"JP\""), "{err}");
    }
}
