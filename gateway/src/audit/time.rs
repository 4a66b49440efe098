//! UTC timestamps as RFC 3339 with milliseconds, from the system clock.
//!
//! LOG-TIME-1 asks for a reliable time source aligned with standard time.
//! The gateway does not keep its own clock: it reads `SystemTime`, which the
//! host keeps synchronised by NTP/chrony (e.g. against NICT); the gateway's
//! start-up check refuses to run when the host reports the clock as not
//! synchronised, and each record carries that state in
//! [`super::record::AccessRecord::clock_synchronized`]. The calendar work is
//! the `time` crate's; this module fixes the one format the audit trail uses.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// A timestamp that is not `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an RFC 3339 timestamp (expected e.g. 2025-04-01T09:30:00.000Z): {0:?}")]
pub struct TimeError(pub String);

/// Milliseconds since the Unix epoch, now, from the (NTP-synchronised) system clock.
pub use crate::util::clock::unix_now_ms as now_ms;

/// Formats unix milliseconds as `2025-04-01T00:30:00.123Z`: always three
/// fractional digits and `Z`. Times beyond the `time` crate's years ±9999
/// (never a real record time) are clamped to that range.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(if ms < 0 {
        OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT)
    } else {
        OffsetDateTime::new_utc(time::Date::MAX, time::Time::MAX)
    });
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format).unwrap_or_else(|_| ms.to_string())
}

/// Parses RFC 3339 (`Z` or `±HH:MM` offset, optional fraction, `T`, `t` or a
/// space between date and time) to unix milliseconds, dropping digits past the
/// millisecond; used for export time ranges and reading records back.
pub fn parse_rfc3339(s: &str) -> Result<i64, TimeError> {
    let err = || TimeError(s.to_string());
    // The `time` crate takes any separator character; RFC 3339 names these.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return Err(err());
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| err())?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|_| err())
}

/// Serde adapter: store `i64` unix milliseconds as an RFC 3339 string.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the timestamp as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339_ms(*ms))
    }

    /// Reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(1_743_467_400_123), "2025-04-01T00:30:00.123Z");
        assert_eq!(parse_rfc3339("2025-04-01T00:30:00.123Z"), Ok(1_743_467_400_123));
        assert_eq!(parse_rfc3339("2025-04-01T09:30:00+09:00"), Ok(1_743_467_400_000));
        assert_eq!(parse_rfc3339("2024-02-29T23:59:59.5Z"), Ok(1_709_251_199_500));
        for ms in [-1, 951_782_400_000, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339_ms(ms)), Ok(ms));
        }
        assert!(parse_rfc3339("2025-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
