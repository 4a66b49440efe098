//! Durations in the `[auth]` configuration: integer seconds (`60`) or a
//! string in the `humantime` grammar the rest of the configuration uses
//! (`"500ms"`, `"60s"`, `"5m"`, `"12h"`, `"1d"`, `"1h30m"`), so operators
//! write what they mean and a bare number keeps its traditional meaning.
//!
//! The grammar is `humantime`'s, not a hand-written one; only two rules are
//! added here: a bare number (also as a string, `"60"`) is seconds, and a
//! duration is written without spaces (`"5m"`, not `"5 minutes"`).

use std::time::Duration;

use serde::Deserialize;

/// Why a duration in the configuration is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Bare seconds that do not fit in 64 bits.
    #[error("duration {0:?} too large")]
    TooLarge(String),
    /// A space inside the duration (`"5 minutes"`).
    #[error("invalid duration {0:?}: write it without spaces, e.g. \"60s\", \"5m\"")]
    Spaces(String),
    /// Not in the grammar; `reason` is humantime's.
    #[error("invalid duration {input:?} ({reason}): expected e.g. \"60s\", \"5m\"")]
    Invalid {
        /// What was written.
        input: String,
        /// What the parser found wrong.
        reason: String,
    },
}

/// Parse `"500ms"`, `"60s"`, `"5m"`, `"12h"`, `"1d"`, `"1h30m"` or bare seconds `"60"`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::TooLarge(s.to_string()));
    }
    if s.contains(char::is_whitespace) {
        return Err(DurationError::Spaces(s.to_string()));
    }
    humantime::parse_duration(s).map_err(|e| DurationError::Invalid {
        input: s.to_string(),
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

pub(crate) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(d)? {
        RawDuration::Secs(n) => Ok(Duration::from_secs(n)),
        RawDuration::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

pub(crate) fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn the_forms_the_auth_config_always_took_still_parse() {
        let secs = |n| Ok(Duration::from_secs(n));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), secs(60));
        assert_eq!(parse_duration("5m"), secs(300));
        assert_eq!(parse_duration("12h"), secs(43_200));
        assert_eq!(parse_duration("1d"), secs(86_400));
        assert_eq!(parse_duration("60"), secs(60));
        assert_eq!(parse_duration(" 10m "), secs(600));
        assert_eq!(parse_duration("0"), secs(0));
    }

    #[test]
    fn humantime_forms_are_accepted_without_spaces() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn spaces_bad_units_and_overflow_are_refused() {
        for bad in [
            "5 minutes",
            "60 s",
            "1h 30m",
            "",
            "s",
            "5x",
            "-5s",
            "99999999999999999999",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
