//! Validation of [`LimitsConfig`]: every problem at once, each a [`ConfigIssue`] with
//! the key, the problem and the fix (the gateway prints them and refuses to start).
//! Why strict: a limit that is zero, unreachable (cost above burst) or
//! silently unshared is a safeguard that exists only on paper (AV-DOS-1).

use std::time::Duration;

use super::upload_filter::DetectedType;
use crate::config::limits::{LimitsConfig, PolicyConfig, FHIR_INTERACTIONS};
use crate::config::ConfigIssue;

/// What is wrong with a limits value: the `problem` (its `Display`) and the `fix`
/// ([`ConfigProblem::fix`]) of the [`ConfigIssue`] that [`LimitsConfig::validate`] reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A policy name outside `[a-z0-9_-]{1,64}`.
    #[error("policy name {0:?} is not 1-64 characters of a-z, 0-9, '_' or '-'")]
    BadPolicyName(String),
    /// A count that must be positive is zero.
    #[error("must be greater than zero")]
    Zero,
    /// A duration that must be positive is zero.
    #[error("duration must be greater than zero")]
    ZeroDuration,
    /// `per / rate` is below one microsecond, the shared limiter's resolution.
    #[error("rate/per gives an interval below 1 microsecond")]
    RateTooFine,
    /// An interaction's cost exceeds the burst, so it could never be admitted.
    #[error("cost {cost} exceeds burst {burst}; such requests would always be refused")]
    CostAboveBurst {
        /// The configured cost.
        cost: u32,
        /// The policy's effective burst.
        burst: u32,
    },
    /// A `costs` key that is no FHIR interaction.
    #[error("{0:?} is not a FHIR interaction")]
    UnknownInteraction(String),
    /// A shared policy without a `[redis]` table.
    #[error("policy is shared but no [redis] table is configured")]
    SharedWithoutRedis,
    /// A `max_keys`-like bound above the hard ceiling.
    #[error("{value} is above the ceiling of {max}")]
    TooLarge {
        /// The configured value.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// An IPv6 prefix length outside 32..=128.
    #[error("IPv6 prefix /{0} is outside 32..=128")]
    Ipv6Prefix(u8),
    /// `max_block` shorter than `block_for`.
    #[error("max_block is shorter than block_for")]
    MaxBlockBelowBlock,
    /// A media type the filter cannot detect.
    #[error("media type {0:?} is not one the content filter can detect")]
    UnknownMediaType(String),
    /// An upload route that admits nothing.
    #[error("allowed_media_types is empty")]
    NoMediaTypes,
    /// A Redis URL with another scheme (TLS is not built in yet).
    #[error("url scheme must be redis://")]
    RedisScheme,
    /// A Redis URL still holding `${...}`: the gateway should have expanded it.
    #[error("url still contains an unexpanded ${{...}} variable")]
    UnexpandedVariable,
    /// A Redis timeout outside 1 ms..=5 s.
    #[error("timeout {0:?} is outside 1ms..=5s")]
    TimeoutRange(Duration),
}

impl ConfigProblem {
    /// How to fix the problem, printed after it.
    pub fn fix(&self) -> &'static str {
        match self {
            ConfigProblem::BadPolicyName(_) => "rename the policy, e.g. per_subject",
            ConfigProblem::Zero => "set a positive number",
            ConfigProblem::ZeroDuration => "set a duration such as \"1s\" or \"15m\"",
            ConfigProblem::RateTooFine => "lower rate or lengthen per",
            ConfigProblem::CostAboveBurst { .. } => "raise burst or lower the cost",
            ConfigProblem::UnknownInteraction(_) => {
                "use read, vread, update, patch, delete, history-instance, history-type, \
                 history-system, create, search-type, search-system, capabilities, \
                 transaction, batch or operation"
            }
            ConfigProblem::SharedWithoutRedis => "add [redis] url = \"redis://...\" or set shared = false",
            ConfigProblem::TooLarge { .. } => "lower the value",
            ConfigProblem::Ipv6Prefix(_) => "use 64 unless clients are known to get other prefixes",
            ConfigProblem::MaxBlockBelowBlock => "set max_block >= block_for",
            ConfigProblem::UnknownMediaType(_) => {
                "use application/pdf, image/jpeg, image/png, image/gif, image/webp, \
                 application/dicom, text/plain, application/json or application/fhir+json"
            }
            ConfigProblem::NoMediaTypes => "list the media types the route accepts, or remove the route",
            ConfigProblem::RedisScheme => "use redis://host:port (terminate TLS locally, e.g. stunnel)",
            ConfigProblem::UnexpandedVariable => "set the environment variable the url refers to",
            ConfigProblem::TimeoutRange(_) => "use a timeout such as \"50ms\"",
        }
    }
}

/// Hard ceiling on any per-table key count: 10 million 16-byte entries is
/// already ~300 MB with hash-table overhead.
const MAX_KEYS_CEILING: usize = 10_000_000;

impl LimitsConfig {
    /// Checks every value; `Err` lists all problems found, in key order.
    pub fn validate(&self) -> Result<(), Vec<ConfigIssue>> {
        let mut out = Vec::new();
        let mut push =
            |key: String, problem: ConfigProblem| out.push(ConfigIssue::new(key, problem.to_string(), problem.fix()));
        for (name, p) in &self.rate_limits.policies {
            let base = format!("rate_limits.policies.{name}");
            check_policy(&base, name, p, self.redis.is_some(), &mut push);
        }
        let c = &self.connection_limits;
        for (k, v) in [
            ("max_connections_per_ip", c.max_connections_per_ip),
            ("tls_handshakes_per_ip_per_second", c.tls_handshakes_per_ip_per_second),
            ("tls_handshake_burst", c.tls_handshake_burst),
        ] {
            if v == 0 {
                push(format!("connection_limits.{k}"), ConfigProblem::Zero);
            }
        }
        if !(32..=128).contains(&c.ipv6_prefix) {
            push(
                "connection_limits.ipv6_prefix".into(),
                ConfigProblem::Ipv6Prefix(c.ipv6_prefix),
            );
        }
        check_max_keys("connection_limits.max_tracked_ips", c.max_tracked_ips, &mut push);
        let a = &self.auth_backoff;
        if a.after_failures == 0 {
            push("auth_backoff.after_failures".into(), ConfigProblem::Zero);
        }
        for (k, d) in [("window", a.window), ("block_for", a.block_for)] {
            if d.is_zero() {
                push(format!("auth_backoff.{k}"), ConfigProblem::ZeroDuration);
            }
        }
        if a.max_block < a.block_for {
            push("auth_backoff.max_block".into(), ConfigProblem::MaxBlockBelowBlock);
        }
        check_max_keys("auth_backoff.max_keys", a.max_keys, &mut push);
        if let Some(b) = &self.bulk_access {
            if b.window.is_zero() {
                push("bulk_access.window".into(), ConfigProblem::ZeroDuration);
            }
            if b.max_distinct_patients == 0 {
                push("bulk_access.max_distinct_patients".into(), ConfigProblem::Zero);
            } else if b.max_distinct_patients > 1_000_000 {
                let p = ConfigProblem::TooLarge {
                    value: b.max_distinct_patients.into(),
                    max: 1_000_000,
                };
                push("bulk_access.max_distinct_patients".into(), p);
            }
            check_max_keys("bulk_access.max_subjects", b.max_subjects, &mut push);
        }
        for (route, r) in &self.upload_filter.routes {
            let key = format!("upload_filter.routes.{route}.allowed_media_types");
            if r.allowed_media_types.is_empty() {
                push(key.clone(), ConfigProblem::NoMediaTypes);
            }
            for m in &r.allowed_media_types {
                if DetectedType::from_media_type(m).is_none() {
                    push(key.clone(), ConfigProblem::UnknownMediaType(m.clone()));
                }
            }
        }
        if let Some(r) = &self.redis {
            if !r.url.starts_with("redis://") {
                push("redis.url".into(), ConfigProblem::RedisScheme);
            }
            if r.url.contains("${") {
                push("redis.url".into(), ConfigProblem::UnexpandedVariable);
            }
            if r.timeout < Duration::from_millis(1) || r.timeout > Duration::from_secs(5) {
                push("redis.timeout".into(), ConfigProblem::TimeoutRange(r.timeout));
            }
            if r.breaker_after_errors == 0 {
                push("redis.breaker_after_errors".into(), ConfigProblem::Zero);
            }
            if r.breaker_retry_interval.is_zero() {
                push("redis.breaker_retry_interval".into(), ConfigProblem::ZeroDuration);
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    }
}

fn check_policy(
    base: &str,
    name: &str,
    p: &PolicyConfig,
    has_redis: bool,
    push: &mut impl FnMut(String, ConfigProblem),
) {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        push(base.to_owned(), ConfigProblem::BadPolicyName(name.to_owned()));
    }
    if p.rate == 0 {
        push(format!("{base}.rate"), ConfigProblem::Zero);
    }
    if p.per.is_zero() {
        push(format!("{base}.per"), ConfigProblem::ZeroDuration);
    } else if p.rate > 0 && p.per / p.rate < Duration::from_micros(1) {
        push(format!("{base}.per"), ConfigProblem::RateTooFine);
    }
    if p.burst == Some(0) {
        push(format!("{base}.burst"), ConfigProblem::Zero);
    }
    if p.default_cost == 0 {
        push(format!("{base}.default_cost"), ConfigProblem::Zero);
    } else if p.default_cost > p.burst() && p.burst() > 0 {
        let problem = ConfigProblem::CostAboveBurst {
            cost: p.default_cost,
            burst: p.burst(),
        };
        push(format!("{base}.default_cost"), problem);
    }
    for (interaction, &cost) in &p.costs {
        let key = format!("{base}.costs.{interaction}");
        if !FHIR_INTERACTIONS.contains(&interaction.as_str()) {
            push(key.clone(), ConfigProblem::UnknownInteraction(interaction.clone()));
        }
        if cost == 0 {
            push(key, ConfigProblem::Zero);
        } else if cost > p.burst() && p.burst() > 0 {
            push(key, ConfigProblem::CostAboveBurst { cost, burst: p.burst() });
        }
    }
    check_max_keys(&format!("{base}.max_keys"), p.max_keys, push);
    if p.shared && !has_redis {
        push(format!("{base}.shared"), ConfigProblem::SharedWithoutRedis);
    }
}

fn check_max_keys(key: &str, v: usize, push: &mut impl FnMut(String, ConfigProblem)) {
    if v == 0 {
        push(key.to_owned(), ConfigProblem::Zero);
    } else if v > MAX_KEYS_CEILING {
        push(
            key.to_owned(),
            ConfigProblem::TooLarge {
                value: v as u64,
                max: MAX_KEYS_CEILING as u64,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[rate_limits.policies.per_subject]
key = "subject"
rate = 100
per = "1s"
burst = 200
shared = true
costs = { read = 1, search-type = 2, create = 10, operation = 100 }

[rate_limits.policies.pre_auth]
key = "source_ip"
rate = 20
per = "1s"

[connection_limits]
max_connections_per_ip = 32

[auth_backoff]
after_failures = 5
window = "15m"
block_for = "15m"

[bulk_access]
window = "1h"
max_distinct_patients = 200
action = "block"

[upload_filter.routes.documents]
allowed_media_types = ["application/pdf", "image/jpeg"]

[redis]
url = "redis://127.0.0.1:6379"
"#;

    #[test]
    fn example_config_parses_and_validates() {
        let cfg: LimitsConfig = toml::from_str(GOOD).unwrap();
        cfg.validate().unwrap();
        let p = &cfg.rate_limits.policies["per_subject"];
        assert_eq!(p.cost(Some("operation")), 100);
        assert_eq!(p.cost(Some("vread")), 1);
        assert_eq!(p.cost(None), 1);
        assert_eq!(cfg.redis.unwrap().timeout, Duration::from_millis(50));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let bad = GOOD.replace("burst = 200", "brust = 200");
        let err = toml::from_str::<LimitsConfig>(&bad).unwrap_err().to_string();
        assert!(err.contains("brust"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem_with_key_and_fix() {
        let bad = GOOD
            .replace("operation = 100", "operation = 300, frobnicate = 1")
            .replace("rate = 20", "rate = 0")
            .replace("\"image/jpeg\"", "\"image/jpg\"")
            .replace("[redis]\nurl = \"redis://127.0.0.1:6379\"", "");
        let cfg: LimitsConfig = toml::from_str(&bad).unwrap();
        let issues = cfg.validate().unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert!(
            keys.contains(&"rate_limits.policies.per_subject.costs.operation"),
            "{keys:?}"
        );
        assert!(keys.contains(&"rate_limits.policies.per_subject.costs.frobnicate"));
        assert!(keys.contains(&"rate_limits.policies.per_subject.shared"));
        assert!(keys.contains(&"rate_limits.policies.pre_auth.rate"));
        assert!(keys.contains(&"upload_filter.routes.documents.allowed_media_types"));
        let shown = issues[0].to_string();
        assert!(shown.contains("Fix:"), "{shown}");
        let over = ConfigProblem::CostAboveBurst { cost: 300, burst: 200 };
        assert!(issues.contains(&ConfigIssue::new(
            "rate_limits.policies.per_subject.costs.operation",
            over.to_string(),
            over.fix(),
        )));
    }
}
