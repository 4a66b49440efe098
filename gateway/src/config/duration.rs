//! The one duration grammar of the configuration: a string with a unit, in the
//! `humantime` grammar (`"500ms"`, `"60s"`, `"5m"`, `"10min"`, `"12h"`, `"1d"`,
//! `"365days"`, `"1h30m"`), written without spaces. Every duration key of every table is
//! read through [`de_duration`] (or [`de_opt_duration`]), so `[auth]` and `[limits]`
//! accept exactly the same text.
//!
//! A bare number (`60`, or `"60"`) is refused with a message that says how to write
//! it: `[auth]` used to take bare seconds while every other table refused them, and a
//! number without a unit is exactly the mistake (seconds? milliseconds?) a unit avoids.

use std::time::Duration;

use serde::Deserialize;

/// Why a duration in the configuration is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A number without a unit (`60` or `"60"`).
    #[error("write durations with a unit, e.g. \"{0}s\" (a bare {0} is no longer accepted)")]
    NoUnit(String),
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

/// Parse `"500ms"`, `"60s"`, `"5m"`, `"12h"`, `"1d"`, `"1h30m"`; a bare number is refused.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(DurationError::NoUnit(s.to_string()));
    }
    if s.contains(char::is_whitespace) {
        return Err(DurationError::Spaces(s.to_string()));
    }
    humantime::parse_duration(s).map_err(|e| DurationError::Invalid {
        input: s.to_string(),
        reason: e.to_string(),
    })
}

/// What a duration key may hold in the file: text, or a number that is refused with
/// [`DurationError::NoUnit`] rather than serde's "invalid type".
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Int(u64),
    Float(f64),
    Text(String),
}

/// Reads a duration key (`#[serde(deserialize_with = "...")]`); see the module docs.
pub fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = match RawDuration::deserialize(d)? {
        RawDuration::Int(n) => return Err(serde::de::Error::custom(DurationError::NoUnit(n.to_string()))),
        RawDuration::Float(n) => return Err(serde::de::Error::custom(DurationError::NoUnit(n.to_string()))),
        RawDuration::Text(s) => s,
    };
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// [`de_duration`] for an optional key (use with `#[serde(default)]`).
pub fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::{de_duration, parse_duration, DurationError};
    use std::time::Duration;

    #[test]
    fn durations_with_a_unit_parse() {
        let secs = |n| Ok(Duration::from_secs(n));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), secs(60));
        assert_eq!(parse_duration("5m"), secs(300));
        assert_eq!(parse_duration("12h"), secs(43_200));
        assert_eq!(parse_duration("1d"), secs(86_400));
        assert_eq!(parse_duration("365days"), secs(31_536_000));
        assert_eq!(parse_duration("0s"), secs(0));
        assert_eq!(parse_duration(" 10m "), secs(600));
    }

    #[test]
    fn humantime_forms_are_accepted_without_spaces() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bare_numbers_are_refused_with_the_fix() {
        for bare in ["60", "0", "1.5", "99999999999999999999"] {
            assert_eq!(parse_duration(bare), Err(DurationError::NoUnit(bare.into())), "{bare}");
        }
        assert_eq!(
            parse_duration("60").unwrap_err().to_string(),
            "write durations with a unit, e.g. \"60s\" (a bare 60 is no longer accepted)"
        );
    }

    #[test]
    fn a_bare_integer_in_the_file_names_the_key_and_the_fix() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            #[serde(deserialize_with = "de_duration")]
            leeway: Duration,
        }
        let e = toml::from_str::<T>("leeway = 60").unwrap_err().to_string();
        assert!(
            e.contains("write durations with a unit, e.g. \"60s\" (a bare 60 is no longer accepted)"),
            "{e}"
        );
        assert!(e.contains("leeway"), "the key is named: {e}");
        let t: T = toml::from_str("leeway = \"60s\"").unwrap();
        assert_eq!(t.leeway, Duration::from_secs(60));
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
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    /// Every `Duration` key of every config table is read by [`de_duration`]: a field
    /// left to serde's own `Duration` (a `{ secs, nanos }` table) or to
    /// `humantime_serde` (which takes spaces and names no fix for a bare number) would
    /// be a second grammar.
    #[test]
    fn every_duration_key_uses_the_one_grammar() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config");
        let mut others = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let field = line.trim_start();
                let is_duration_field = field.starts_with("pub ")
                    && field.ends_with(',')
                    && (field.contains(": Duration,") || field.contains(": Option<Duration>,"));
                if !is_duration_field {
                    continue;
                }
                // The attributes and doc lines above the field (an attribute may span
                // lines), up to the previous field or the struct's opening brace.
                let attrs = lines[..i].iter().rev().take_while(|l| {
                    let l = l.trim();
                    !(l.is_empty() || l.starts_with("pub ") || l.ends_with('{') || l.ends_with('}'))
                });
                if !attrs
                    .into_iter()
                    .any(|l| l.contains("de_duration") || l.contains("de_opt_duration"))
                {
                    others.push(format!("{}:{}: {}", path.display(), i + 1, field));
                }
            }
        }
        assert!(
            others.is_empty(),
            "read these with #[serde(deserialize_with = \"crate::config::duration::de_duration\")] \
             (de_opt_duration with #[serde(default)] for an Option): {others:#?}"
        );
    }
}
