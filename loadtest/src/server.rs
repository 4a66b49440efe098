//! The gateway's own `/metrics` (Prometheus text), scraped before and after the run so
//! the report shows server-side figures beside the client's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Server-side figures of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSide {
    /// The scraped URL.
    pub url: String,
    /// Why a scrape failed, if it did.
    pub error: Option<String>,
    /// Counter series (`name{labels}`) that changed during the run → increase.
    pub deltas: BTreeMap<String, f64>,
    /// Server-side request latency quantiles (ms) from `phr_request_duration_seconds`
    /// bucket increases: p50, p90, p99 (upper bucket bounds).
    pub latency_ms: BTreeMap<String, f64>,
}

/// Parses Prometheus text into `series → value` (comments skipped).
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Computes the run's server-side figures from two scrapes.
pub fn compare(url: &str, before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> ServerSide {
    let mut deltas = BTreeMap::new();
    // Keyed by the bound's bits: for non-negative floats (and +Inf) they order as the values.
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for (k, a) in after {
        let d = a - before.get(k).copied().unwrap_or(0.0);
        if k.starts_with("phr_request_duration_seconds_bucket") {
            if let Some(le) = label(k, "le") {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                let e = buckets.entry(le.to_bits()).or_default();
                *e += d;
            }
            continue;
        }
        let counter = k.contains("_total") || k.contains("_count") || k.contains("_sum");
        if counter && d != 0.0 {
            deltas.insert(k.clone(), d);
        }
    }
    let mut latency_ms = BTreeMap::new();
    // Cumulative buckets (summed over label sets): the quantile is the first bound reaching it.
    let total = buckets.get(&f64::INFINITY.to_bits()).copied().unwrap_or(0.0);
    if total > 0.0 {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            if let Some((le, _)) = buckets.iter().find(|(_, c)| **c >= q * total) {
                latency_ms.insert(name.to_string(), f64::from_bits(*le) * 1000.0);
            }
        }
    }
    ServerSide {
        url: url.into(),
        error: None,
        deltas,
        latency_ms,
    }
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    Some(&rest[..rest.find('"')?])
}

/// Scrapes `url`.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Result<BTreeMap<String, f64>, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("scraping {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("scraping {url}: status {}", resp.status()));
    }
    Ok(parse(&resp.text().await.map_err(|e| format!("scraping {url}: {e}"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_latency() {
        let b = parse("# HELP x\nphr_requests_total{status=\"200\"} 5\nphr_request_duration_seconds_bucket{le=\"0.01\"} 0\nphr_request_duration_seconds_bucket{le=\"+Inf\"} 0\n");
        let a = parse("phr_requests_total{status=\"200\"} 105\nphr_request_duration_seconds_bucket{le=\"0.01\"} 95\nphr_request_duration_seconds_bucket{le=\"0.1\"} 100\nphr_request_duration_seconds_bucket{le=\"+Inf\"} 100\n");
        let s = compare("u", &b, &a);
        assert_eq!(s.deltas["phr_requests_total{status=\"200\"}"], 100.0);
        assert_eq!(s.latency_ms["p50"], 10.0);
        assert_eq!(s.latency_ms["p99"], 100.0);
    }
}
