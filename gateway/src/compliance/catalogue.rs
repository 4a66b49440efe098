//! The one table of controls (`controls.toml`, compiled in): requirement IDs, the
//! disclosure group, the Japanese and English key phrases, what the gateway does, the
//! code and tests that show it, who is responsible, whether it is mandatory and which
//! evaluator judges it. `docs/compliance.md` and the compliance report are both made
//! from it (GOV-AGR-1: the disclosure is generated, so it cannot drift).

use serde::Deserialize;
use std::sync::OnceLock;

/// The table's source, compiled into the binary.
pub const SOURCE: &str = include_str!("controls.toml");

/// The whole table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Title of `docs/compliance.md`.
    pub title: String,
    /// Introduction of `docs/compliance.md` (Markdown).
    pub intro: String,
    /// The "not in scope" paragraph of `docs/compliance.md`.
    pub not_in_scope: String,
    /// Sections of `docs/compliance.md`, in order.
    pub docs_sections: Vec<DocsSection>,
    /// Sections of the disclosure, in its order.
    pub groups: Vec<Group>,
    /// The controls, in the order of `docs/compliance.md` within each section.
    pub controls: Vec<Control>,
}

/// A section of `docs/compliance.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocsSection {
    /// Key that controls refer to.
    pub key: String,
    /// Heading.
    pub title: String,
    /// Header of the "what" column.
    pub what_header: String,
}

/// A section of the disclosure (組織的安全管理対策, 物理的安全対策, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Key that controls refer to; also the JSON value.
    pub key: String,
    /// Japanese heading.
    pub ja: String,
    /// English heading.
    pub en: String,
}

/// Who answers for a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Responsibility {
    /// The gateway enforces or evidences it.
    Gateway,
    /// The hosting platform (data centre, cluster, network, clock).
    Platform,
    /// The operating institution or provider (people, contracts, certifications).
    Institution,
}

/// One control: a row of `docs/compliance.md`, one or more rows of the report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The ID column of `docs/compliance.md` (may name several IDs).
    pub label: String,
    /// Requirement IDs covered; the report has one row per ID.
    pub ids: Vec<String>,
    /// Section of `docs/compliance.md`.
    pub docs_section: String,
    /// Section of the disclosure.
    pub group: String,
    /// Key phrase of the requirement, Japanese.
    pub ja: String,
    /// Key phrase of the requirement, English.
    pub en: String,
    /// What the gateway does (Markdown).
    pub what: String,
    /// Where the code is (Markdown).
    pub code: String,
    /// Which tests show it (Markdown).
    pub tests: String,
    /// Who answers for it.
    pub responsibility: Responsibility,
    /// Must be on: `--strict` fails when it is not met.
    pub mandatory: bool,
    /// The evaluator (see `evaluate.rs`).
    pub check: String,
}

/// Why the compiled-in table is unusable (a defect caught by the unit tests).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Not TOML or an unknown key.
    #[error("gateway/src/compliance/controls.toml: {0}")]
    Toml(String),
    /// A reference to a section or group that does not exist, or a duplicate ID.
    #[error("gateway/src/compliance/controls.toml: {0}")]
    Inconsistent(String),
}

/// Parses and cross-checks a table.
pub fn parse(source: &str) -> Result<Catalogue, CatalogueError> {
    let cat: Catalogue = toml::from_str(source).map_err(|e| CatalogueError::Toml(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for c in &cat.controls {
        if !cat.docs_sections.iter().any(|s| s.key == c.docs_section) {
            return Err(CatalogueError::Inconsistent(format!(
                "{}: docs_section {:?} is not in [[docs_sections]]",
                c.label, c.docs_section
            )));
        }
        if !cat.groups.iter().any(|g| g.key == c.group) {
            return Err(CatalogueError::Inconsistent(format!(
                "{}: group {:?} is not in [[groups]]",
                c.label, c.group
            )));
        }
        if c.ids.is_empty() {
            return Err(CatalogueError::Inconsistent(format!("{}: ids is empty", c.label)));
        }
        for id in &c.ids {
            if !seen.insert(id.clone()) {
                return Err(CatalogueError::Inconsistent(format!("{id} appears in two controls")));
            }
        }
    }
    Ok(cat)
}

/// The compiled-in table. Its consistency is a unit test, so this cannot fail in a
/// released binary; should it, the error says which row is wrong.
pub fn catalogue() -> Result<&'static Catalogue, &'static CatalogueError> {
    static CELL: OnceLock<Result<Catalogue, CatalogueError>> = OnceLock::new();
    CELL.get_or_init(|| parse(SOURCE)).as_ref()
}
