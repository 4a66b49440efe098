//! Every metric the gateway exports, in one table (EX-IDS-1: counters for refusals, auth
//! failures, throttling, egress refusals).
//!
//! The table is the catalogue an operator reads: [`super::install`] registers each entry's
//! `# HELP` text and unit with the recorder, the dashboard and alert rules in
//! `deploy/monitoring/` may only name metrics listed here (checked by
//! `deploy/monitoring/check.sh`), and a unit test fails when source code records a
//! `phr_*` metric that is missing from the table.
//!
//! Naming (Prometheus conventions): base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total`, a gauge that is a Unix time ends in `_timestamp_seconds`.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset on restart); the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count` samples).
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The metric (family) name as recorded; counters include `_total`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit of its values (already part of the name when it has one).
    pub unit: Unit,
    /// Its labels, for the reader (not enforced by the recorder).
    pub labels: &'static [&'static str],
    /// The `# HELP` text: what it counts, and what a change means for the operator.
    pub help: &'static str,
}

const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels,
        help,
    }
}

const fn gauge(name: &'static str, unit: Unit, labels: &'static [&'static str], help: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        kind: Kind::Gauge,
        unit,
        labels,
        help,
    }
}

/// The certificate-expiry gauge; rendered by the admin listener from the active
/// configuration at each scrape (not through the recorder), so a replaced certificate
/// leaves no stale series behind to trip the expiry alert.
pub const CERT_EXPIRY: &str = "phr_tls_certificate_expiry_timestamp_seconds";

/// The catalogue: every `phr_*` metric, sorted by area.
pub const METRICS: &[MetricSpec] = &[
    // Requests.
    counter(
        "phr_requests_total",
        &["route", "status"],
        "Responses sent, by route (\"none\" when no route matched) and HTTP status (\"other\" outside the pre-registered list).",
    ),
    MetricSpec {
        name: "phr_request_duration_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &["route"],
        help: "Time from the request's arrival to its response head, in seconds, by route.",
    },
    counter(
        "phr_request_panics_total",
        &[],
        "Requests answered 500 because a phase panicked (a gateway defect; the process kept serving).",
    ),
    // Connections and TLS.
    gauge(
        "phr_active_connections",
        Unit::Count,
        &[],
        "Client connections open now (TLS handshake included).",
    ),
    counter(
        "phr_connections_refused_total",
        &["reason"],
        "Client connections closed before TLS, by reason: max_connections, per_ip_cap, handshake_rate.",
    ),
    counter(
        "phr_connections_timed_out_total",
        &["reason"],
        "Client connections closed by a limit's clock, by reason: header_read (a request head not complete within limits.header_read_timeout: slowloris), idle (nothing in flight for limits.idle_timeout).",
    ),
    counter(
        "phr_tls_handshakes_total",
        &["listener", "version"],
        "Completed TLS handshakes, by listener and negotiated protocol version.",
    ),
    counter(
        "phr_tls_handshake_failures_total",
        &["listener", "reason"],
        "Refused or failed TLS handshakes, by listener and reason (timeout, protocol_version, no_shared_cipher, client_cert_required, bad_certificate, unknown_ca, not_tls, eof, ...).",
    ),
    gauge(
        CERT_EXPIRY,
        Unit::Seconds,
        &["section", "role", "subject"],
        "Unix time (notAfter) at which a certificate of the active configuration expires; section is listeners.NAME or upstreams.NAME, role is server, client_ca, upstream_client or upstream_ca.",
    ),
    counter(
        "phr_config_reloads_total",
        &["result"],
        "Configuration reloads, by result: ok, or rejected (the last good configuration kept serving).",
    ),
    // Authentication.
    counter(
        "phr_auth_refused_total",
        &["code"],
        "Requests refused by token verification, by error code (invalid_token, expired, unknown_kid, insufficient_scope, ...).",
    ),
    counter(
        "phr_auth_lockouts_total",
        &["scope"],
        "Sources or subjects locked out after repeated authentication failures, by scope.",
    ),
    counter(
        "phr_jwks_fetches_total",
        &["issuer", "kind", "result"],
        "JWKS and discovery fetches per issuer, by kind (scheduled, unknown_kid, discovery) and result (success, failure).",
    ),
    // Limits.
    counter(
        "phr_rate_limit_refused_total",
        &["policy"],
        "Requests refused with 429 by a rate-limit policy, by policy.",
    ),
    counter(
        "phr_rate_limit_overflow_total",
        &["policy"],
        "Times a local rate-limit policy's key table was full (keys tracked together under an overflow key).",
    ),
    counter(
        "phr_rate_limit_redis_errors_total",
        &["policy", "mode"],
        "Shared rate-limit checks that could not reach Redis, by policy and on_redis_error mode.",
    ),
    counter(
        "phr_rate_limit_redis_short_circuited_total",
        &["policy", "mode"],
        "Shared rate-limit checks decided without Redis because its circuit breaker was open.",
    ),
    gauge(
        "phr_rate_limit_redis_breaker_open",
        Unit::Count,
        &[],
        "1 while the Redis circuit breaker is open (shared policies apply their on_redis_error mode), else 0.",
    ),
    counter(
        "phr_rate_limit_redis_breaker_transitions_total",
        &["state"],
        "Redis circuit breaker transitions, by the state entered (open, closed).",
    ),
    counter(
        "phr_bulk_access_alerts_total",
        &["blocked"],
        "Subjects that read more distinct patients than allowed, by whether they were blocked.",
    ),
    counter(
        "phr_upload_refused_total",
        &["reason"],
        "Uploads refused by the content filter, by reason.",
    ),
    // Upstreams.
    gauge(
        "phr_endpoint_healthy",
        Unit::Count,
        &["upstream", "endpoint"],
        "1 while an upstream endpoint is in service, 0 while it is ejected (failed probes or connections).",
    ),
    gauge(
        "phr_route_healthy_endpoints",
        Unit::Count,
        &["route"],
        "Endpoints in service behind a route; 0 means the route answers 503.",
    ),
    gauge(
        "phr_routes_without_healthy_endpoint",
        Unit::Count,
        &[],
        "Routes with no endpoint in service (each answers 503 until one recovers).",
    ),
    counter(
        "phr_upstream_probes_total",
        &["upstream", "endpoint", "result"],
        "Active health probes, by upstream, endpoint and result (ok, failed).",
    ),
    counter(
        "phr_endpoint_ejections_total",
        &["upstream", "endpoint"],
        "Times an upstream endpoint was taken out of service.",
    ),
    counter(
        "phr_upstream_errors_total",
        &["upstream", "kind"],
        "Upstream requests that failed, by upstream and kind (connect, request).",
    ),
    counter(
        "phr_upstream_connections_opened_total",
        &[],
        "Upstream connections opened (each one passed the residency check).",
    ),
    counter(
        "phr_egress_refused_total",
        &["target"],
        "Outbound connections refused by the residency policy, by target.",
    ),
    gauge(
        "phr_websocket_tunnels_active",
        Unit::Count,
        &[],
        "WebSocket tunnels open now.",
    ),
    counter(
        "phr_websocket_tunnels_idle_closed_total",
        &[],
        "WebSocket tunnels closed after the idle timeout with no traffic either way.",
    ),
    // Access records (LOG-ACC-1).
    counter(
        "phr_audit_records_committed_total",
        &[],
        "Access records committed to the database.",
    ),
    counter(
        "phr_audit_transactions_total",
        &[],
        "Database transactions of the access-record writer (group commits).",
    ),
    counter(
        "phr_audit_records_spooled_total",
        &[],
        "Access records written to the local spool because the database was unreachable (rising: the database is down).",
    ),
    counter(
        "phr_audit_records_replayed_total",
        &[],
        "Spooled access records replayed into the database.",
    ),
    counter(
        "phr_audit_records_dropped_total",
        &[],
        "Access records dropped (best-effort mode only) because neither the database nor the spool took them.",
    ),
    counter(
        "phr_audit_failed_records_total",
        &[],
        "Requests refused because their access record could be neither committed nor spooled (above zero: act now).",
    ),
    counter(
        "phr_audit_checkpoints_total",
        &[],
        "Hash-chain checkpoints written.",
    ),
];

/// The catalogue entry of `name`, if any.
pub fn lookup(name: &str) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every `"phr_…"` string literal in the Rust files under `dir`.
    fn phr_literals(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("source directory is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                phr_literals(&path, out);
            } else if path.ends_with("metrics/catalogue.rs") {
                // The table itself (and this test) name every metric.
                continue;
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file is readable");
                for piece in text.split("\"phr_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if piece[name.len()..].starts_with('"') {
                        out.insert(format!("phr_{name}"));
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_recorded_in_the_source_is_in_the_catalogue() {
        let mut used = BTreeSet::new();
        phr_literals(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut used);
        assert!(used.contains("phr_requests_total"), "the scan found nothing: {used:?}");
        let missing: Vec<_> = used.iter().filter(|n| lookup(n).is_none()).collect();
        assert!(
            missing.is_empty(),
            "add these to metrics::catalogue::METRICS: {missing:?}"
        );
        let unused: Vec<_> = METRICS
            .iter()
            .map(|m| m.name)
            // CERT_EXPIRY is rendered by the admin listener through the constant.
            .filter(|n| !used.contains(*n) && *n != CERT_EXPIRY)
            .collect();
        assert!(unused.is_empty(), "catalogue entries no code records: {unused:?}");
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("phr_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{} is not snake_case",
                m.name
            );
            assert!(
                !m.help.is_empty() && !m.help.contains('\n'),
                "{}: one-line help",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "counter {} must end in _total", m.name),
                _ => assert!(!m.name.ends_with("_total"), "only counters end in _total: {}", m.name),
            }
            if m.unit == Unit::Seconds {
                assert!(m.name.ends_with("_seconds"), "{} is in seconds: name it so", m.name);
            }
            for non_base in ["_milliseconds", "_ms", "_kilobytes", "_minutes", "_hours", "_percent"] {
                assert!(!m.name.contains(non_base), "{}: use base units", m.name);
            }
        }
    }
}
