//! The traffic mix: a small TOML file of weighted interactions (see `mixes/phr-day.toml`,
//! the default, embedded in the binary).

use serde::Deserialize;
use std::path::Path;

/// The default mix, a PHR app's day.
pub const DEFAULT_MIX: &str = include_str!("../mixes/phr-day.toml");

/// Whose token an interaction sends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// The synthetic patient's own token (patient-scoped, `patient` claim; `amr` shows
    /// two factors, `pwd` + `otp`).
    Patient,
    /// A practitioner's token (`user/*.rs`), reading across patients.
    Practitioner,
    /// A backend service's token (`system/*.rs`).
    System,
    /// The patient's token, expired an hour ago: must be refused.
    Expired,
    /// The patient's token with one factor only (`amr: ["pwd"]`): refused on a route that
    /// requires two.
    OneFactor,
    /// The virtual user's DPoP-bound token (`cnf.jkt` of its own key, for its own
    /// patient) with a fresh proof (RFC 9449), as `Authorization: DPoP`.
    Dpop,
    /// Re-sends, unchanged (URL, token, proof), the last request of this run's `dpop`
    /// interaction with the same method and path that was answered as expected: a replayed
    /// proof, which must be refused. Until one was answered, its turn sends that one.
    DpopReplay,
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
        let mix = Mix {
            interactions: mix.interactions.into_iter().filter(|i| i.weight > 0).collect(),
        };
        for (i, it) in mix.interactions.iter().enumerate() {
            if it.token == TokenKind::DpopReplay && mix.replay_source(i).is_none() {
                return Err(format!(
                    "mix {origin}: interaction '{}' (token = \"dpop-replay\") needs an interaction with \
                     token = \"dpop\", weight above 0 and the same method and path, whose proofs it replays",
                    it.name
                ));
            }
        }
        Ok(mix)
    }

    /// For a `dpop-replay` interaction, the `dpop` interaction whose answered requests it
    /// replays (same method and path).
    pub fn replay_source(&self, idx: usize) -> Option<usize> {
        let r = &self.interactions[idx];
        if r.token != TokenKind::DpopReplay {
            return None;
        }
        self.interactions
            .iter()
            .position(|i| i.token == TokenKind::Dpop && i.method == r.method && i.path == r.path)
    }

    /// Whether any interaction sends a DPoP-bound token (then every user gets a key).
    pub fn uses_dpop(&self) -> bool {
        self.interactions.iter().any(|i| i.token == TokenKind::Dpop)
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
    fn default_mix_has_dpop_and_two_factor_interactions_and_their_refusals() {
        let mix = Mix::load(None).unwrap();
        let find = |t: TokenKind| mix.interactions.iter().position(|i| i.token == t).unwrap();
        let replay = find(TokenKind::DpopReplay);
        assert_eq!(mix.replay_source(replay), Some(find(TokenKind::Dpop)));
        assert_eq!(mix.interactions[replay].expect, [401]);
        assert_eq!(mix.interactions[find(TokenKind::OneFactor)].expect, [401]);
        assert!(mix.uses_dpop());
    }

    #[test]
    fn a_replay_without_its_dpop_interaction_is_refused() {
        let m = "[[interaction]]\nname='d'\nweight=1\npath='/a'\ntoken='dpop'\nexpect=[200]\n\
                 [[interaction]]\nname='r'\nweight=1\npath='/b'\ntoken='dpop-replay'\nexpect=[401]\n";
        assert!(Mix::parse(m, "t").unwrap_err().contains("'r'"));
        assert!(Mix::parse(&m.replace("'/b'", "'/a'"), "t").is_ok());
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
