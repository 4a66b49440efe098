//! Per-second, per-interaction counters and mergeable latency histograms: what each
//! load-generator process records and writes to its JSON report, and what `merge` adds up.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Relative width of a histogram bucket (2 %): percentiles are exact to about 1 %.
const GROWTH: f64 = 1.02;

/// A log-bucketed latency histogram (microseconds); buckets add up, so histograms from
/// several processes merge exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// Bucket index → count; bucket `i` holds latencies near `GROWTH^i` µs.
    pub buckets: BTreeMap<u32, u64>,
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, micros: u64) {
        let i = ((micros.max(1) as f64).ln() / GROWTH.ln()).round() as u32;
        *self.buckets.entry(i).or_default() += 1;
    }
    /// Adds another histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (k, v) in &other.buckets {
            *self.buckets.entry(*k).or_default() += v;
        }
    }
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }
    /// The `q` quantile (0..=1) in milliseconds, or 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (k, v) in &self.buckets {
            seen += v;
            if seen >= rank {
                return GROWTH.powi(*k as i32) / 1000.0;
            }
        }
        0.0
    }
}

/// What happened in one second to one interaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Responses with an expected status (the throughput).
    pub ok: u64,
    /// Responses with a status the mix does not expect, or no response at all.
    pub unexpected: u64,
    /// 429 responses (counted apart, neither throughput nor error).
    pub throttled: u64,
    /// Sum of the 429s' `Retry-After` seconds.
    pub retry_after_sum_s: f64,
    /// Largest `Retry-After` seen.
    pub retry_after_max_s: f64,
    /// 429s without a parsable `Retry-After`.
    pub retry_after_missing: u64,
    /// Unexpected statuses seen: status (0 = transport error) → count.
    pub unexpected_statuses: BTreeMap<u16, u64>,
    /// Latency from the intended send time (corrected for coordinated omission).
    pub latency: Histogram,
    /// Latency from the actual send time (service time as the client saw it).
    pub service: Histogram,
}

impl Bucket {
    /// Adds another bucket.
    pub fn merge(&mut self, o: &Bucket) {
        self.ok += o.ok;
        self.unexpected += o.unexpected;
        self.throttled += o.throttled;
        self.retry_after_sum_s += o.retry_after_sum_s;
        self.retry_after_max_s = self.retry_after_max_s.max(o.retry_after_max_s);
        self.retry_after_missing += o.retry_after_missing;
        for (k, v) in &o.unexpected_statuses {
            *self.unexpected_statuses.entry(*k).or_default() += v;
        }
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
    }
    /// All responses (and transport errors).
    pub fn total(&self) -> u64 {
        self.ok + self.unexpected + self.throttled
    }
}

/// One outcome to record.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// HTTP status, 0 when no response arrived.
    pub status: u16,
    /// Whether the mix expects `status`.
    pub expected: bool,
    /// `Retry-After` of a 429, in seconds.
    pub retry_after_s: Option<f64>,
    /// µs from intended send time to response.
    pub latency_us: u64,
    /// µs from actual send time to response.
    pub service_us: u64,
}

/// Key: (unix second, interaction name).
pub type Series = BTreeMap<(u64, String), Bucket>;

/// The process-wide recorder the users write into.
#[derive(Debug, Default)]
pub struct Recorder {
    series: Mutex<Series>,
}

impl Recorder {
    /// Records one outcome at unix second `sec`.
    pub fn record(&self, sec: u64, interaction: &str, o: Outcome) {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let b = s.entry((sec, interaction.to_string())).or_default();
        if o.status == 429 && !o.expected {
            b.throttled += 1;
            match o.retry_after_s {
                Some(r) => {
                    b.retry_after_sum_s += r;
                    b.retry_after_max_s = b.retry_after_max_s.max(r);
                }
                None => b.retry_after_missing += 1,
            }
            return;
        }
        if o.expected {
            b.ok += 1;
        } else {
            b.unexpected += 1;
            *b.unexpected_statuses.entry(o.status).or_default() += 1;
        }
        b.latency.record(o.latency_us);
        b.service.record(o.service_us);
    }
    /// Takes the recorded series.
    pub fn take(&self) -> Series {
        std::mem::take(&mut *self.series.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close_and_merge_adds() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let p50 = h.quantile_ms(0.5);
        assert!((p50 - 50.0).abs() < 1.5, "{p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((p99 - 99.0).abs() < 2.5, "{p99}");
        let mut m = h.clone();
        m.merge(&h);
        assert_eq!(m.count(), 200);
        assert_eq!(m.quantile_ms(0.5), p50);
    }

    #[test]
    fn throttled_and_unexpected_are_apart_from_throughput() {
        let r = Recorder::default();
        let o = |status, expected, ra| Outcome {
            status,
            expected,
            retry_after_s: ra,
            latency_us: 1000,
            service_us: 900,
        };
        r.record(1, "a", o(200, true, None));
        r.record(1, "a", o(429, false, Some(2.0)));
        r.record(1, "a", o(429, false, None));
        r.record(1, "a", o(200, false, None));
        let s = r.take();
        let b = &s[&(1, "a".to_string())];
        assert_eq!((b.ok, b.throttled, b.unexpected, b.retry_after_missing), (1, 2, 1, 1));
        assert_eq!(b.unexpected_statuses[&200], 1);
        assert_eq!(b.retry_after_max_s, 2.0);
    }
}
