//! The periodic access review (LOG-ACC-1, ACL-ACCT-1).
//!
//! LOG-ACC-1 asks not only that access be recorded but that the records be
//! *reviewed periodically*. This report gives a reviewer the usual starting
//! points as plain text: who made the most requests, who accessed outside
//! working hours (Asia/Tokyo, UTC+9, no DST), who touched unusually many
//! patients, and what was refused and why. Subjects that show up here but
//! should not exist any more are candidates for the block list (ACL-ACCT-1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use super::super::store::Store;
use super::crypto::KeyEncryptionKey;
use super::export::{read_records, ExportQuery, StoredRecord};
use super::record::AccessDecision;
use super::time::format_rfc3339_ms;
use super::AuditError;

/// Review settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewConfig {
    /// Start of working hours (local hour, inclusive).
    pub work_start_hour: u32,
    /// End of working hours (local hour, exclusive).
    pub work_end_hour: u32,
    /// Whether Saturdays and Sundays count as off-hours.
    pub weekends_off: bool,
    /// Local offset from UTC in hours; Japan Standard Time is +9 all year.
    pub utc_offset_hours: i64,
    /// Rows per ranking.
    pub top_n: usize,
    /// A subject touching at least this many distinct patients is listed.
    pub many_patients: usize,
    /// Off-hours entries listed in detail (the count is always complete).
    pub max_off_hours_listed: usize,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            work_start_hour: 8,
            work_end_hour: 20,
            weekends_off: true,
            utc_offset_hours: 9,
            top_n: 10,
            many_patients: 20,
            max_off_hours_listed: 50,
        }
    }
}

impl ReviewConfig {
    /// Local wall-clock text (`2025-04-01 09:30 JST`-style) for a UTC instant.
    fn local(&self, ms: i64) -> String {
        let t = format_rfc3339_ms(ms + self.utc_offset_hours * 3_600_000);
        format!("{} {} (UTC{:+})", &t[..10], &t[11..16], self.utc_offset_hours)
    }

    /// Whether a UTC instant falls outside working hours locally.
    pub fn is_off_hours(&self, ms: i64) -> bool {
        let local = ms + self.utc_offset_hours * 3_600_000;
        let hour = (local.rem_euclid(86_400_000) / 3_600_000) as u32;
        let weekday = (local.div_euclid(86_400_000) + 4).rem_euclid(7); // 0 = Sunday
        (self.weekends_off && (weekday == 0 || weekday == 6))
            || hour < self.work_start_hour
            || hour >= self.work_end_hour
    }
}

/// Decrypts the period's records and renders the review.
pub async fn review_report(
    store: &Store,
    kek: &dyn KeyEncryptionKey,
    from_ms: i64,
    to_ms: i64,
    cfg: &ReviewConfig,
) -> Result<String, AuditError> {
    let query = ExportQuery {
        from_ms,
        to_ms,
        ..Default::default()
    };
    Ok(render_review(
        &read_records(store, kek, &query).await?,
        from_ms,
        to_ms,
        cfg,
    ))
}

fn ranked<K: Ord + Clone>(counts: &HashMap<K, usize>, n: usize) -> Vec<(K, usize)> {
    let mut v: Vec<_> = counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Renders the review for already-decrypted records (pure; used by tests).
pub fn render_review(records: &[StoredRecord], from_ms: i64, to_ms: i64, cfg: &ReviewConfig) -> String {
    let mut out = String::new();
    let readable: Vec<_> = records.iter().filter_map(|r| r.record.as_ref().ok()).collect();
    let unreadable = records.len() - readable.len();
    let _ = writeln!(out, "ACCESS LOG REVIEW (LOG-ACC-1)");
    let _ = writeln!(out, "period: {} .. {}", cfg.local(from_ms), cfg.local(to_ms));
    let _ = writeln!(
        out,
        "records: {} ({} unreadable: key destroyed or damaged)",
        records.len(),
        unreadable
    );

    let who = |s: &Option<String>| s.clone().unwrap_or_else(|| "(no subject)".into());
    let mut by_subject: HashMap<String, usize> = HashMap::new();
    let mut patients: HashMap<String, HashSet<&str>> = HashMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut off_hours = Vec::new();
    for r in &readable {
        *by_subject.entry(who(&r.subject)).or_default() += 1;
        patients
            .entry(who(&r.subject))
            .or_default()
            .extend(r.patients.iter().map(String::as_str));
        if r.decision == AccessDecision::Refused {
            *refused
                .entry(r.reason.clone().unwrap_or_else(|| "(none)".into()))
                .or_default() += 1;
        }
        if cfg.is_off_hours(r.time) {
            off_hours.push(r);
        }
    }

    let _ = writeln!(out, "\n== top subjects by requests ==");
    for (s, n) in ranked(&by_subject, cfg.top_n) {
        let _ = writeln!(out, "{n:>8}  {s}");
    }

    let _ = writeln!(
        out,
        "\n== off-hours access (outside {:02}:00-{:02}:00{}, UTC{:+}): {} ==",
        cfg.work_start_hour,
        cfg.work_end_hour,
        if cfg.weekends_off { " and weekends" } else { "" },
        cfg.utc_offset_hours,
        off_hours.len()
    );
    for r in off_hours.iter().take(cfg.max_off_hours_listed) {
        let _ = writeln!(
            out,
            "  {}  {}  {} {}  patients={}  status={}",
            cfg.local(r.time),
            who(&r.subject),
            r.method,
            r.path,
            r.patients.len(),
            r.status
        );
    }
    if off_hours.len() > cfg.max_off_hours_listed {
        let _ = writeln!(out, "  ... {} more", off_hours.len() - cfg.max_off_hours_listed);
    }

    let _ = writeln!(
        out,
        "\n== subjects touching >= {} distinct patients ==",
        cfg.many_patients
    );
    let wide: HashMap<String, usize> = patients
        .iter()
        .filter(|(_, p)| p.len() >= cfg.many_patients)
        .map(|(s, p)| (s.clone(), p.len()))
        .collect();
    if wide.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (s, n) in ranked(&wide, usize::MAX) {
        let _ = writeln!(out, "{n:>8}  {s}");
    }

    let _ = writeln!(out, "\n== refused requests by reason ==");
    if refused.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (reason, n) in &refused {
        let _ = writeln!(out, "{n:>8}  {reason}");
    }
    out
}
