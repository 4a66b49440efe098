//! The run's report: `report.json` (everything, mergeable), `summary.md` and a
//! self-contained `report.html` with inline SVG plots (no script, no CDN).

use crate::server::ServerSide;
use crate::stats::{Bucket, Histogram, Series};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One load-generator process's run description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// Name given with `--node` (default: host name and pid).
    pub node: String,
    /// Target base URL.
    pub target: String,
    /// Load shape.
    pub shape: String,
    /// Run length in seconds.
    pub duration_s: f64,
    /// Users (concurrent request slots).
    pub users: usize,
    /// Synthetic patients.
    pub patients: usize,
    /// HTTP version asked for.
    pub http: String,
    /// First second (unix).
    pub started_unix: u64,
}

/// One second's row, per interaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Unix second.
    pub t: u64,
    /// Interaction name.
    pub interaction: String,
    /// Counters and histograms (not flattened: serde's flatten loses the integer map keys).
    pub bucket: Bucket,
}

/// Totals of a set of buckets.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Totals {
    /// Responses with expected statuses.
    pub ok: u64,
    /// Unexpected statuses (errors), including transport errors (status 0).
    pub unexpected: u64,
    /// 429s.
    pub throttled: u64,
    /// Mean `Retry-After` of the 429s (s).
    pub retry_after_mean_s: f64,
    /// Largest `Retry-After` (s).
    pub retry_after_max_s: f64,
    /// 429s without a `Retry-After`.
    pub retry_after_missing: u64,
    /// Unexpected status → count.
    pub unexpected_statuses: BTreeMap<u16, u64>,
    /// Expected responses per second over the active seconds.
    pub throughput_rps: f64,
    /// Latency percentiles (ms) from the intended send time: p50, p90, p99, p99.9.
    pub latency_ms: BTreeMap<String, f64>,
    /// Same from the actual send time.
    pub service_ms: BTreeMap<String, f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// The load-generator processes merged here.
    pub nodes: Vec<Node>,
    /// Per-second, per-interaction rows.
    pub rows: Vec<Row>,
    /// Totals over everything.
    pub totals: Totals,
    /// Totals per interaction.
    pub per_interaction: BTreeMap<String, Totals>,
    /// Server-side figures (one per node that scraped).
    pub server: Vec<ServerSide>,
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn quantiles(h: &Histogram) -> BTreeMap<String, f64> {
    QUANTILES
        .iter()
        .map(|(n, q)| (n.to_string(), round3(h.quantile_ms(*q))))
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn totals<'a>(buckets: impl Iterator<Item = (u64, &'a Bucket)>) -> Totals {
    let mut sum = Bucket::default();
    let mut seconds = std::collections::BTreeSet::new();
    for (t, b) in buckets {
        sum.merge(b);
        seconds.insert(t);
    }
    let span = match (seconds.first(), seconds.last()) {
        (Some(a), Some(b)) => (b - a + 1) as f64,
        _ => 1.0,
    };
    Totals {
        ok: sum.ok,
        unexpected: sum.unexpected,
        throttled: sum.throttled,
        retry_after_mean_s: if sum.throttled > sum.retry_after_missing {
            sum.retry_after_sum_s / (sum.throttled - sum.retry_after_missing) as f64
        } else {
            0.0
        },
        retry_after_max_s: sum.retry_after_max_s,
        retry_after_missing: sum.retry_after_missing,
        unexpected_statuses: sum.unexpected_statuses.clone(),
        throughput_rps: round3(sum.ok as f64 / span),
        latency_ms: quantiles(&sum.latency),
        service_ms: quantiles(&sum.service),
    }
}

impl Report {
    /// Builds a report from rows (recomputing all totals).
    pub fn build(nodes: Vec<Node>, rows: Vec<Row>, server: Vec<ServerSide>) -> Self {
        let all = totals(rows.iter().map(|r| (r.t, &r.bucket)));
        let mut names: Vec<&str> = rows.iter().map(|r| r.interaction.as_str()).collect();
        names.sort();
        names.dedup();
        let per_interaction = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    totals(rows.iter().filter(|r| r.interaction == *n).map(|r| (r.t, &r.bucket))),
                )
            })
            .collect();
        Report {
            version: 1,
            nodes,
            rows,
            totals: all,
            per_interaction,
            server,
        }
    }

    /// A report from one process's recorded series.
    pub fn from_series(node: Node, series: Series, server: Option<ServerSide>) -> Self {
        let rows = series
            .into_iter()
            .map(|((t, interaction), bucket)| Row { t, interaction, bucket })
            .collect();
        Self::build(vec![node], rows, server.into_iter().collect())
    }

    /// Merges reports of several load-generator processes (rows of one second and one
    /// interaction add up; the clocks of the machines are assumed in sync, e.g. NTP).
    pub fn merge(reports: Vec<Report>) -> Self {
        let mut series = Series::new();
        let (mut nodes, mut server) = (Vec::new(), Vec::new());
        for r in reports {
            nodes.extend(r.nodes);
            server.extend(r.server);
            for row in r.rows {
                series.entry((row.t, row.interaction)).or_default().merge(&row.bucket);
            }
        }
        let rows = series
            .into_iter()
            .map(|((t, interaction), bucket)| Row { t, interaction, bucket })
            .collect();
        Self::build(nodes, rows, server)
    }

    /// Writes `report.json`, `summary.md` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        w(
            "report.json",
            serde_json::to_string_pretty(self).map_err(|e| e.to_string())?,
        )?;
        w("summary.md", self.markdown())?;
        w("report.html", self.html())
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# phr-loadtest summary\n\n");
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "- node `{}`: {} against {}, {:.0} s, {} users, {} synthetic patients, HTTP {}",
                n.node, n.shape, n.target, n.duration_s, n.users, n.patients, n.http
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "\n**Throughput** {:.1} req/s (expected statuses) · **unexpected statuses** {} · **429s** {} (Retry-After mean {:.1} s, max {:.0} s, missing {})\n",
            t.throughput_rps, t.unexpected, t.throttled, t.retry_after_mean_s, t.retry_after_max_s, t.retry_after_missing
        );
        if !t.unexpected_statuses.is_empty() {
            let _ = writeln!(
                s,
                "Unexpected statuses (0 = no response): {:?}\n",
                t.unexpected_statuses
            );
        }
        s.push_str("| interaction | ok | unexpected | 429 | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut line = |name: &str, t: &Totals| {
            let q = |k: &str| t.latency_ms.get(k).copied().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                t.ok,
                t.unexpected,
                t.throttled,
                t.throughput_rps,
                q("p50"),
                q("p90"),
                q("p99"),
                q("p99.9")
            );
        };
        for (name, t) in &self.per_interaction {
            line(name, t);
        }
        line("**all**", &self.totals);
        s.push_str("\nLatency is measured from each request's intended send time (open model; corrects coordinated omission).\n");
        for srv in &self.server {
            let _ = writeln!(s, "\n## Server side ({})\n", srv.url);
            if let Some(e) = &srv.error {
                let _ = writeln!(s, "Not scraped: {e}");
                continue;
            }
            if !srv.latency_ms.is_empty() {
                let _ = writeln!(s, "Gateway request latency (bucket bounds): {:?} ms\n", srv.latency_ms);
            }
            s.push_str("| series | increase |\n|---|---:|\n");
            for (k, v) in &srv.deltas {
                let _ = writeln!(s, "| `{k}` | {v} |");
            }
        }
        s
    }

    /// The HTML report with its plots.
    pub fn html(&self) -> String {
        let seconds: Vec<u64> = {
            let mut v: Vec<u64> = self.rows.iter().map(|r| r.t).collect();
            v.dedup();
            v.sort();
            v.dedup();
            v
        };
        let t0 = seconds.first().copied().unwrap_or(0);
        let mut per_sec: BTreeMap<u64, Bucket> = BTreeMap::new();
        for r in &self.rows {
            per_sec.entry(r.t).or_default().merge(&r.bucket);
        }
        let xs: Vec<f64> = per_sec.keys().map(|t| (t - t0) as f64).collect();
        let col = |f: &dyn Fn(&Bucket) -> f64| per_sec.values().map(f).collect::<Vec<f64>>();
        let mut body = String::new();
        body.push_str(&line_plot(
            "Throughput",
            "requests/s",
            &xs,
            &[
                ("expected", col(&|b| b.ok as f64)),
                ("all responses", col(&|b| b.total() as f64)),
            ],
        ));
        body.push_str(&line_plot(
            "Latency percentiles over time",
            "ms (from intended send time)",
            &xs,
            &QUANTILES.map(|(n, q)| (n, col(&|b| b.latency.quantile_ms(q)))),
        ));
        body.push_str(&line_plot(
            "Errors and 429s",
            "per second",
            &xs,
            &[
                ("unexpected statuses", col(&|b| b.unexpected as f64)),
                ("429", col(&|b| b.throttled as f64)),
                (
                    "mean Retry-After (s)",
                    col(&|b| {
                        if b.throttled > 0 {
                            b.retry_after_sum_s / b.throttled as f64
                        } else {
                            0.0
                        }
                    }),
                ),
            ],
        ));
        body.push_str(&bar_plot("Latency per interaction", &self.per_interaction));
        let md = self.markdown();
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>phr-loadtest report</title>\
             <style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}svg{{background:#fafafa;border:1px solid #ddd;margin:8px 0}}\
             pre{{white-space:pre-wrap;background:#f4f4f4;padding:8px}}</style></head><body><h1>phr-loadtest report</h1>\
             {body}<h2>Summary</h2><pre>{}</pre></body></html>\n",
            escape(&md)
        )
    }
}

const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const W: f64 = 900.0;
const H: f64 = 260.0;
const PAD: f64 = 50.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn line_plot(title: &str, unit: &str, xs: &[f64], series: &[(&str, Vec<f64>)]) -> String {
    let xmax = xs.iter().cloned().fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, v)| v.iter().cloned()).fold(1e-9, f64::max) * 1.1;
    let sx = |x: f64| PAD + x / xmax * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD + 10.0 - y / ymax * (H - 1.5 * PAD);
    let mut s = format!(
        "<h2>{t}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    let _ = write!(
        s,
        "<line x1=\"{PAD}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/><line x1=\"{PAD}\" y1=\"{top}\" x2=\"{PAD}\" y2=\"{y0}\" stroke=\"#333\"/>\
         <text x=\"{PAD}\" y=\"{ty}\" font-size=\"11\">{ymax:.1} {u}</text><text x=\"{x1}\" y=\"{bt}\" font-size=\"11\" text-anchor=\"end\">{xmax:.0} s</text>",
        y0 = sy(0.0),
        x1 = W - PAD,
        top = sy(ymax),
        ty = sy(ymax) - 4.0,
        u = escape(unit),
        bt = sy(0.0) + 14.0,
    );
    for (i, (name, ys)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{c}\">{}</text>",
            pts.join(" "),
            PAD + 10.0 + 150.0 * i as f64,
            H - 8.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn bar_plot(title: &str, per: &BTreeMap<String, Totals>) -> String {
    let rows = per.len().max(1) as f64;
    let h = 30.0 + rows * 22.0;
    let max = per
        .values()
        .filter_map(|t| t.latency_ms.get("p99.9"))
        .cloned()
        .fold(1e-9, f64::max);
    let label_w = 220.0;
    let scale = |v: f64| v / max * (W - label_w - 110.0);
    let mut s = format!(
        "<h2>{t}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    for (i, (name, t)) in per.iter().enumerate() {
        let y = 10.0 + i as f64 * 22.0;
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{}\" font-size=\"11\">{}</text>",
            y + 12.0,
            escape(name)
        );
        // Widest first, so each shorter percentile bar stays visible on top.
        for (j, (q, _)) in QUANTILES.iter().enumerate().rev() {
            let v = t.latency_ms.get(*q).copied().unwrap_or(0.0);
            let _ = write!(
                s,
                "<rect x=\"{label_w}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{}\"><title>{} {q} {v:.2} ms</title></rect>",
                scale(v),
                COLOURS[j],
                escape(name)
            );
        }
        let p99 = t.latency_ms.get("p99").copied().unwrap_or(0.0);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\">p99 {p99:.1} ms</text>",
            W - 105.0,
            y + 12.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{label_w}\" y=\"{}\" font-size=\"10\">bars: p50 (blue) p90 (orange) p99 (green) p99.9 (red), max {max:.1} ms</text></svg>",
        h - 4.0
    );
    s
}
