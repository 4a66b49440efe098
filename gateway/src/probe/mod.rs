//! `phr-gateway probe`: checks a running deployment from outside (issue 20 item 3) and,
//! with `probe upstreams`, every configured upstream from the gateway's own host
//! (item 4), repeatably, for integration pipelines.
//!
//! What is checked and the requirement each check gives evidence for:
//! - [`tls`]: protocol versions (EX-TLS-1), suites and key-exchange groups (EX-TLS-4),
//!   the certificate's chain, name and expiry (EX-TLS-4);
//! - HSTS on responses (EX-TLS-3);
//! - [`tokens`]: forged tokens are refused (AUTH-ID-1);
//! - [`patients`]: a patient's token cannot read or search another patient (ACL-ROLE-1,
//!   ACL-PHR-1);
//! - [`leaks`]: error responses carry no internals (stack traces, backend addresses,
//!   versions; supports AV-PATCH-1);
//! - [`upstreams`]: resolution and residency of every upstream address (DATA-JP-1), TCP
//!   reachability, TLS and the gateway's client certificate (EX-MTLS-1), FHIR `metadata`.
//!
//! Every check yields one [`Check`]; a [`Report`] is what the command prints (one line
//! per check), writes as JUnit XML ([`junit`]) and, with `--json`, as the evidence that
//! the compliance report can attach (shape in `docs/probe.md`).

pub mod deployment;
pub mod http;
pub mod junit;
pub mod leaks;
pub mod patients;
pub mod target;
pub mod tls;
pub mod tokens;
pub mod upstreams;

use serde::Serialize;
use std::time::{Duration, Instant};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The deployment does what the check asks.
    Pass,
    /// It does not; the detail says what was seen and how to fix it.
    Fail,
    /// The check could not run with the given input (e.g. no `--token`).
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL` or `SKIP`, for the human-readable lines.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One check: a stable dotted name (e.g. `tls.versions`), its outcome, what was seen, and
/// how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name; pipelines and the compliance report key on it.
    pub name: String,
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// What was seen (and, on failure, what to change).
    pub detail: String,
    /// Wall-clock time of the check in milliseconds.
    pub duration_ms: u64,
}

impl Check {
    /// A check with the time elapsed since `started`.
    pub fn new(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>, started: Instant) -> Self {
        Self {
            name: name.into(),
            outcome,
            detail: detail.into(),
            duration_ms: millis(started.elapsed()),
        }
    }

    /// A passing check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>, started: Instant) -> Self {
        Self::new(name, Outcome::Pass, detail, started)
    }

    /// A failing check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, started: Instant) -> Self {
        Self::new(name, Outcome::Fail, detail, started)
    }

    /// A skipped check.
    pub fn skip(name: impl Into<String>, detail: impl Into<String>, started: Instant) -> Self {
        Self::new(name, Outcome::Skip, detail, started)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Everything one probe run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `probe` or `probe upstreams`.
    pub kind: String,
    /// The probed URL, or the configuration file.
    pub target: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Total wall-clock time in milliseconds.
    pub duration_ms: u64,
    /// True when no check failed.
    pub ok: bool,
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Checks that were skipped.
    pub skipped: usize,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    /// Summarises `checks`.
    pub fn new(kind: &str, target: &str, started_at: String, started: Instant, checks: Vec<Check>) -> Self {
        let count = |o: Outcome| checks.iter().filter(|c| c.outcome == o).count();
        let failed = count(Outcome::Fail);
        Self {
            kind: kind.to_string(),
            target: target.to_string(),
            started_at,
            duration_ms: millis(started.elapsed()),
            ok: failed == 0,
            passed: count(Outcome::Pass),
            failed,
            skipped: count(Outcome::Skip),
            checks,
        }
    }

    /// One line per check (`PASS  tls.versions  detail  (12 ms)`) and a summary line.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{}  {:width$}  {}  ({} ms)\n",
                c.outcome.label(),
                c.name,
                c.detail,
                c.duration_ms
            ));
        }
        out.push_str(&format!(
            "{}: {} passed, {} failed, {} skipped in {} ms",
            self.target, self.passed, self.failed, self.skipped, self.duration_ms
        ));
        out
    }
}

/// The current time as RFC 3339 (UTC), for [`Report::started_at`].
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Input the probe cannot work with (exit status 2): a bad URL, an unreadable CA file,
/// a configuration that does not load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeInputError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_outcomes_and_fails_on_any_failure() {
        let t = Instant::now();
        let checks = vec![
            Check::pass("a", "ok", t),
            Check::fail("b", "bad", t),
            Check::skip("c", "no input", t),
        ];
        let r = Report::new("probe", "https://x", now_rfc3339(), t, checks);
        assert!(!r.ok);
        assert_eq!((r.passed, r.failed, r.skipped), (1, 1, 1));
        let text = r.render_text();
        assert!(text.contains("FAIL  b  bad"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][1]["outcome"], "fail");
    }
}
