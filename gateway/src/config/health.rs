//! Configuration of upstream health: `[upstreams.NAME.health_check]` (active probes) and
//! `[health]` (how upstream health reaches `/readyz`), AV-BCP-1. The probes themselves
//! are in `proxy::health`, which explains the defaults.

use super::{Config, ConfigIssue};
use serde::Deserialize;
use std::time::Duration;

/// `[upstreams.NAME.health_check]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Probe the endpoints (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path (and optional query) requested with GET; default "/".
    #[serde(default = "default_path")]
    pub path: String,
    /// Time between probe rounds; also the `Retry-After` of a 503 for an upstream
    /// without a healthy endpoint, since the next probe may bring one back.
    #[serde(default = "d5s", deserialize_with = "crate::config::duration::de_duration")]
    pub interval: Duration,
    /// Time for connection, TLS handshake and response head; at most `interval`.
    #[serde(default = "d2s", deserialize_with = "crate::config::duration::de_duration")]
    pub timeout: Duration,
    /// Successful probes in a row that bring an ejected endpoint back.
    #[serde(default = "one")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that take an endpoint out until a probe succeeds.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_path(),
            interval: d5s(),
            timeout: d2s(),
            healthy_threshold: one(),
            unhealthy_threshold: three(),
        }
    }
}

/// `[health]`: how upstream health reaches `/readyz`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `/readyz` answers 503 when the share of routes without a healthy endpoint is
    /// above this (0.0 to 1.0). The default, 0.0, means any such route: an instance
    /// that can only refuse a route's requests should get no traffic from the load
    /// balancer while another instance may still reach that route's backend. 1.0
    /// keeps upstream health out of readiness.
    #[serde(default)]
    pub max_unhealthy_route_share: f64,
}

fn yes() -> bool {
    true
}
fn default_path() -> String {
    "/".into()
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d2s() -> Duration {
    Duration::from_secs(2)
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

/// The problems of the health settings, in `check-config`'s terms.
pub fn config_issues(config: &Config) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    let mut add = |key: String, problem: String, fix: &str| out.push(ConfigIssue::new(key, problem, fix));
    let share = config.health.max_unhealthy_route_share;
    if !(0.0..=1.0).contains(&share) {
        add(
            "health.max_unhealthy_route_share".into(),
            format!("{share} is not a share between 0.0 and 1.0"),
            "use 0.0 (not ready as soon as one route has no healthy endpoint) up to 1.0 (upstream health never affects readiness)",
        );
    }
    for (name, u) in &config.upstreams {
        let h = &u.health_check;
        let key = format!("upstreams.{name}.health_check");
        if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
            add(
                format!("{key}.path"),
                format!("{:?} is not an absolute path", h.path),
                "write a path such as \"/health\" or \"/fhir/metadata\"",
            );
        }
        if h.interval.is_zero() {
            add(
                format!("{key}.interval"),
                "the interval is zero".into(),
                "use a duration such as \"5s\"",
            );
        }
        if h.timeout.is_zero() || h.timeout > h.interval {
            add(
                format!("{key}.timeout"),
                format!(
                    "timeout {:?} must be above zero and at most the interval {:?}",
                    h.timeout, h.interval
                ),
                "use a timeout such as \"2s\" with an interval of \"5s\"",
            );
        }
        for (k, v) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            if v == 0 {
                add(format!("{key}.{k}"), "must be at least 1".into(), "set 1 or more");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(upstream_extra: &str, rest: &str) -> Config {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\ncertificates = []\n\n\
             [upstreams.u]\nendpoints = [\"http://127.0.0.1:9\"]\nallow_plaintext = true\nin_cluster = true\njurisdiction = \"JP\"\n{upstream_extra}\n{rest}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn defaults_are_on_every_five_seconds() {
        let c = config("", "");
        let h = &c.upstreams["u"].health_check;
        assert!(h.enabled);
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(5), Duration::from_secs(2))
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 3));
        assert_eq!(c.health.max_unhealthy_route_share, 0.0);
        assert!(config_issues(&c).is_empty());
    }

    #[test]
    fn bad_settings_are_named_with_their_key() {
        let c = config(
            "[upstreams.u.health_check]\npath = \"health\"\ninterval = \"1s\"\ntimeout = \"2s\"\nhealthy_threshold = 0\n",
            "[health]\nmax_unhealthy_route_share = 1.5\n",
        );
        let keys: Vec<String> = config_issues(&c).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "health.max_unhealthy_route_share",
                "upstreams.u.health_check.path",
                "upstreams.u.health_check.timeout",
                "upstreams.u.health_check.healthy_threshold",
            ]
        );
    }
}
