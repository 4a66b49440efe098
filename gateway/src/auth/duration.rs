//! Durations in configuration: integer seconds (`60`) or a string with a
//! unit (`"500ms"`, `"60s"`, `"5m"`, `"12h"`, `"1d"`), so operators can
//! write what they mean and a bare number keeps its traditional meaning.

use std::time::Duration;

use serde::Deserialize;

/// Parse `"500ms"`, `"60s"`, `"5m"`, `"12h"`, `"1d"` or bare seconds `"60"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"60s\", \"5m\""))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        u => return Err(format!("invalid duration unit {u:?} in {s:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} too large"))
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
