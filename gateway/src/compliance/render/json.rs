//! The JSON form: the [`Report`] as is, with `schema_version` first. Documented by
//! `docs/compliance-report.schema.json` (checked in a test), stable enough to diff
//! between releases: rows are in disclosure order and evidence lines in config order.

use crate::compliance::evaluate::Report;

/// Pretty-printed JSON.
pub fn render(report: &Report) -> String {
    // Serializing plain data (strings, numbers, vectors) cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
