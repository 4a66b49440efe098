//! Configuration of token authentication: trusted issuers, per-route policy,
//! and the limits of the caches.
//!
//! Every struct refuses unknown keys (`deny_unknown_fields`), so a typo such
//! as `two_factors = true` fails loudly instead of silently weakening a route.
//! Durations are strings with a unit (`"60s"`), see [`super::duration`].
//!
//! [`AuthConfig::validate`] returns *all* problems at once as [`ConfigIssue`]s, each
//! naming the key and the fix, so an operator can correct a file in one pass.
//! [`crate::auth`] enforces these settings and re-exports the types under its own paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Serialize};

use super::duration::{de_duration, de_opt_duration};
use super::issue::ConfigIssue;
use super::jurisdiction::Jurisdiction;

/// Realm in `WWW-Authenticate` challenges when `[auth] realm` is not set, and the one
/// [`crate::auth::AuthError::www_authenticate`] uses.
pub const DEFAULT_REALM: &str = "phr-gateway";

/// The fix printed with a problem in `[auth]` (issuers, caches, factors).
const AUTH_FIX: &str = "see the [auth] section of config/gateway.toml";
/// The fix printed with a problem in a route's `auth` table.
const ROUTE_AUTH_FIX: &str = "see the [routes.auth] keys in config/gateway.toml";

/// Whole authentication configuration (the gateway's `[auth]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Realm in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Trusted token issuers; a token whose `iss` is not listed is refused.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// `amr` → factor category mapping for two-factor checks (AUTH-2FA-2).
    #[serde(default)]
    pub factors: FactorConfig,
    /// Capacity (entries) of the verified-token cache; bounds memory under token floods.
    #[serde(default = "default_cache_capacity")]
    pub token_cache_capacity: u64,
    /// How often every issuer's JWKS is re-fetched in the background.
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    pub refresh_interval: Duration,
    /// Minimum time between two unknown-`kid` re-fetches of one issuer, so
    /// forged `kid`s cannot make the gateway hammer the IdP.
    #[serde(default = "default_min_refetch", deserialize_with = "de_duration")]
    pub min_refetch_interval: Duration,
    /// Accepted distance between a DPoP proof's `iat` and now (both ways).
    #[serde(default = "default_skew", deserialize_with = "de_duration")]
    pub dpop_window: Duration,
    /// Capacity of the DPoP `jti` replay cache.
    #[serde(default = "default_cache_capacity")]
    pub dpop_replay_capacity: u64,
}

/// One trusted issuer (an OpenID Provider / authorization server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value (no normalisation: trailing slashes matter).
    pub issuer: String,
    /// JWKS endpoint; `https`, or `http` only to a loopback host.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// JWKS read from a local file instead of a URL (offline IdPs, tests).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Find the JWKS URL with OpenID Connect Discovery: fetch
    /// `<issuer>/.well-known/openid-configuration`, require its `issuer` to equal
    /// `issuer` exactly and take its `jwks_uri` (see [`crate::auth::discovery`]).
    #[serde(default)]
    pub discovery: bool,
    /// Explicit discovery document URL (e.g. an RFC 8414
    /// `/.well-known/oauth-authorization-server` one); implies `discovery`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Accepted `aud` values: a token must name at least one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `alg`s. Default: RS256, PS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// HMAC secret; required for, and only allowed with, HS256/384/512, and
    /// never together with public keys (prevents key-confusion attacks).
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// Claims that must be present in addition to `exp`, `iss`, `aud`, `sub`.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Tolerance for `exp`/`nbf`/`iat` between IdP and gateway clocks.
    #[serde(default = "default_skew", deserialize_with = "de_duration")]
    pub clock_skew: Duration,
    /// If set, `iat` is required and must be at most this old (AUTH-IDLE-1).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_token_age: Option<Duration>,
    /// Size limit of the raw token, checked before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Every token of this issuer must be certificate-bound (RFC 8705).
    #[serde(default)]
    pub require_cert_bound: bool,
    /// Every token of this issuer must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// Where the JWKS server is (DATA-JP-1): the gateway sends it requests, so it is a
    /// residency target like any upstream.
    #[serde(default)]
    pub jurisdiction: Option<Jurisdiction>,
    /// The JWKS server runs inside the operator's cluster (private/loopback addresses).
    #[serde(default)]
    pub in_cluster: bool,
    /// CA bundle for an `https` JWKS URL; default: the system's bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Whether a route needs a token at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid token is required (default: no anonymous access to PHI, AUTH-ID-1).
    #[default]
    Required,
    /// Anonymous allowed; a token, if sent, must be valid.
    Optional,
    /// No authentication (health checks, public metadata).
    None,
}

/// Authentication policy of one route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Whether a token is required.
    #[serde(default)]
    pub mode: AuthMode,
    /// Require two different factor categories in `amr` (AUTH-2FA-1/2).
    #[serde(default)]
    pub two_factor: bool,
    /// Accepted `acr` values; an `acr` in this set satisfies the route
    /// (alone, or as the alternative to `two_factor`).
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// If set, `auth_time` is required and must be at most this old
    /// (no long-lived logins, AUTH-2FA-2 / AUTH-IDLE-1).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_auth_age: Option<Duration>,
    /// Token must be certificate-bound to the mTLS client cert (RFC 8705, EX-TLS-2).
    #[serde(default)]
    pub require_cert_bound: bool,
    /// Token must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// Scopes the token must carry (all of them).
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// Authentication factor category (NIST SP 800-63 / MHLW guideline terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorCategory {
    /// Something the user knows (password, PIN).
    Knowledge,
    /// Something the user has (OTP device, phone, smart card, hardware key).
    Possession,
    /// Something the user is (biometrics).
    Inherence,
}

impl FactorCategory {
    /// Lower-case name, as used in headers and access records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Knowledge => "knowledge",
            Self::Possession => "possession",
            Self::Inherence => "inherence",
        }
    }
}

/// `[auth.factors]`: how `amr` values map to categories (the default mapping and the
/// checks are in [`crate::auth::two_factor`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorConfig {
    /// Count `amr: ["mfa"]` as two categories. Default false: `mfa` does not
    /// say which factors were used, so it cannot prove two *categories*.
    #[serde(default)]
    pub trust_mfa_claim: bool,
    /// Additions/overrides to the default mapping (e.g. an IdP-specific
    /// `"mynumber_card" = "possession"`).
    #[serde(default)]
    pub map: BTreeMap<String, FactorCategory>,
}

impl FactorConfig {
    /// Problems with the mapping (none possible today beyond empty names).
    pub fn validate(&self, key: &str) -> Vec<ConfigIssue> {
        self.map
            .keys()
            .filter(|k| k.is_empty() || k.as_str() == "mfa")
            .map(|k| {
                ConfigIssue::new(
                    format!("{key}.map.{k}"),
                    "cannot map an empty value or \"mfa\"; use trust_mfa_claim for mfa",
                    AUTH_FIX,
                )
            })
            .collect()
    }
}

fn default_realm() -> String {
    DEFAULT_REALM.to_string()
}
fn default_cache_capacity() -> u64 {
    100_000
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(10)
}
fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_max_token_bytes() -> usize {
    8 * 1024
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

/// True for hosts that never leave the machine, where plain `http` is acceptable.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` may be fetched for keys or metadata: `https` with a host, or `http`
/// only to a loopback host (a local test IdP never leaves the machine).
pub fn is_fetchable_url(url: &str) -> bool {
    match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => true,
        Ok(u) => u.scheme_str() == Some("http") && u.host().is_some_and(is_loopback_host),
        Err(_) => false,
    }
}

/// Path of the OpenID Connect discovery document under an issuer (OIDC Discovery §4).
pub const OIDC_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

impl IssuerConfig {
    /// The allowed algorithms, parsed. Unknown names are skipped here and
    /// reported by [`AuthConfig::validate`].
    pub fn parsed_algorithms(&self) -> Vec<Algorithm> {
        self.algorithms
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .collect()
    }

    /// Whether the JWKS URL is found by discovery (`discovery` or `discovery_url`).
    pub fn uses_discovery(&self) -> bool {
        self.discovery || self.discovery_url.is_some()
    }

    /// The discovery document URL: `discovery_url` if set, else, with `discovery = true`,
    /// the issuer without its trailing `/` followed by [`OIDC_DISCOVERY_PATH`]
    /// (OIDC Discovery §4.1). `None` without discovery.
    pub fn discovery_document_url(&self) -> Option<String> {
        match (&self.discovery_url, self.discovery) {
            (Some(u), _) => Some(u.clone()),
            (None, true) => Some(format!("{}{OIDC_DISCOVERY_PATH}", self.issuer.trim_end_matches('/'))),
            (None, false) => None,
        }
    }

    /// The URL the gateway first connects to for this issuer's keys: the discovery
    /// document, else `jwks_url` (a residency target, DATA-JP-1).
    pub fn fetch_url(&self) -> Option<String> {
        self.discovery_document_url().or_else(|| self.jwks_url.clone())
    }

    fn validate(&self, key: &str, errs: &mut Vec<ConfigIssue>) {
        let mut err = |k: &str, m: String| errs.push(ConfigIssue::new(format!("{key}.{k}"), m, AUTH_FIX));
        if self.issuer.trim().is_empty() {
            err("issuer", "must be the exact `iss` value of the IdP".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            err(
                "audiences",
                "list at least one non-empty accepted `aud` (this gateway's API identifier); \
                 without it tokens minted for other services would be accepted"
                    .into(),
            );
        }
        let mut hmac = false;
        let mut public = false;
        if self.algorithms.is_empty() {
            err(
                "algorithms",
                "must not be empty; omit the key for the default RS256, PS256, ES256, EdDSA".into(),
            );
        }
        for a in &self.algorithms {
            match a.parse::<Algorithm>() {
                Ok(alg) if alg.family() == AlgorithmFamily::Hmac => hmac = true,
                Ok(_) => public = true,
                Err(_) => err(
                    "algorithms",
                    format!(
                        "unknown algorithm {a:?} (\"none\" is never allowed); use RS256, RS384, RS512, \
                         PS256, PS384, PS512, ES256, ES384, EdDSA or, with shared_secret only, HS256/384/512"
                    ),
                ),
            }
        }
        let has_keys = self.jwks_url.is_some() || self.jwks_file.is_some() || self.uses_discovery();
        if hmac && (public || has_keys) {
            err(
                "algorithms",
                "HS256/384/512 cannot be mixed with public-key algorithms or a JWKS for the same issuer \
                 (key-confusion risk); configure the HMAC issuer separately with only shared_secret"
                    .into(),
            );
        }
        if hmac && self.shared_secret.is_none() {
            err("shared_secret", "HS* algorithms need shared_secret".into());
        }
        if let Some(secret) = &self.shared_secret {
            if !hmac || public {
                err(
                    "shared_secret",
                    "only allowed when algorithms lists only HS256/HS384/HS512; remove it for a public-key issuer"
                        .into(),
                );
            }
            let need = self
                .parsed_algorithms()
                .iter()
                .map(|a| match a {
                    Algorithm::HS384 => 48,
                    Algorithm::HS512 => 64,
                    _ => 32,
                })
                .max()
                .unwrap_or(32);
            if secret.len() < need {
                err(
                    "shared_secret",
                    format!("must be at least {need} bytes for the configured HS algorithm (RFC 7518 §3.2)"),
                );
            }
        }
        match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => err("jwks_file", "set either jwks_url or jwks_file, not both".into()),
            (None, None) if public && !self.uses_discovery() => err(
                "jwks_url",
                "public-key algorithms need jwks_url (https), jwks_file or discovery = true".into(),
            ),
            (Some(url), None) if !is_fetchable_url(url) => err(
                "jwks_url",
                format!("{url:?} must be an https URL (http only to localhost/127.0.0.1/[::1])"),
            ),
            _ => {}
        }
        self.validate_discovery(&mut err);
        if self.max_token_bytes < 256 || self.max_token_bytes > 64 * 1024 {
            err("max_token_bytes", "must be between 256 and 65536".into());
        }
        if self.clock_skew > Duration::from_secs(300) {
            err(
                "clock_skew",
                "more than 5m weakens expiry; fix clock sync (NTP) instead".into(),
            );
        }
    }
}

impl IssuerConfig {
    /// `discovery`/`discovery_url`: exclusive with a configured key source, and the
    /// document URL follows the same rule as `jwks_url`.
    fn validate_discovery(&self, err: &mut impl FnMut(&str, String)) {
        if !self.uses_discovery() {
            return;
        }
        let which = if self.discovery_url.is_some() {
            "discovery_url"
        } else {
            "discovery"
        };
        for (other, set) in [
            ("jwks_url", self.jwks_url.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
            ("shared_secret", self.shared_secret.is_some()),
        ] {
            if set {
                err(
                    which,
                    format!(
                        "cannot be combined with {other}: discovery finds the JWKS URL itself; \
                         remove {other}, or remove {which} to configure the keys by hand"
                    ),
                );
            }
        }
        if let Some(url) = self.discovery_document_url() {
            if !is_fetchable_url(&url) {
                let why = match &self.discovery_url {
                    Some(_) => format!("{url:?} must be an https URL (http only to localhost/127.0.0.1/[::1])"),
                    None => format!(
                        "the discovery URL derived from the issuer, {url:?}, must be https (http only to \
                         localhost/127.0.0.1/[::1]); set discovery_url to the provider's metadata URL"
                    ),
                };
                err(which, why);
            }
        }
    }
}

impl RoutePolicy {
    /// Problems with this route's policy, reported under `key`.
    pub fn validate(&self, key: &str) -> Vec<ConfigIssue> {
        let mut errs = Vec::new();
        let needs_token = self.two_factor
            || !self.acr_values.is_empty()
            || self.require_cert_bound
            || self.require_dpop
            || !self.required_scopes.is_empty()
            || self.max_auth_age.is_some();
        if self.mode == AuthMode::None && needs_token {
            errs.push(ConfigIssue::new(
                format!("{key}.mode"),
                "is \"none\" but the route sets token requirements; use \"required\"",
                ROUTE_AUTH_FIX,
            ));
        }
        errs
    }
}

impl AuthConfig {
    /// Every problem in the configuration; empty means usable.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut errs = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            if !seen.insert(iss.issuer.as_str()) {
                errs.push(ConfigIssue::new(
                    format!("{key}.issuer"),
                    format!("duplicate issuer {:?}; each iss may appear once", iss.issuer),
                    AUTH_FIX,
                ));
            }
            iss.validate(&key, &mut errs);
        }
        if self.token_cache_capacity == 0 {
            errs.push(ConfigIssue::new(
                "auth.token_cache_capacity",
                "must be > 0 (default 100000)",
                AUTH_FIX,
            ));
        }
        if self.refresh_interval < Duration::from_secs(10) {
            errs.push(ConfigIssue::new(
                "auth.refresh_interval",
                "must be at least 10s (default 5m)",
                AUTH_FIX,
            ));
        }
        if self.dpop_window.is_zero() || self.dpop_window > Duration::from_secs(300) {
            errs.push(ConfigIssue::new(
                "auth.dpop_window",
                "must be between 1s and 5m (default 60s)",
                AUTH_FIX,
            ));
        }
        errs.extend(self.factors.validate("auth.factors"));
        errs
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            issuers: Vec::new(),
            factors: FactorConfig::default(),
            token_cache_capacity: default_cache_capacity(),
            refresh_interval: default_refresh(),
            min_refetch_interval: default_min_refetch(),
            dpop_window: default_skew(),
            dpop_replay_capacity: default_cache_capacity(),
        }
    }
}

impl IssuerConfig {
    /// An issuer with defaults, for programmatic configuration and tests.
    pub fn new(issuer: &str, jwks_url: &str, audiences: &[&str]) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_url: Some(jwks_url.into()),
            jwks_file: None,
            discovery: false,
            discovery_url: None,
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            algorithms: default_algorithms(),
            shared_secret: None,
            required_claims: Vec::new(),
            clock_skew: default_skew(),
            max_token_age: None,
            max_token_bytes: default_max_token_bytes(),
            require_cert_bound: false,
            require_dpop: false,
            jurisdiction: None,
            in_cluster: false,
            ca_file: None,
        }
    }
}
