//! "Now" as Unix time, read from the system clock in one place.
//!
//! JWT `iat`/`exp`, revocation cut-offs and CLI output count in seconds; audit
//! records count in milliseconds. Both read `SystemTime` (kept synchronised
//! by the host, see [`crate::audit::time`]) and fall back to 0 if the clock is
//! set before 1970 rather than panicking on a request path.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (the unit of JWT NumericDate).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (the unit of audit record times).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let (s, ms) = (unix_now(), unix_now_ms());
        // After 2025-01-01 and the two reads at most a second apart.
        assert!(s > 1_735_689_600, "{s}");
        assert!((ms / 1000 - s).abs() <= 1, "{s} {ms}");
    }
}
