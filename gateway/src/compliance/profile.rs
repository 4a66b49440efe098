//! The operator profile (`--profile ORG.toml`): what the gateway cannot know about its
//! operator — people, the facility, certifications, SLA figures — for the organisational
//! rows of the disclosure (GOV-SPLIT-1, GOV-CERT-1/2, AV-BK-2, INC-VEN-1), and one fact
//! the security lint needs: whether institutions connect with client certificates
//! (EX-TLS-2). Parsed strictly like the gateway's config: a misspelt key is an error,
//! not a silently empty row. The documented template is `config/compliance-profile.toml`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole profile. Every field is optional; a missing one shows as "not stated".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `[organisation]`: who runs the service and answers for it.
    #[serde(default)]
    pub organisation: Organisation,
    /// `[people]`: 人的安全対策.
    #[serde(default)]
    pub people: People,
    /// `[physical]`: 物理的安全対策.
    #[serde(default)]
    pub physical: Physical,
    /// `[certifications]`: third-party certifications.
    #[serde(default)]
    pub certifications: Certifications,
    /// `[sla]`: service-level figures.
    #[serde(default)]
    pub sla: Sla,
    /// `[network]`: how institutions and patients connect.
    #[serde(default)]
    pub network: Network,
}

/// `[organisation]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Legal name of the provider.
    pub name: Option<String>,
    /// Name or role of the security officer (情報セキュリティ責任者 / 管理者).
    pub security_officer: Option<String>,
    /// Who administers the gateway (team, not personal names, if preferred).
    pub administrators: Option<String>,
    /// Where the responsibility-split (責任分界) document is.
    pub responsibility_split: Option<String>,
    /// Incident contact (phone, mail, hours).
    pub incident_contact: Option<String>,
}

/// `[people]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct People {
    /// Security training of staff (how often, by whom).
    pub training: Option<String>,
    /// Confidentiality agreements of staff and subcontractors.
    pub confidentiality: Option<String>,
    /// Rules for administrator credentials (no reuse, two factors ...).
    pub credentials: Option<String>,
}

/// `[physical]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Physical {
    /// The facility (data centre, cloud region) housing the gateway and its store.
    pub facility: Option<String>,
    /// Entry and exit control of that facility.
    pub entry_control: Option<String>,
    /// Disaster measures (earthquake, power, fire).
    pub disaster_measures: Option<String>,
    /// The NTP source of the hosts (LOG-TIME-1).
    pub time_source: Option<String>,
}

/// `[certifications]`: each a certificate number or scope, absent when not held.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certifications {
    /// ISMS (JIS Q 27001).
    pub isms: Option<String>,
    /// Privacy Mark (JIS Q 15001).
    pub privacy_mark: Option<String>,
    /// ISMAP registration.
    pub ismap: Option<String>,
    /// Any other (HISPRO, ITSMS, audit reports ...).
    #[serde(default)]
    pub other: Vec<String>,
}

/// `[sla]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Availability target, e.g. "99.9% per month".
    pub availability: Option<String>,
    /// Backup generations kept.
    pub backup_generations: Option<u32>,
    /// Backup method (e.g. daily snapshot + weekly offline copy).
    pub backup_method: Option<String>,
    /// Where backups are kept (must be in Japan, DATA-JP-1).
    pub backup_location: Option<String>,
    /// Notice given before planned maintenance.
    pub maintenance_notice: Option<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Institutions connect with TLS client certificates (EX-TLS-2, EX-MTLS-1): then
    /// every PHI route must be reachable only with one, and the lint and report say so
    /// when it is not.
    #[serde(default)]
    pub institutions_use_client_certificates: bool,
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{}: cannot read the profile: {source}. Fix: check the path given to --profile", file.display())]
    Read {
        /// The profile file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a wrong type.
    #[error("{}: {message}. Fix: compare with config/compliance-profile.toml", file.display())]
    Toml {
        /// The profile file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// Reads a profile strictly.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ProfileError::Toml {
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}
