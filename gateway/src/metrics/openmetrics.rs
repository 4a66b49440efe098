//! The OpenMetrics text format for `/metrics`, when the scraper asks for it.
//!
//! `metrics-exporter-prometheus` 0.18 renders only the Prometheus text format (0.0.4), so
//! this converts its output: the two formats share the sample syntax and differ in the
//! details a strict OpenMetrics parser rejects (no blank lines or free comments, a
//! counter's family name without `_total` while its samples keep it, `unknown` instead
//! of `untyped`, `"` escaped in `# HELP`, and a final `# EOF`).

use std::collections::HashMap;

/// The `Content-Type` of an OpenMetrics answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics: `application/openmetrics-text` with a
/// q-value above 0 and not below that of `text/plain` (Prometheus itself sends
/// `application/openmetrics-text;version=1.0.0;q=0.5,...,text/plain;version=0.0.4;q=0.3`).
/// Anything else, including no header, gets the Prometheus text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
            // An unparsable q-value counts as 0: the range is ignored.
            .unwrap_or(0.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// Converts the Prometheus text format (as the exporter renders it: no timestamps) to
/// OpenMetrics text, ending with `# EOF`.
pub fn from_prometheus_text(text: &str) -> String {
    let types: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name, kind.trim()))
        .collect();
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            out.push_str(family_name(name, &types));
            out.push(' ');
            // Prometheus text escapes only `\` and newline in help; OpenMetrics also `"`.
            out.push_str(&help.replace('"', "\\\""));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind.trim() {
                "untyped" => "unknown",
                k => k,
            };
            out.push_str("# TYPE ");
            out.push_str(family_name(name, &types));
            out.push(' ');
            out.push_str(kind);
        } else if line.starts_with('#') {
            // Free comments are not part of OpenMetrics.
            continue;
        } else {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(end);
            out.push_str(name);
            if types.get(name) == Some(&"counter") && !name.ends_with("_total") {
                out.push_str("_total");
            }
            out.push_str(rest);
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

/// The OpenMetrics family name of a Prometheus metric: a counter's without `_total`.
fn family_name<'a>(name: &'a str, types: &HashMap<&str, &str>) -> &'a str {
    match types.get(name) {
        Some(&"counter") => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = "\
# HELP phr_requests_total Responses sent, by \"route\".
# TYPE phr_requests_total counter
phr_requests_total{route=\"fhir\",status=\"200\"} 3
phr_requests_total{route=\"fhir\",status=\"404\"} 1

# TYPE legacy_events counter
legacy_events 2

# HELP phr_active_connections Client connections open now.
# TYPE phr_active_connections gauge
phr_active_connections 1

# HELP phr_request_duration_seconds Latency.
# TYPE phr_request_duration_seconds histogram
phr_request_duration_seconds_bucket{route=\"fhir\",le=\"0.5\"} 2
phr_request_duration_seconds_bucket{route=\"fhir\",le=\"+Inf\"} 4
phr_request_duration_seconds_sum{route=\"fhir\"} 0.75
phr_request_duration_seconds_count{route=\"fhir\"} 4

# TYPE mystery untyped
mystery 7
";

    #[test]
    fn converts_counters_help_types_and_ends_with_eof() {
        let om = from_prometheus_text(PROMETHEUS);
        let expected = "\
# HELP phr_requests Responses sent, by \\\"route\\\".
# TYPE phr_requests counter
phr_requests_total{route=\"fhir\",status=\"200\"} 3
phr_requests_total{route=\"fhir\",status=\"404\"} 1
# TYPE legacy_events counter
legacy_events_total 2
# HELP phr_active_connections Client connections open now.
# TYPE phr_active_connections gauge
phr_active_connections 1
# HELP phr_request_duration_seconds Latency.
# TYPE phr_request_duration_seconds histogram
phr_request_duration_seconds_bucket{route=\"fhir\",le=\"0.5\"} 2
phr_request_duration_seconds_bucket{route=\"fhir\",le=\"+Inf\"} 4
phr_request_duration_seconds_sum{route=\"fhir\"} 0.75
phr_request_duration_seconds_count{route=\"fhir\"} 4
# TYPE mystery unknown
mystery 7
# EOF
";
        assert_eq!(om, expected);
    }

    /// The structural rules of OpenMetrics 1.0 that the converter is responsible for,
    /// checked on its output: one metadata block per family before its samples, samples
    /// named after their family, counter samples ending in `_total`, no blank line, and
    /// `# EOF` last and only once.
    fn check_openmetrics(text: &str) -> Result<(), String> {
        let body = text.strip_suffix("# EOF\n").ok_or("does not end with # EOF")?;
        let mut families: HashMap<String, String> = HashMap::new();
        let mut current: Option<(String, String)> = None;
        for line in body.lines() {
            if line.is_empty() {
                return Err("blank line".into());
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
                if ![
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "unknown",
                    "info",
                    "stateset",
                    "gaugehistogram",
                ]
                .contains(&kind)
                {
                    return Err(format!("unknown type {kind}"));
                }
                if kind == "counter" && name.ends_with("_total") {
                    return Err(format!("counter family {name} must not end in _total"));
                }
                if families.insert(name.into(), kind.into()).is_some() {
                    return Err(format!("family {name} declared twice"));
                }
                current = Some((name.into(), kind.into()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                if families.contains_key(name) && current.as_ref().map(|c| c.0.as_str()) != Some(name) {
                    return Err(format!("HELP of {name} after its family ended"));
                }
            } else if line.starts_with('#') {
                return Err(format!("comment: {line}"));
            } else {
                let name = &line[..line.find(['{', ' ']).ok_or("sample without a value")?];
                let (family, kind) = current.as_ref().ok_or("sample before any TYPE")?;
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    _ => &[""],
                };
                if !suffixes.iter().any(|s| name == format!("{family}{s}")) {
                    return Err(format!("sample {name} does not belong to family {family} ({kind})"));
                }
            }
        }
        if body.contains("# EOF") {
            return Err("# EOF before the end".into());
        }
        Ok(())
    }

    #[test]
    fn the_output_satisfies_the_openmetrics_structure() {
        check_openmetrics(&from_prometheus_text(PROMETHEUS)).unwrap();
        // The checker can fail: Prometheus text as such is not OpenMetrics.
        assert!(check_openmetrics(&format!("{PROMETHEUS}# EOF\n")).is_err());
    }

    #[test]
    fn a_real_render_converts_to_valid_openmetrics() {
        let handle = crate::metrics::install();
        crate::metrics::RouteMetrics::new("om-test").record(200, 0.01);
        metrics::gauge!("phr_active_connections").set(0.0);
        let om = from_prometheus_text(&handle.render());
        check_openmetrics(&om).unwrap_or_else(|e| panic!("{e}:\n{om}"));
        assert!(om.contains("# TYPE phr_requests counter"), "{om}");
        assert!(om.contains("# HELP phr_requests Responses sent"), "{om}");
        assert!(
            om.contains("phr_requests_total{route=\"om-test\",status=\"200\"} 1"),
            "{om}"
        );
    }

    #[test]
    fn accept_negotiation_follows_q_values() {
        let prometheus_default = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus_default)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text; version=1.0.0")));
        assert!(wants_openmetrics(Some(
            "text/plain;q=0.5, application/openmetrics-text;q=0.5"
        )));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some(
            "text/plain, application/openmetrics-text;q=0.9"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=bogus")));
    }
}
