//! Prometheus metrics (LOG-MAINT-1, AV-DOS-1 monitoring).
//!
//! Per-route handles are registered when a route is built, so the request path increments
//! a counter it already holds instead of hashing label sets on every request.
//!
//! [`catalogue`] lists every metric with its help text; [`openmetrics`] serves the
//! OpenMetrics text format to scrapers that ask for it.

pub mod catalogue;
pub mod openmetrics;

use catalogue::Kind;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
            .expect("static bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails if another recorder was installed first (a test harness); metrics
        // then go to that recorder and /metrics shows ours, empty. Not a safety issue.
        let _ = metrics::set_global_recorder(recorder);
        describe_all();
        handle
    })
}

/// Registers the `# HELP` text and unit of every catalogue entry, so every family in a
/// scrape carries both `# HELP` and `# TYPE`.
fn describe_all() {
    for m in catalogue::METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Prometheus text lines for one gauge family rendered outside the recorder: `# HELP`
/// (from the catalogue), `# TYPE`, then one sample per label set. Label values are
/// escaped as the text format requires (`\`, `"`, newline).
pub fn render_gauge_family(out: &mut String, name: &str, samples: &[(Vec<(&str, String)>, f64)]) {
    use std::fmt::Write;
    if samples.is_empty() {
        return;
    }
    if let Some(spec) = catalogue::lookup(name) {
        let _ = writeln!(out, "# HELP {name} {}", spec.help.replace('\\', "\\\\"));
    }
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
    out.push('\n');
}

/// How often recorded histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the histogram samples recorded since the last call into their buckets, every
/// `every`, for as long as the runtime runs.
///
/// Why: the Prometheus recorder keeps every sample of a histogram (a value and a
/// timestamp: about 16 bytes per request for `phr_request_duration_seconds`, measured)
/// until something drains them. A scrape of `/metrics` does, but a gateway nobody
/// scrapes would grow without bound, about 1.4 GB a day at 1,000 requests/s (AV-DOS-1:
/// memory must not depend on uptime). The exporter runs this itself only when it also
/// serves the HTTP endpoint; here our admin listener serves `/metrics`, so we run it.
pub fn spawn_upkeep(handle: &'static PrometheusHandle, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Status codes with a pre-registered counter; anything else is counted under "other".
const STATUSES: [u16; 20] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 502, 503, 504,
];

/// The metric handles of one route.
pub struct RouteMetrics {
    by_status: Vec<Counter>,
    other: Counter,
    latency: Histogram,
}

impl RouteMetrics {
    /// Registers `phr_requests_total` (one counter per status in the fixed list, plus
    /// "other") and `phr_request_duration_seconds` for the route named `route`.
    pub fn new(route: &str) -> Self {
        let by_status = STATUSES
            .iter()
            .map(|s| metrics::counter!("phr_requests_total", "route" => route.to_string(), "status" => s.to_string()))
            .collect();
        Self {
            by_status,
            other: metrics::counter!("phr_requests_total", "route" => route.to_string(), "status" => "other"),
            latency: metrics::histogram!("phr_request_duration_seconds", "route" => route.to_string()),
        }
    }

    /// Counts one response with its status and records its latency, in seconds.
    pub fn record(&self, status: u16, seconds: f64) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.by_status[i].increment(1),
            None => self.other.increment(1),
        }
        self.latency.record(seconds);
    }
}

/// Counts a request refused with 429 by the rate-limit policy `policy`. Only refusals
/// are counted here (admitted requests are `phr_requests_total`), so the request path
/// pays for the label lookup only when it refuses.
pub fn rate_limit_refused(policy: &str) {
    metrics::counter!("phr_rate_limit_refused_total", "policy" => policy.to_string()).increment(1);
}

/// Copies the access-record writer's counters into the registry; called at
/// each scrape, so the writer itself never touches the metrics recorder.
/// `phr_audit_failed_records_total` above zero means requests were refused
/// because their record could be neither committed nor spooled (LOG-ACC-1).
pub fn audit_writer(s: &crate::audit::writer::WriterStats) {
    for (name, value) in [
        ("phr_audit_records_committed_total", s.committed),
        ("phr_audit_transactions_total", s.transactions),
        ("phr_audit_records_spooled_total", s.spooled),
        ("phr_audit_records_replayed_total", s.replayed),
        ("phr_audit_records_dropped_total", s.dropped),
        ("phr_audit_failed_records_total", s.failed),
        ("phr_audit_checkpoints_total", s.checkpoints),
    ] {
        metrics::counter!(name).absolute(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_rendered_outside_the_recorder_has_help_type_and_escaped_labels() {
        let mut out = String::new();
        render_gauge_family(&mut out, catalogue::CERT_EXPIRY, &[]);
        assert_eq!(out, "", "no samples, no family");
        let labels = vec![
            ("section", "listeners.public".to_string()),
            ("subject", "CN=a \"b\"\\c\nd".to_string()),
        ];
        render_gauge_family(&mut out, catalogue::CERT_EXPIRY, &[(labels, 1_936_742_400.0)]);
        let help = catalogue::lookup(catalogue::CERT_EXPIRY).unwrap().help;
        assert_eq!(
            out,
            format!(
                "# HELP {n} {help}\n# TYPE {n} gauge\n{n}{{section=\"listeners.public\",subject=\"CN=a \\\"b\\\"\\\\c\\nd\"}} 1936742400\n\n",
                n = catalogue::CERT_EXPIRY
            )
        );
    }
}
