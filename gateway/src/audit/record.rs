//! What one access record holds (LOG-ACC-1, LOG-ACC-2, DATA-INT-1, DATA-RES-1).
//!
//! LOG-ACC-1 (「ログイン時刻、アクセス時間及びログイン中に操作した医療情報が
//! 特定できる」) and LOG-ACC-2 ask that the log identify who accessed, when,
//! for how long, and which patient's information was operated on; DATA-INT-1
//! asks for provenance of changes (who changed which resource when). Each
//! field below serves one of those. DATA-RES-1 forbids patient data
//! accumulating outside the medical information system, so a record holds
//! *references* only: never request or response bodies, never tokens, never
//! query values (a search such as `?name=山田` would otherwise leak PHI into
//! the log). [`scrub_path`] keeps query parameter names and drops values.
//! The whole record is encrypted at rest (see `crypto`), so patient ids are
//! kept as-is inside it and only their keyed hashes are searchable.

use serde::{Deserialize, Serialize};

/// Whether the gateway let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessDecision {
    /// Forwarded to the upstream (whatever the upstream answered).
    Allowed,
    /// Refused by the gateway; `reason` says which safeguard.
    Refused,
}

/// One request as seen by the gateway. Built by the pipeline after the
/// response is complete and handed to [`super::writer::AuditHandle::record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// When the request arrived, UTC unix ms from the NTP-synchronised system
    /// clock (LOG-TIME-1); serialised as RFC 3339 with milliseconds.
    #[serde(with = "super::time::rfc3339_ms")]
    pub time: i64,
    /// Whether the host reported its clock synchronised at the last check
    /// (LOG-TIME-1: lets a reviewer discount times from an unsynced host).
    #[serde(default)]
    pub clock_synchronized: Option<bool>,
    /// The gateway's request id (also in the response and the app log).
    pub request_id: String,
    /// Which gateway instance handled it.
    pub instance: String,
    /// Client address as seen by the gateway (after trusted-proxy handling).
    pub source_ip: String,
    /// Negotiated TLS version, e.g. `TLSv1.3`.
    #[serde(default)]
    pub tls_version: Option<String>,
    /// SHA-256 fingerprint (hex) of the mTLS client certificate.
    #[serde(default)]
    pub client_cert_fingerprint: Option<String>,
    /// Subject DN of the mTLS client certificate.
    #[serde(default)]
    pub client_cert_subject: Option<String>,
    /// Token `iss`.
    #[serde(default)]
    pub token_issuer: Option<String>,
    /// Token `sub`: the user (LOG-ACC-1's "who").
    #[serde(default)]
    pub subject: Option<String>,
    /// Token `client_id` / `azp`: the application.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Token `jti`, so a revoked token's use can be traced (not the token itself).
    #[serde(default)]
    pub jti: Option<String>,
    /// Token `amr`: how the user authenticated (2FA evidence).
    #[serde(default)]
    pub auth_factors: Vec<String>,
    /// Token `iat`/login time if known, unix seconds (LOG-ACC-1 login time).
    #[serde(default)]
    pub session_start: Option<i64>,
    /// Patient ids whose data the request touched (LOG-ACC-2's patient).
    #[serde(default)]
    pub patients: Vec<String>,
    /// FHIR interaction code (`read`, `vread`, `search-type`, `create`,
    /// `update`, `patch`, `delete`, `history-instance`, `operation`, ...).
    #[serde(default)]
    pub interaction: Option<String>,
    /// FHIR resource type, e.g. `Observation`.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// FHIR resource id, if the request named one.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Name of the configured route that matched.
    pub route: String,
    /// Request path with query values removed, see [`scrub_path`].
    pub path: String,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Allowed or refused.
    pub decision: AccessDecision,
    /// Machine-readable refusal reason (e.g. `scope_missing`), or empty.
    #[serde(default)]
    pub reason: Option<String>,
    /// Request body bytes received (count only).
    #[serde(default)]
    pub bytes_in: u64,
    /// Response body bytes sent (count only).
    #[serde(default)]
    pub bytes_out: u64,
    /// Time from request head to end of response (LOG-ACC-1's access duration).
    #[serde(default)]
    pub latency_ms: u64,
    /// Upstream name from the configuration.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Upstream socket address actually used.
    #[serde(default)]
    pub upstream_addr: Option<String>,
}

/// Path with every query value replaced by `***` (names kept, order kept,
/// fragment dropped): `/fhir/Observation?patient=123&code=x` becomes
/// `/fhir/Observation?patient=***&code=***`. Names are kept because they
/// say what kind of search it was; values may be names or ids of patients.
/// Characters outside a conservative set in names are replaced by `_`, so a
/// value smuggled into a name (`?山田` or `?a%3Db`) does not survive either.
pub fn scrub_path(path_and_query: &str) -> String {
    let no_fragment = path_and_query.split('#').next().unwrap_or("");
    let (path, query) = match no_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (no_fragment, None),
    };
    let mut out = path.to_string();
    if let Some(q) = query {
        let parts: Vec<String> = q
            .split(['&', ';'])
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                let safe: String = name
                    .chars()
                    .take(64)
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("{safe}=***")
            })
            .collect();
        if !parts.is_empty() {
            out.push('?');
            out.push_str(&parts.join("&"));
        }
    }
    out
}

/// Query parameter names only (for the FHIR export's query entity).
pub fn query_names(scrubbed_path: &str) -> Vec<String> {
    scrubbed_path
        .split_once('?')
        .map(|(_, q)| q.split('&').map(|p| p.trim_end_matches("=***").to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_values_keeps_names() {
        assert_eq!(
            scrub_path("/fhir/Observation?patient=123&code=http://loinc.org|1234-5#frag"),
            "/fhir/Observation?patient=***&code=***"
        );
        assert_eq!(scrub_path("/fhir/Patient?name=山田太郎"), "/fhir/Patient?name=***");
        assert_eq!(scrub_path("/fhir/Patient?山田"), "/fhir/Patient?__=***");
        assert_eq!(scrub_path("/fhir/Patient/123"), "/fhir/Patient/123");
        assert_eq!(scrub_path("/x?"), "/x");
        assert_eq!(query_names("/x?a=***&b=***"), vec!["a", "b"]);
    }
}
