//! The traffic mix: a small TOML file of weighted interactions (see `mixes/phr-day.toml`,
//! the default, embedded in the binary).

use serde::Deserialize;
use std::path::Path;

/// The default mix, a PHR app's day.
pub const DEFAULT_MIX: &str = include_str!("../mixes/phr-day.toml");

/// Whose token an interaction sends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// The synthetic patient's own token (patient-scoped, `patient` claim).
    Patient,
    /// A practitioner's token (`user/*.rs`), reading across patients.
    Practitioner,
    /// A backend service's token (`system/*.rs`).
    System,
    /// The patient's token, expired an hour ago: must be refused.
    Expired,
    /// No `Authorization` header.
    None,
}

/// One request kind of the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    /// Label in the reports.
    pub name: String,
    /// Relative share of requests.
    pub weight: usize,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path template (placeholders `{patient}`, `{other}`, `{obs}`, `{today}`).
    pub path: String,
    /// Body template, sent as `application/fhir+json`.
    #[serde(default)]
    pub body: Option<String>,
    /// Whose token is sent.
    pub token: TokenKind,
    /// Statuses this interaction must get.
    pub expect: Vec<u16>,
    /// At most this many per load-generator process and run (then its turns go to the
    /// next interaction): for refusals that trip the gateway's failed-authentication
    /// back-off (AUTH-LOCK-1), which would lock the load generator's address out.
    #[serde(default)]
    pub max_per_run: Option<u64>,
}

fn default_method() -> String {
    "GET".into()
}

/// A parsed mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// The interactions, in file order.
    #[serde(rename = "interaction")]
    pub interactions: Vec<Interaction>,
}

impl Mix {
    /// Parses and checks a mix; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mix: Mix = toml::from_str(text).map_err(|e| format!("mix {origin}: {e}"))?;
        mix.interactions.retain_check(origin)?;
        Ok(Mix {
            interactions: mix.interactions.into_iter().filter(|i| i.weight > 0).collect(),
        })
    }

    /// Loads a mix file, or the default mix when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        match path {
            None => Self::parse(DEFAULT_MIX, "(default phr-day)"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("mix {}: {e}", p.display()))?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }
}

trait Check {
    fn retain_check(&self, origin: &str) -> Result<(), String>;
}

impl Check for Vec<Interaction> {
    fn retain_check(&self, origin: &str) -> Result<(), String> {
        if self.iter().all(|i| i.weight == 0) {
            return Err(format!(
                "mix {origin}: no interaction has a weight above 0; give at least one a weight"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for i in self {
            if !seen.insert(i.name.as_str()) {
                return Err(format!(
                    "mix {origin}: interaction name '{}' is used twice; names must be unique",
                    i.name
                ));
            }
            if i.expect.is_empty() {
                return Err(format!(
                    "mix {origin}: interaction '{}' has an empty `expect`; list the statuses it must get",
                    i.name
                ));
            }
            if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&i.method.as_str()) {
                return Err(format!(
                    "mix {origin}: interaction '{}': method '{}' is not one of GET, POST, PUT, DELETE, PATCH",
                    i.name, i.method
                ));
            }
            if !i.path.starts_with('/') {
                return Err(format!(
                    "mix {origin}: interaction '{}': path must start with '/'",
                    i.name
                ));
            }
        }
        Ok(())
    }
}

/// Fills a template's placeholders.
pub fn fill(template: &str, patient: &str, other: &str, obs: &str, today: &str) -> String {
    template
        .replace("{patient}", patient)
        .replace("{other}", other)
        .replace("{obs}", obs)
        .replace("{today}", today)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mix_parses_and_has_refusals() {
        let mix = Mix::load(None).unwrap();
        assert!(mix.interactions.len() >= 10);
        assert!(mix
            .interactions
            .iter()
            .any(|i| i.token == TokenKind::Expired && i.expect == [401]));
    }

    #[test]
    fn shipped_direct_backend_mix_parses() {
        let mix = Mix::parse(include_str!("../mixes/direct-backend.toml"), "direct").unwrap();
        assert_eq!(mix.interactions.len(), 3);
    }

    #[test]
    fn unknown_keys_and_duplicates_are_refused() {
        let bad = "[[interaction]]\nname='a'\nweight=1\npath='/x'\ntoken='patient'\nexpect=[200]\nexpct=[1]\n";
        assert!(Mix::parse(bad, "t").unwrap_err().contains("expct"));
        let dup = "[[interaction]]\nname='a'\nweight=1\npath='/x'\ntoken='patient'\nexpect=[200]\n".repeat(2);
        assert!(Mix::parse(&dup, "t").unwrap_err().contains("used twice"));
    }
}
