//! The gateway's configuration: one TOML file, parsed strictly.
//!
//! Every table denies unknown keys, because a misspelt safeguard (`client_auht = "required"`)
//! that is silently ignored is a safeguard that is silently off. Secrets are never written in
//! the file: `${ENV_VAR}` references are expanded before parsing (see [`load`]).
//! Validation ([`validate`]) reports every problem at once with the file, the key and the fix,
//! so `phr-gateway check-config` and a refused reload say the same thing.
//!
//! Requirement IDs: EX-TLS-1..4 and EX-MTLS-1 (listener TLS), EX-TLS-3 (no plaintext
//! listeners), AV-DOS-1 (limits), DATA-JP-1 (every upstream declares its jurisdiction).
//!
//! The types of every section live here ([`auth`], [`limits`], [`health`],
//! [`jurisdiction`]); the modules that enforce them import them from here, never the
//! other way round.

pub mod auth;
pub mod duration;
pub mod endpoint;
pub mod health;
mod issue;
pub mod jurisdiction;
pub mod limits;
mod load;
#[cfg(test)]
mod load_fuzz;
#[cfg(test)]
mod reference_doc;
#[cfg(test)]
mod shipped_tests;
pub mod smart;
mod validate;

pub use issue::ConfigIssue;
pub use load::{load, load_str, LoadError};
pub use validate::validate;

use jurisdiction::Jurisdiction;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`: instance name, trusted proxies, HSTS, worker threads.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// `[admin]`: the operator's listener (health, readiness, metrics, reload).
    #[serde(default)]
    pub admin: AdminSection,
    /// `[limits]`: timeouts and sizes of every connection (AV-DOS-1).
    #[serde(default)]
    pub limits: Limits,
    /// `[[listeners]]`: the TLS listeners; at least one is required (EX-TLS-3).
    pub listeners: Vec<Listener>,
    /// `[upstreams.NAME]`: the backends routes forward to, by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[[routes]]`: which requests reach which upstream, and under which checks.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// `[residency]`: the required jurisdiction and the egress allow-list (DATA-JP-1..3).
    #[serde(default)]
    pub residency: Residency,
    /// Token issuers and token checks (AUTH-ID-1, AUTH-2FA-1..3).
    #[serde(default)]
    pub auth: auth::AuthConfig,
    /// Named request-rate policies (AV-DOS-1); routes pick them with `rate_limits`.
    #[serde(default)]
    pub rate_limits: limits::RateLimitsConfig,
    /// Per-IP connection and TLS-handshake limits (AV-DOS-1, EX-NET-3).
    #[serde(default)]
    pub connection_limits: limits::ConnectionLimitsConfig,
    /// Failed-authentication back-off (AUTH-LOCK-1).
    #[serde(default)]
    pub auth_backoff: limits::AuthBackoffConfig,
    /// Mass-read detector (LOG-ACC-1); absent means off.
    pub bulk_access: Option<limits::BulkAccessConfig>,
    /// Content filter for upload routes (EX-FILE-1).
    #[serde(default)]
    pub upload_filter: limits::UploadFilterConfig,
    /// Redis for `shared = true` rate-limit policies (several instances).
    pub redis: Option<limits::RedisConfig>,
    /// The gateway's database: access records, revocations, the block list.
    #[serde(default)]
    pub store: StoreSection,
    /// Access records (LOG-ACC-1, LOG-PROT-1, DATA-ENC-1/2).
    #[serde(default)]
    pub audit: AuditSection,
    /// How upstream health reaches `/readyz` (AV-BCP-1).
    #[serde(default)]
    pub health: health::HealthSection,
}

/// Where the gateway keeps its state. SQLite next to the config by default; PostgreSQL
/// (`postgres://…`) when several instances share revocations and one audit store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`. Default: `phr-gateway.db`
    /// next to the config file.
    pub url: Option<String>,
    /// Where a PostgreSQL server is (DATA-JP-1); a local SQLite file is the gateway's own disk.
    pub jurisdiction: Option<Jurisdiction>,
    /// The database runs inside the operator's own cluster, so its private or loopback
    /// address passes the residency check. Default `false`.
    #[serde(default)]
    pub in_cluster: bool,
}

/// How access records are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Off only for benchmarks of the proxy alone; the compliance report says so.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The key-encryption key (32 bytes, mode 0600). Created on first start if missing.
    #[serde(default = "default_kek_file")]
    pub kek_file: PathBuf,
    /// Take the key-encryption key (base64) from this environment variable instead.
    pub kek_env: Option<String>,
    /// Ed25519 key that signs chain checkpoints (PKCS#8 PEM, mode 0600). Created if missing.
    #[serde(default = "default_signing_key_file")]
    pub signing_key_file: PathBuf,
    /// Local encrypted spool used while the database is unreachable.
    #[serde(default = "default_spool_file")]
    pub spool_file: PathBuf,
    /// "durable" (default): a response is released only after its record is committed
    /// or spooled. "relaxed": acknowledged before commit (load tests only).
    #[serde(default)]
    pub mode: AuditMode,
    /// Records older than this are removed by `phr-gateway audit purge`. 1825 days is
    /// our default, not a guideline number (LOG-RET-1).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// A signed checkpoint after this many records... (LOG-PROT-1: bounds the tail a
    /// `kill -9` leaves unvouched, which could be cut without trace).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or this much time, whichever comes first.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "crate::config::duration::de_duration"
    )]
    pub checkpoint_interval: Duration,
    /// `audit verify` fails when a record after the last checkpoint is older than two
    /// intervals plus this (queueing, commit time and clock differences between hosts).
    #[serde(
        default = "default_checkpoint_grace",
        deserialize_with = "crate::config::duration::de_duration"
    )]
    pub checkpoint_grace: Duration,
    /// Also append every signed checkpoint (one JSON line, fsync'd) to this file, ideally
    /// on storage the database administrator cannot change; `audit verify` checks it.
    pub checkpoint_file: Option<PathBuf>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            enabled: true,
            kek_file: default_kek_file(),
            kek_env: None,
            signing_key_file: default_signing_key_file(),
            spool_file: default_spool_file(),
            mode: AuditMode::Durable,
            retention_days: default_retention_days(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_grace: default_checkpoint_grace(),
            checkpoint_file: None,
        }
    }
}

/// When a response may leave relative to its access record (`audit.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// `"durable"`: the response waits until its record is committed or spooled, and is a
    /// 503 if neither works, so no request goes unrecorded (LOG-ACC-1).
    #[default]
    Durable,
    /// `"relaxed"`: the record is queued and the response released at once; a crash can
    /// lose records. For load tests only.
    Relaxed,
}

fn default_kek_file() -> PathBuf {
    PathBuf::from("audit-kek.key")
}
fn default_signing_key_file() -> PathBuf {
    PathBuf::from("audit-signing.pem")
}
fn default_spool_file() -> PathBuf {
    PathBuf::from("audit-spool.bin")
}
fn default_retention_days() -> u32 {
    1825
}
fn default_checkpoint_every() -> u64 {
    100
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_checkpoint_grace() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// The limits' own view of their sections.
    pub fn protection(&self) -> limits::LimitsConfig {
        limits::LimitsConfig {
            rate_limits: self.rate_limits.clone(),
            connection_limits: self.connection_limits.clone(),
            auth_backoff: self.auth_backoff.clone(),
            bulk_access: self.bulk_access.clone(),
            upload_filter: self.upload_filter.clone(),
            redis: self.redis.clone(),
        }
    }
}

/// Identity of this gateway instance and how it treats the hop in front of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Names this instance in logs, metrics and (later) access records.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Peers (CIDRs) whose `X-Forwarded-For` and `X-Request-Id` are kept. Everyone else's are
    /// replaced, because a client could otherwise forge the address an access record shows.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `Strict-Transport-Security` max-age sent on every response (EX-TLS-3). 0 disables it.
    #[serde(default = "default_hsts", deserialize_with = "crate::config::duration::de_duration")]
    pub hsts_max_age: Duration,
    /// Worker threads of the runtime; 0 means one per core.
    /// The environment variable `PHR_GATEWAY_WORKER_THREADS` overrides it.
    #[serde(default)]
    pub worker_threads: usize,
    /// Unix socket through which a new gateway process takes the listening sockets over
    /// from this one for an upgrade without downtime ([`crate::handover`]). Off when unset.
    #[serde(default)]
    pub handover_socket: Option<PathBuf>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            instance_id: default_instance_id(),
            trusted_proxies: Vec::new(),
            hsts_max_age: default_hsts(),
            worker_threads: 0,
            handover_socket: None,
        }
    }
}

/// The operator's listener: health, readiness, metrics and reload. Loopback by default,
/// because it is not protected by the request path (EX-SEG-2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the plain-HTTP admin listener. Default `127.0.0.1:9901`; read once at
    /// start-up.
    #[serde(default = "default_admin_bind")]
    pub bind: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            bind: default_admin_bind(),
        }
    }
}

/// Timeouts and sizes. Every default is safe for a public listener (AV-DOS-1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Time a client has to send a complete request head (slowloris protection): from
    /// the TLS handshake for a connection's first request, from the head's first byte
    /// for the next ones (`server::activity`).
    #[serde(default = "d10s", deserialize_with = "crate::config::duration::de_duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    #[serde(default = "d60s", deserialize_with = "crate::config::duration::de_duration")]
    pub idle_timeout: Duration,
    /// Time to complete the TLS handshake.
    #[serde(default = "d10s", deserialize_with = "crate::config::duration::de_duration")]
    pub tls_handshake_timeout: Duration,
    /// A WebSocket tunnel with no bytes moving either way is closed after this.
    #[serde(default = "d10min", deserialize_with = "crate::config::duration::de_duration")]
    pub websocket_idle_timeout: Duration,
    /// Largest request head (request line + headers), in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Connections open at once on all listeners.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "d30s", deserialize_with = "crate::config::duration::de_duration")]
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: d10s(),
            idle_timeout: d60s(),
            tls_handshake_timeout: d10s(),
            websocket_idle_timeout: d10min(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            max_connections: default_max_connections(),
            h2_max_concurrent_streams: default_h2_streams(),
            drain_timeout: d30s(),
        }
    }
}

/// A TLS listener. There is no plaintext listener by design (EX-TLS-3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Names the listener in logs and metrics and in a route's `listeners` list.
    pub name: String,
    /// Address and port to accept TLS connections on; read once at start-up.
    pub bind: SocketAddr,
    /// "1.3" (default) or "1.2". Nothing older can be configured (EX-TLS-1).
    #[serde(default)]
    pub tls_min_version: TlsVersion,
    /// Why this listener allows TLS 1.2 (EX-TLS-1: 1.2 only where a peer cannot speak
    /// 1.3); printed in the compliance report, and `check-config --security` flags 1.2
    /// without it.
    pub tls12_reason: Option<String>,
    /// Mutual TLS for institutions (EX-MTLS-1, EX-TLS-2).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CA bundle that client certificates must chain to; required unless `client_auth = "none"`.
    pub client_ca_file: Option<PathBuf>,
    /// Certificate revocation lists (PEM) checked for client certificates.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// Server certificates; chosen by SNI, the first one is the default.
    pub certificates: Vec<Certificate>,
}

/// One server certificate of a listener and the SNI names it answers (EX-TLS-4: its key
/// and signature are checked at start-up).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// SNI names this certificate answers; empty means the names in its SAN extension.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Lowest TLS version a listener or an upstream connection accepts. There is no variant
/// for 1.1 or older, so no file can enable them (EX-TLS-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// `"1.2"`: TLS 1.2 and 1.3, for peers that cannot speak 1.3 (EX-TLS-2 exception).
    #[serde(rename = "1.2")]
    Tls12,
    /// `"1.3"` (default): TLS 1.3 only, IPA's high-security profile (EX-TLS-1).
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether a listener asks clients for a certificate in the handshake (EX-MTLS-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `"none"` (default): no certificate is requested.
    #[default]
    None,
    /// `"optional"`: a certificate is requested and verified if sent; clients without one
    /// pass TLS and the route decides (`client_cert = "required"`).
    Optional,
    /// `"required"`: the handshake fails without a certificate that chains to
    /// `client_ca_file` (EX-TLS-2).
    Required,
}

/// Whether a route needs a verified client certificate (mutual TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteClientCert {
    /// As the listener decides.
    #[default]
    Any,
    /// Refused (403 `client_cert_required`) without a verified client certificate.
    Required,
}

/// A named backend service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `https://host:port` (or `http://` with `allow_plaintext` on a loopback address).
    /// Several endpoints are used round-robin.
    pub endpoints: Vec<String>,
    /// CA bundle the upstream's certificate must chain to. Without it, no HTTPS endpoint
    /// is accepted: public roots are not trusted for medical backends by default.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key the gateway presents to the upstream (EX-MTLS-1).
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`; both or neither.
    pub client_key_file: Option<PathBuf>,
    /// Lowest TLS version spoken to this upstream: "1.3" (default) or "1.2" (EX-TLS-1).
    #[serde(default)]
    pub tls_min_version: TlsVersion,
    /// Why this upstream is allowed TLS 1.2 (EX-TLS-1), as for a listener.
    pub tls12_reason: Option<String>,
    /// Plain HTTP is accepted only with this set and only to a loopback address.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Where the upstream stores and processes data (ISO 3166-1 alpha-2). DATA-JP-1.
    pub jurisdiction: Option<Jurisdiction>,
    /// The upstream runs inside the operator's own cluster (private or loopback addresses).
    #[serde(default)]
    pub in_cluster: bool,
    /// Time allowed for the TCP connect to an endpoint, and again for the TLS handshake.
    /// Default 2 s.
    #[serde(default = "d2s", deserialize_with = "crate::config::duration::de_duration")]
    pub connect_timeout: Duration,
    /// Time from sending the request to receiving the response head; 504 after it.
    #[serde(default = "d30s", deserialize_with = "crate::config::duration::de_duration")]
    pub response_timeout: Duration,
    /// Consecutive connection failures after which an endpoint is ejected.
    #[serde(default = "default_eject_after")]
    pub eject_after_failures: u32,
    /// How long an ejected endpoint is skipped before it is tried again (AV-BCP-1).
    /// Default 30 s.
    #[serde(default = "d30s", deserialize_with = "crate::config::duration::de_duration")]
    pub eject_for: Duration,
    /// Keep-alive connections kept open per endpoint for reuse (see proxy::pool).
    #[serde(default = "default_pool_idle")]
    pub pool_max_idle: usize,
    /// Send the client's `Host` upstream instead of the endpoint's authority.
    #[serde(default)]
    pub preserve_host: bool,
    /// Active health checks of the endpoints (AV-BCP-1; on by default, see proxy::health).
    #[serde(default)]
    pub health_check: health::HealthCheckConfig,
}

/// Which requests go to which upstream, matched by host and longest path prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Names the route in logs, metrics and access records.
    pub name: String,
    /// Exact host (without port), `*.example.jp`, or absent for any host.
    pub host: Option<String>,
    /// Path the request must start with (`/fhir/`); the longest matching prefix wins.
    pub path_prefix: String,
    /// Name of the `[upstreams.NAME]` entry requests are forwarded to.
    pub upstream: String,
    /// Remove the prefix before forwarding (`/api/x` → `/x`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Allow WebSocket upgrades on this route (online-consultation signalling).
    #[serde(default)]
    pub websocket: bool,
    /// Overrides `limits.max_body_bytes` for this route.
    pub max_body_bytes: Option<u64>,
    /// The route carries personal health information. PHI routes cannot be
    /// `auth.mode = "none"` (AUTH-ID-1): no anonymous access to medical data.
    #[serde(default = "yes")]
    pub phi: bool,
    /// A FHIR R4 route: requests are classified and checked against the token's SMART
    /// scopes and patient compartment; errors are OperationOutcome (ACL-PHR-1).
    #[serde(default)]
    pub fhir: bool,
    /// The gateway's public URL (`scheme://host[:port]`) for rewriting backend URLs in
    /// FHIR responses; default: `https://` + the Host the client used.
    pub public_base_url: Option<String>,
    /// FHIR operations allowed besides $everything/$export/$validate, with the SMART
    /// letters they need, e.g. `{ "$lastn" = "rs" }`.
    #[serde(default)]
    pub fhir_operations: std::collections::BTreeMap<String, String>,
    /// FHIR routes: whether `GET <base>/metadata` (the CapabilityStatement, no patient
    /// data) needs a token. Default `false`: served without one, as FHIR and SMART
    /// clients expect to read it before they have a token; `true`: authenticated like
    /// any read (any valid token, no scope needed).
    #[serde(default)]
    pub metadata_requires_auth: bool,
    /// Rate-limit policies (names from `[rate_limits.policies]`) applied to this route.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Names of the listeners this route is reachable from (EX-SEG-1). Empty (the
    /// default) means every listener; a request arriving on a listener the route is not
    /// bound to is matched against the other routes as if this one did not exist.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// `"required"`: every request needs a client certificate that verified in the TLS
    /// handshake (EX-MTLS-1), whatever the listener; `check-config` refuses a route that
    /// requires one and is reachable from a listener that never asks for one.
    #[serde(default)]
    pub client_cert: RouteClientCert,
    /// Token requirements: `mode` (required | optional | none), `two_factor`,
    /// `acr_values`, `max_auth_age`, `require_cert_bound`, `require_dpop`, `required_scopes`.
    #[serde(default)]
    pub auth: auth::RoutePolicy,
    /// FHIR routes only: the SMART App Launch discovery document served (without a
    /// token) at `<base>/.well-known/smart-configuration`; absent: that path is 404.
    pub smart: Option<smart::SmartConfig>,
}

/// Domestic-only storage and egress (DATA-JP-1..3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    /// Every target must declare this jurisdiction; start-up refuses any other.
    #[serde(default = "default_jurisdiction")]
    pub required: Jurisdiction,
    /// Networks (CIDRs) that outbound connections may reach, checked on the address
    /// actually connected, for every new connection.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Files of CIDRs, one per line (e.g. made by `phr-gateway residency import-apnic`).
    #[serde(default)]
    pub allowed_networks_files: Vec<PathBuf>,
    /// A hosts file ("IP name [name...]" per line) consulted before DNS and re-read when
    /// it changes: pins upstream names without trusting the resolver.
    pub hosts_file: Option<PathBuf>,
}

impl Default for Residency {
    fn default() -> Self {
        Self {
            required: default_jurisdiction(),
            allowed_networks: Vec::new(),
            allowed_networks_files: Vec::new(),
            hosts_file: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_instance_id() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "phr-gateway".to_string())
}
fn default_hsts() -> Duration {
    Duration::from_secs(31_536_000)
}
fn default_admin_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_max_connections() -> usize {
    10_000
}
fn default_h2_streams() -> u32 {
    100
}
fn default_eject_after() -> u32 {
    3
}
fn default_pool_idle() -> usize {
    64
}
fn default_jurisdiction() -> Jurisdiction {
    Jurisdiction::JP
}
fn d2s() -> Duration {
    Duration::from_secs(2)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d10min() -> Duration {
    Duration::from_secs(600)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
