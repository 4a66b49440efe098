//! Configuration of every safeguard in `limits` (AV-DOS-1, EX-NET-3,
//! AUTH-LOCK-1, LOG-ACC-1, EX-FILE-1).
//!
//! All structs refuse unknown keys (`deny_unknown_fields`): a misspelt limit
//! that silently falls back to "no limit" is an outage waiting for an attacker.
//! Durations use humantime (`"60s"`, `"15m"`). [`LimitsConfig::validate`]
//! (in `limits/config_check.rs`) returns every problem at once as
//! [`ConfigIssue`](super::ConfigIssue)s, each with the key, what is wrong and how to fix it.
//!
//! The gateway may embed [`LimitsConfig`]'s fields at its config root; the
//! TOML then reads:
//! ```toml
//! [rate_limits.policies.per_subject]
//! key = "subject"
//! rate = 100
//! per = "1s"
//! burst = 200
//! shared = true
//! on_redis_error = "closed"
//! costs = { read = 1, search-type = 2, create = 10, operation = 100 }
//!
//! [connection_limits]
//! max_connections_per_ip = 64
//! tls_handshakes_per_ip_per_second = 20
//! tls_handshake_burst = 40
//!
//! [auth_backoff]
//! after_failures = 5
//! window = "15m"
//! block_for = "15m"
//!
//! [bulk_access]
//! window = "1h"
//! max_distinct_patients = 200
//! action = "alert"
//!
//! [upload_filter.routes.documents]
//! allowed_media_types = ["application/pdf", "image/jpeg", "application/fhir+json"]
//!
//! [redis]
//! url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379"
//! timeout = "50ms"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::jurisdiction::Jurisdiction;

/// Everything this module can be configured with.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Named request-rate policies.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Per-IP connection and TLS-handshake limits.
    #[serde(default)]
    pub connection_limits: ConnectionLimitsConfig,
    /// Failed-authentication back-off (AUTH-LOCK-1).
    #[serde(default)]
    pub auth_backoff: AuthBackoffConfig,
    /// Mass-read detector; absent means off.
    #[serde(default)]
    pub bulk_access: Option<BulkAccessConfig>,
    /// Content filter for upload routes.
    #[serde(default)]
    pub upload_filter: UploadFilterConfig,
    /// Redis for `shared = true` policies; required when any policy is shared.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// `[rate_limits]`: the policy table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Policies by name; the name appears in `RateLimit-Policy` headers and
    /// metrics labels, so it is restricted to `[a-z0-9_-]`.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
}

/// What a policy counts requests by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The authenticated subject (`sub`), after token verification.
    Subject,
    /// The OAuth client (`client_id` / `azp`).
    ClientId,
    /// The mTLS client certificate's fingerprint.
    ClientCert,
    /// The source address (IPv6 by prefix, see `limits::keys::IpKey`);
    /// the only key available before authentication.
    SourceIp,
    /// The matched route: a global cap protecting one upstream.
    Route,
}

/// What to do with a `shared` policy's request when Redis cannot answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFailureMode {
    /// Refuse (the default): a limit that disappears when Redis is down is
    /// no protection against the load that took Redis down.
    #[default]
    Closed,
    /// Admit: for policies where availability matters more than the limit.
    Open,
}

/// One `[rate_limits.policies.NAME]` table: a GCRA limit of `rate` units per
/// `per`, allowing bursts of `burst` units.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What requests are counted by.
    pub key: KeyKind,
    /// Units admitted per `per` period, sustained.
    pub rate: u32,
    /// The period `rate` refers to (e.g. `"1s"`, `"1m"`).
    #[serde(deserialize_with = "crate::config::duration::de_duration")]
    pub per: Duration,
    /// Units that may be spent at once after a quiet period; defaults to `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Most keys tracked in memory at once; beyond it new keys share one
    /// overflow bucket (see `limits::local`).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Count in Redis so several gateway processes share one budget.
    #[serde(default)]
    pub shared: bool,
    /// Behaviour of a shared policy when Redis fails.
    #[serde(default)]
    pub on_redis_error: RedisFailureMode,
    /// Cost of each FHIR interaction (`read`, `search-type`, `create`,
    /// `operation`, ...); interactions not listed cost `default_cost`.
    #[serde(default)]
    pub costs: BTreeMap<String, u32>,
    /// Cost of a request whose interaction is not in `costs`.
    #[serde(default = "one")]
    pub default_cost: u32,
}

impl PolicyConfig {
    /// The effective burst (`burst`, or `rate` when unset).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate)
    }

    /// The cost of one request with the given FHIR interaction (`None` for
    /// non-FHIR routes). Why costs: a search or `$export` costs the backend
    /// far more than a read, so a flat request count would let a client
    /// exhaust the backend within its limit.
    pub fn cost(&self, interaction: Option<&str>) -> u32 {
        interaction
            .and_then(|i| self.costs.get(i).copied())
            .unwrap_or(self.default_cost)
    }
}

/// FHIR RESTful interaction names accepted as keys of `costs` (FHIR R4
/// `TypeRestfulInteraction` / `SystemRestfulInteraction`, plus `operation`).
pub const FHIR_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
];

/// `[connection_limits]`: limits applied at accept, before TLS (EX-NET-3, AV-DOS-1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimitsConfig {
    /// Open connections one IP (or IPv6 prefix) may hold.
    #[serde(default = "default_conns_per_ip")]
    pub max_connections_per_ip: u32,
    /// TLS handshakes per second per IP, sustained. Handshakes cost the
    /// server an asymmetric-key operation each, so they are limited apart
    /// from requests.
    #[serde(default = "default_handshakes")]
    pub tls_handshakes_per_ip_per_second: u32,
    /// Handshakes one IP may start at once.
    #[serde(default = "default_handshake_burst")]
    pub tls_handshake_burst: u32,
    /// IPv6 prefix length that counts as one client.
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
    /// Most IPs whose handshake rate is tracked.
    #[serde(default = "default_max_keys")]
    pub max_tracked_ips: usize,
    /// Addresses exempt from both limits (e.g. the load balancer's health checker).
    #[serde(default)]
    pub exempt: Vec<IpNet>,
}

impl Default for ConnectionLimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_ip: default_conns_per_ip(),
            tls_handshakes_per_ip_per_second: default_handshakes(),
            tls_handshake_burst: default_handshake_burst(),
            ipv6_prefix: default_v6_prefix(),
            max_tracked_ips: default_max_keys(),
            exempt: Vec::new(),
        }
    }
}

/// `[auth_backoff]`: AUTH-LOCK-1. The guidelines name no numbers; the
/// defaults (5 failures in 15 minutes → 15 minutes) follow the 5–10 /
/// 15–30 min range noted in the requirements table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBackoffConfig {
    /// Failures within `window` that trigger a block.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,
    /// How far back failures are counted.
    #[serde(
        default = "fifteen_minutes",
        deserialize_with = "crate::config::duration::de_duration"
    )]
    pub window: Duration,
    /// Length of the first block.
    #[serde(
        default = "fifteen_minutes",
        deserialize_with = "crate::config::duration::de_duration"
    )]
    pub block_for: Duration,
    /// Double the block on each repeat lockout (up to `max_block`).
    #[serde(default = "yes")]
    pub exponential: bool,
    /// Upper bound of an exponential block.
    #[serde(default = "one_day", deserialize_with = "crate::config::duration::de_duration")]
    pub max_block: Duration,
    /// Count failures per source IP.
    #[serde(default = "yes")]
    pub per_ip: bool,
    /// Count failures per subject.
    #[serde(default = "yes")]
    pub per_subject: bool,
    /// Most keys tracked per table (IPs, subjects).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl Default for AuthBackoffConfig {
    fn default() -> Self {
        Self {
            after_failures: default_after_failures(),
            window: fifteen_minutes(),
            block_for: fifteen_minutes(),
            exponential: true,
            max_block: one_day(),
            per_ip: true,
            per_subject: true,
            max_keys: default_max_keys(),
        }
    }
}

/// What the bulk-access detector does when a subject exceeds its threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Raise an alert only (for review, LOG-ACC-1).
    #[default]
    Alert,
    /// Raise an alert and block the subject until an operator unblocks it.
    Block,
}

/// `[bulk_access]`: distinct patients one subject may touch within `window`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkAccessConfig {
    /// Sliding window.
    #[serde(deserialize_with = "crate::config::duration::de_duration")]
    pub window: Duration,
    /// Distinct patients allowed in `window`; one more fires the alert.
    pub max_distinct_patients: u32,
    /// Alert only, or alert and block.
    #[serde(default)]
    pub action: BulkAction,
    /// Most subjects tracked at once.
    #[serde(default = "default_max_subjects")]
    pub max_subjects: usize,
}

/// `[upload_filter]`: routes whose request bodies are inspected (EX-FILE-1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadFilterConfig {
    /// Per-route rules, by the gateway's route name.
    #[serde(default)]
    pub routes: BTreeMap<String, UploadRouteConfig>,
}

/// `[upload_filter.routes.NAME]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRouteConfig {
    /// Media types admitted, matched against the *detected* type (see
    /// `limits::upload_filter::DetectedType::media_type` for the names).
    pub allowed_media_types: Vec<String>,
    /// Decode and inspect FHIR attachments and multipart parts.
    #[serde(default = "yes")]
    pub inspect_embedded: bool,
}

/// `[redis]`: the store of `shared` policies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; the gateway expands `${ENV}`
    /// before this module sees it.
    pub url: String,
    /// Budget for one decision's round trip; past it the policy's
    /// `on_redis_error` applies. Default 50 ms.
    #[serde(default = "fifty_ms", deserialize_with = "crate::config::duration::de_duration")]
    pub timeout: Duration,
    /// Prefix of every key this module writes.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Where the Redis server is (DATA-JP-1): rate-limit keys name subjects.
    #[serde(default)]
    pub jurisdiction: Option<Jurisdiction>,
    /// Redis runs inside the operator's cluster.
    #[serde(default)]
    pub in_cluster: bool,
    /// Consecutive Redis errors (or timeouts) after which the circuit breaker opens
    /// and shared policies stop calling Redis (see `limits::breaker`). Default 3.
    #[serde(default = "default_breaker_errors")]
    pub breaker_after_errors: u32,
    /// How long the open breaker fails fast before one probe tries Redis again.
    /// Default 1 s.
    #[serde(default = "one_second", deserialize_with = "crate::config::duration::de_duration")]
    pub breaker_retry_interval: Duration,
}

fn default_max_keys() -> usize {
    100_000
}
fn default_max_subjects() -> usize {
    10_000
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_conns_per_ip() -> u32 {
    64
}
fn default_handshakes() -> u32 {
    20
}
fn default_handshake_burst() -> u32 {
    40
}
fn default_v6_prefix() -> u8 {
    64
}
fn default_after_failures() -> u32 {
    5
}
fn fifteen_minutes() -> Duration {
    Duration::from_secs(15 * 60)
}
fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_breaker_errors() -> u32 {
    3
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn fifty_ms() -> Duration {
    Duration::from_millis(50)
}
fn default_prefix() -> String {
    "phr:rl:".to_owned()
}
