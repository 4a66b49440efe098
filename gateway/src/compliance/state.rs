//! What the report needs beyond the configuration: certificate expiry (read with the
//! same `tls::cert_check` functions as start-up), where every target resolves (the
//! `residency report`), and the access-record store (data keys and the `audit verify`
//! result, through the same functions as `phr-gateway keys` and `audit verify`).
//!
//! Gathering never fails and never panics: whatever cannot be read becomes evidence
//! saying why ("store unreachable: ..."), and the row that depends on it says so.

use crate::config::Config;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything read from outside the configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// Every server certificate of every listener.
    pub certificates: Vec<CertEvidence>,
    /// Every residency target, or why the report could not be made.
    pub residency: Option<Result<ResidencyEvidence, String>>,
    /// The access-record store.
    pub audit_store: AuditStoreState,
}

/// One server certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertEvidence {
    /// Config key, e.g. `listeners[0].certificates[0]` (listener name in `listener`).
    pub key: String,
    /// The listener's name.
    pub listener: String,
    /// `cert_file`.
    pub file: PathBuf,
    /// Leaf subject.
    pub subject: Option<String>,
    /// Leaf notAfter, RFC 2822-ish as x509-parser prints it.
    pub not_after: Option<String>,
    /// Whole days until notAfter (negative when expired).
    pub days_left: Option<i64>,
    /// What start-up would refuse (expired, weak key, SHA-1, unreadable), if anything.
    pub problem: Option<String>,
}

/// The residency report, reduced to what the disclosure shows.
#[derive(Debug, Clone, Serialize)]
pub struct ResidencyEvidence {
    /// The jurisdiction every target must be in.
    pub required: String,
    /// One line per target address.
    pub rows: Vec<TargetEvidence>,
    /// Every problem, as the residency report words it.
    pub problems: Vec<String>,
    /// No problems.
    pub ok: bool,
}

/// One target address.
#[derive(Debug, Clone, Serialize)]
pub struct TargetEvidence {
    /// upstream, jwks, database, redis ...
    pub kind: String,
    /// Name in the configuration.
    pub name: String,
    /// Declared jurisdiction.
    pub jurisdiction: Option<String>,
    /// Address, when resolved.
    pub address: Option<String>,
    /// allow_list, in_cluster, refused, unresolved.
    pub result: String,
    /// Acceptable.
    pub ok: bool,
}

/// What the store says.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuditStoreState {
    /// Not read (access records disabled, or state not gathered).
    #[default]
    NotRead,
    /// The SQLite file does not exist yet: no gateway has written to it.
    NotCreated {
        /// The file.
        file: String,
    },
    /// The store, or a key, could not be read.
    Unreachable {
        /// Why.
        reason: String,
    },
    /// Read.
    Read {
        /// Data keys, newest first (at most 10).
        keys: Vec<KeyEvidence>,
        /// Data keys in total.
        key_count: usize,
        /// The `audit verify` result.
        verify: VerifyEvidence,
    },
}

/// One access-record data key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEvidence {
    /// Key id.
    pub key_id: String,
    /// Id of the key-encryption key that wraps it now.
    pub kek_id: String,
    /// Creation time, RFC 3339.
    pub created: String,
}

/// Outcome of `audit verify` run now.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum VerifyEvidence {
    /// Every chain and checkpoint checked out; the summary line.
    Intact(String),
    /// Tampering or an over-long unvouched tail; the report.
    Failed(String),
    /// Not run, and why (no signing key yet, store error).
    NotRun(String),
}

/// Gathers the state for `config` (loaded from `path`).
pub async fn gather(path: &Path, config: &Config) -> State {
    State {
        certificates: certificates(config),
        residency: Some(residency(path).await),
        audit_store: audit_store(path, config).await,
    }
}

/// Every listener certificate, checked as start-up checks it.
pub fn certificates(config: &Config) -> Vec<CertEvidence> {
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        for (j, c) in l.certificates.iter().enumerate() {
            out.push(certificate(
                format!("listeners[{i}].certificates[{j}]"),
                &l.name,
                &c.cert_file,
            ));
        }
    }
    out
}

fn certificate(key: String, listener: &str, file: &Path) -> CertEvidence {
    let mut ev = CertEvidence {
        key,
        listener: listener.to_string(),
        file: file.to_path_buf(),
        subject: None,
        not_after: None,
        days_left: None,
        problem: None,
    };
    let chain = match crate::tls::cert_check::read_chain(file) {
        Ok(chain) => chain,
        Err(e) => {
            ev.problem = Some(e.to_string());
            return ev;
        }
    };
    if let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&chain[0]) {
        ev.subject = Some(leaf.subject().to_string());
        let not_after = leaf.validity().not_after;
        ev.not_after = Some(not_after.to_string());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        ev.days_left = Some((not_after.timestamp() - now).div_euclid(86_400));
    }
    if let Err(e) = crate::tls::cert_check::check_chain(&chain) {
        ev.problem = Some(e.to_string());
    }
    ev
}

/// The residency report, as `phr-gateway residency report --json` prints it.
async fn residency(path: &Path) -> Result<ResidencyEvidence, String> {
    // DNS for every target; bounded so an unreachable resolver does not hang the report.
    let answer = tokio::time::timeout(Duration::from_secs(20), crate::residency::commands::report(path, true))
        .await
        .map_err(|_| "the residency report did not finish within 20 s (DNS?)".to_string())?
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&answer.0).map_err(|e| e.to_string())?;
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let rows = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| TargetEvidence {
                    kind: s(&r["kind"]).unwrap_or_default(),
                    name: s(&r["name"]).unwrap_or_default(),
                    jurisdiction: s(&r["jurisdiction"]),
                    address: s(&r["address"]),
                    result: s(&r["result"]).unwrap_or_default(),
                    ok: r["ok"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ResidencyEvidence {
        required: s(&v["required_jurisdiction"]).unwrap_or_default(),
        rows,
        problems: v["problems"]
            .as_array()
            .map(|p| p.iter().filter_map(s).collect())
            .unwrap_or_default(),
        ok: answer.1,
    })
}

/// The SQLite file of a `sqlite://PATH?...` URL.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

async fn audit_store(path: &Path, config: &Config) -> AuditStoreState {
    if !config.audit.enabled {
        return AuditStoreState::NotRead;
    }
    let url = config.store.url.clone().unwrap_or_default();
    // Reading must not create the database (or a key) that `run` would create.
    if let Some(file) = sqlite_file(&url) {
        if !file.exists() {
            return AuditStoreState::NotCreated {
                file: file.display().to_string(),
            };
        }
    }
    let store = match crate::audit::startup::open_store(config) {
        Ok(store) => store,
        Err(e) => return AuditStoreState::Unreachable { reason: e.to_string() },
    };
    let keys = match tokio::time::timeout(Duration::from_secs(15), store.audit_keys()).await {
        Ok(Ok(keys)) => keys,
        Ok(Err(e)) => return AuditStoreState::Unreachable { reason: e.to_string() },
        Err(_) => {
            return AuditStoreState::Unreachable {
                reason: "no answer within 15 s".to_string(),
            }
        }
    };
    store.close().await;
    let mut data: Vec<_> = keys.into_iter().filter(|k| k.purpose == "data").collect();
    data.sort_by_key(|k| std::cmp::Reverse(k.created_ms));
    let key_count = data.len();
    let keys = data
        .into_iter()
        .take(10)
        .map(|k| KeyEvidence {
            created: crate::audit::time::format_rfc3339_ms(k.created_ms),
            key_id: k.key_id,
            kek_id: k.kek_id,
        })
        .collect();
    AuditStoreState::Read {
        keys,
        key_count,
        verify: verify(path, config).await,
    }
}

/// `audit verify`, exactly as the command runs it, when the signing key exists (the
/// command would create one otherwise).
async fn verify(path: &Path, config: &Config) -> VerifyEvidence {
    if !config.audit.signing_key_file.exists() {
        return VerifyEvidence::NotRun(format!(
            "no checkpoint signing key yet ({})",
            config.audit.signing_key_file.display()
        ));
    }
    match tokio::time::timeout(Duration::from_secs(60), crate::ops::verify(path)).await {
        Ok(Ok(text)) => VerifyEvidence::Intact(text.lines().last().unwrap_or_default().to_string() + &summary(&text)),
        Ok(Err(crate::ops::OpsError::NotIntact(text))) => VerifyEvidence::Failed(text),
        Ok(Err(e)) => VerifyEvidence::NotRun(e.to_string()),
        Err(_) => VerifyEvidence::NotRun("audit verify did not finish within 60 s".to_string()),
    }
}

/// The chain lines of a verify report, after its result line.
fn summary(text: &str) -> String {
    let chains: Vec<&str> = text.lines().filter(|l| l.starts_with("chain ")).collect();
    match chains.is_empty() {
        true => String::new(),
        false => format!(" ({})", chains.join("; ")),
    }
}
