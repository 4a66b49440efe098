//! The サービス仕様適合開示書 (service specification conformance disclosure) generated
//! from the running configuration and state (GOV-AGR-1, GOV-INFO-1, ONL-1), and the
//! security lint of `check-config --security`.
//!
//! One source: [`catalogue`] (the table `controls.toml`, compiled in) lists every
//! control with its requirement IDs; `docs/compliance.md` is generated from it
//! ([`docs`]) and the report evaluates the same rows ([`evaluate`]) against the
//! configuration and what [`state`] reads (certificates, the residency report, the
//! access-record store). The organisational rows come from the operator profile
//! ([`profile`]). [`mod@render`] makes Markdown, HTML or JSON of it; [`lint`] is the lint.

pub mod catalogue;
pub mod docs;
pub mod evaluate;
pub mod lint;
pub mod profile;
pub mod render;
pub mod state;

#[cfg(test)]
mod tests;

use crate::config::{Config, LoadError};
use evaluate::{Origin, Report};
use render::Lang;
use std::path::Path;

/// Why a report or lint could not be made (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    /// The configuration does not load.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The operator profile does not load.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// The compiled-in table is inconsistent (a defect).
    #[error("{0}")]
    Catalogue(String),
    /// The report could not be written.
    #[error("{file}: cannot write the report: {source}")]
    Write {
        /// The output file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Output form of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown.
    Md,
    /// One self-contained HTML page.
    Html,
    /// Versioned JSON (`docs/compliance-report.schema.json`).
    Json,
}

impl Format {
    /// Parses `md`, `html` or `json`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "md" => Some(Format::Md),
            "html" => Some(Format::Html),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

fn load_profile(path: Option<&Path>) -> Result<Option<profile::Profile>, ComplianceError> {
    Ok(path.map(profile::load).transpose()?)
}

fn table() -> Result<&'static catalogue::Catalogue, ComplianceError> {
    catalogue::catalogue().map_err(|e| ComplianceError::Catalogue(e.to_string()))
}

/// Evaluates a loaded configuration with gathered state (the pure part, for tests and
/// embedding programs).
pub fn evaluate_with(
    config: &Config,
    state: &state::State,
    profile: Option<&profile::Profile>,
    origin: &Origin,
) -> Result<Report, ComplianceError> {
    Ok(evaluate::evaluate(table()?, config, state, profile, origin))
}

/// Loads the configuration (and profile), reads the state and evaluates every row.
pub async fn report(config_path: &Path, profile_path: Option<&Path>) -> Result<Report, ComplianceError> {
    let config = crate::config::load(config_path)?;
    let profile = load_profile(profile_path)?;
    let state = state::gather(config_path, &config).await;
    let origin = Origin {
        config_file: config_path.display().to_string(),
        profile_file: profile_path.map(|p| p.display().to_string()),
        generated_at: crate::audit::time::format_rfc3339_ms(crate::audit::time::now_ms()),
    };
    evaluate_with(&config, &state, profile.as_ref(), &origin)
}

/// Renders a report.
pub fn render(report: &Report, format: Format, lang: Lang) -> String {
    match format {
        Format::Md => render::md::render(report, lang),
        Format::Html => render::html::render(report, lang),
        Format::Json => render::json::render(report),
    }
}

/// `docs/compliance.md` as generated from the table.
pub fn docs_text() -> Result<String, ComplianceError> {
    Ok(docs::render(table()?))
}

/// The security lint of a configuration file (and optional profile).
pub fn security_lint(config_path: &Path, profile_path: Option<&Path>) -> Result<Vec<lint::Finding>, ComplianceError> {
    let config = crate::config::load(config_path)?;
    let profile = load_profile(profile_path)?;
    Ok(lint::lint(&config, profile.as_ref()))
}

/// Writes the Japanese HTML report for `config_path` to `out` (used by the demo).
pub async fn write_html(config_path: &Path, out: &Path) -> Result<(), ComplianceError> {
    let report = report(config_path, None).await?;
    std::fs::write(out, render(&report, Format::Html, Lang::Ja)).map_err(|source| ComplianceError::Write {
        file: out.display().to_string(),
        source,
    })
}
