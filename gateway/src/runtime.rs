//! Everything built from one configuration file, and its atomic replacement.
//!
//! An [`ActiveConfig`] is immutable: routes, upstream pools and listener TLS configs made from
//! one `Config`. Reload builds a complete new `ActiveConfig` first and swaps the pointer only if
//! every part of it built; requests in flight keep the snapshot they started with. So a
//! reload is all-or-nothing, and a broken file keeps the last good set running.

use crate::auth::fetch::GatewayJwksFetcher;
use crate::auth::{Authenticator, MemoryRevocations, RevocationList, RoutePolicy};
use crate::config::{self, Config, ConfigIssue};
use crate::limits::enforce::Protection;
use crate::limits::subject_blocks::{BlockStore, MemoryBlockStore};
use crate::metrics::RouteMetrics;
use crate::proxy::UpstreamPool;
use crate::residency::allow_list::{AllowList, AllowListError};
use crate::residency::egress::UpstreamResolver;
use crate::residency::{policy::ResidencyPolicy, storage_check::CheckedStorage};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One configured route in its active form: matched by host and prefix, with its
/// upstream pool, token policy, FHIR policy and rate limits ready to apply.
pub struct ActiveRoute {
    pub name: Arc<str>,
    host: Option<String>,
    pub prefix: String,
    pub upstream: Arc<UpstreamPool>,
    pub strip_prefix: bool,
    pub websocket: bool,
    pub max_body_bytes: u64,
    pub metrics: RouteMetrics,
    pub auth: RoutePolicy,
    pub fhir: bool,
    pub fhir_policy: fhir_adapter::Policy,
    pub public_base_url: Option<String>,
    /// Rate-limit policies this route applies, in order.
    pub rate_limits: Vec<crate::limits::enforce::RouteRateLimit>,
    /// Listeners the route is reachable from; empty means all (EX-SEG-1).
    listeners: Vec<Arc<str>>,
    /// Requests without a verified client certificate are refused (EX-MTLS-1).
    pub client_cert_required: bool,
    /// FHIR routes: `GET <base>/metadata` needs a token (`metadata_requires_auth`).
    pub metadata_requires_auth: bool,
    /// FHIR routes: the serialised SMART configuration document, if the route has one.
    pub smart_configuration: Option<bytes::Bytes>,
}

impl ActiveRoute {
    fn reachable_from(&self, listener: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|l| &**l == listener)
    }

    fn host_matches(&self, host: &str) -> bool {
        self.host
            .as_deref()
            .is_none_or(|pattern| crate::util::host::host_matches(pattern, host))
    }
}

/// The active configuration: everything built from one config file (routes, upstream
/// pools, listener TLS, limits, the authenticator). Immutable; a reload builds a new one
/// and swaps it in whole, and each request keeps the one it started with.
pub struct ActiveConfig {
    pub config: Config,
    /// Longest prefix first, so the first match is the most specific.
    routes: Vec<Arc<ActiveRoute>>,
    pub tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// When the certificates of this configuration expire (exported on `/metrics`).
    pub cert_expiry: Vec<crate::tls::expiry::CertExpiry>,
    pub hsts: Option<HeaderValue>,
    /// Present when issuers are configured.
    pub auth: Option<Arc<Authenticator>>,
    /// Rate limits, connection limits, auth back-off, bulk detector, upload filter.
    pub protection: Arc<Protection>,
    protection_fingerprint: String,
    /// The subject block list (kept by `GatewayState`, so it survives reloads).
    pub blocks: Arc<dyn BlockStore>,
}

/// Why a config could not be turned into a running state.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The file could not be read, parsed or validated.
    #[error(transparent)]
    Load(#[from] config::LoadError),
    /// A listener's certificates, keys, client CA bundle or CRLs.
    #[error("listener {listener:?}: {source}")]
    ListenerTls {
        /// The listener's `name`.
        listener: String,
        /// What was wrong with its TLS files.
        source: crate::tls::TlsError,
    },
    /// An upstream's CA bundle or client certificate.
    #[error("upstream {upstream:?}: {source}")]
    UpstreamTls {
        /// The upstream's name (`[upstreams.NAME]`).
        upstream: String,
        /// What was wrong with its TLS files.
        source: crate::tls::TlsError,
    },
    /// `residency.allowed_networks` or one of `residency.allowed_networks_files`.
    #[error("residency allow-list: {0}")]
    AllowList(#[from] AllowListError),
    /// Where the store or Redis is (the residency check of the storage targets).
    #[error("residency: {0}")]
    Residency(String),
    /// The limits could not be built (e.g. the Redis client).
    #[error("limits: {0}")]
    Protection(String),
    /// The authenticator could not be built.
    #[error("auth: {0}")]
    Auth(#[from] AuthBuildError),
    /// An issuer's keys could not be loaded at start.
    #[error("auth: {0}")]
    KeysNotLoaded(#[from] crate::auth::KeysNotLoaded),
    /// A reload changed the listeners (names or bind addresses).
    #[error("listeners cannot change on reload ({0}); restart the gateway to change them")]
    ListenersChanged(String),
    /// A reload changed settings read once at start-up (the names are listed).
    #[error("{0} cannot change on reload (read once at start-up); put the old value back to reload the rest, or restart the gateway to change it")]
    RestartRequired(String),
}

/// Why the authenticator of a runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthBuildError {
    /// The HTTPS clients of the issuers' JWKS URLs.
    #[error(transparent)]
    JwksClient(#[from] crate::auth::fetch::FetcherError),
    /// The `[auth]` configuration (each issue as `key: problem`, separated by `; `).
    #[error("{}", .0.iter().map(|i| format!("{}: {}", i.key, i.problem)).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigIssue>),
}

impl ActiveConfig {
    /// `storage` is what the residency check of the store and Redis established
    /// ([`crate::residency::storage_check::check_storage_targets`]), run before this.
    pub fn build(
        config: Config,
        storage: &CheckedStorage,
        revocations: Arc<dyn RevocationList>,
        blocks: Arc<dyn BlockStore>,
    ) -> Result<Self, BuildError> {
        Self::build_after(config, storage, revocations, blocks, None)
    }

    /// As [`ActiveConfig::build`], reusing the previous runtime's limits when their sections
    /// did not change: a reload must not lift lockouts, refill budgets or forget open
    /// connections (the state is the protection).
    pub fn build_after(
        config: Config,
        storage: &CheckedStorage,
        revocations: Arc<dyn RevocationList>,
        blocks: Arc<dyn BlockStore>,
        previous: Option<&ActiveConfig>,
    ) -> Result<Self, BuildError> {
        let mut tls = HashMap::new();
        for l in &config.listeners {
            let server = crate::tls::server::build(l).map_err(|source| BuildError::ListenerTls {
                listener: l.name.clone(),
                source,
            })?;
            tls.insert(l.name.clone(), server);
        }
        let r = &config.residency;
        let allow = AllowList::load(&r.allowed_networks, &r.allowed_networks_files)?;
        tracing::debug!(ranges = ?allow.range_counts(), "residency allow-list loaded");
        let policy = Arc::new(ResidencyPolicy::new(allow));
        let resolver = Arc::new(UpstreamResolver::new(r.hosts_file.as_deref()));
        let mut pools = HashMap::new();
        for (name, u) in &config.upstreams {
            let pool = UpstreamPool::build(name, u, resolver.clone(), policy.clone()).map_err(|source| {
                BuildError::UpstreamTls {
                    upstream: name.clone(),
                    source,
                }
            })?;
            pools.insert(name.clone(), Arc::new(pool));
        }
        let auth = match config.auth.issuers.is_empty() {
            true => None,
            false => {
                let fetcher = GatewayJwksFetcher::new(&config.auth.issuers, resolver.clone(), policy.clone())
                    .map_err(AuthBuildError::JwksClient)?;
                let a = Authenticator::new(config.auth.clone(), Arc::new(fetcher), revocations)
                    .map_err(AuthBuildError::Config)?;
                Some(Arc::new(a))
            }
        };
        let limits_config = config.protection();
        // The sections have no PartialEq; their Debug form is a faithful comparison.
        // Redis's checked address is part of it: if its name now resolves elsewhere,
        // the new (checked) address must be the one dialled.
        let fingerprint = format!("{limits_config:?} redis at {:?}", storage.redis);
        let protection = match previous {
            Some(p) if p.protection_fingerprint == fingerprint => p.protection.clone(),
            _ => Arc::new(
                Protection::build(&limits_config, blocks.clone(), storage.redis)
                    .map_err(|e| BuildError::Protection(e.to_string()))?,
            ),
        };
        let mut routes: Vec<Arc<ActiveRoute>> = config
            .routes
            .iter()
            .map(|r| {
                Arc::new(ActiveRoute {
                    name: Arc::from(r.name.as_str()),
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    prefix: r.path_prefix.clone(),
                    upstream: pools[&r.upstream].clone(),
                    strip_prefix: r.strip_prefix,
                    websocket: r.websocket,
                    max_body_bytes: r.max_body_bytes.unwrap_or(config.limits.max_body_bytes),
                    metrics: RouteMetrics::new(&r.name),
                    auth: r.auth.clone(),
                    fhir: r.fhir,
                    fhir_policy: fhir_policy(r, &config.limits),
                    public_base_url: r.public_base_url.clone(),
                    rate_limits: protection.route_policies(&r.rate_limits),
                    listeners: r.listeners.iter().map(|l| Arc::from(l.as_str())).collect(),
                    client_cert_required: r.client_cert == config::RouteClientCert::Required,
                    metadata_requires_auth: r.metadata_requires_auth,
                    smart_configuration: r.smart.as_ref().map(|s| bytes::Bytes::from(s.document().to_string())),
                })
            })
            .collect();
        // Host-specific routes before host-agnostic ones, then longest prefix first.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        let hsts = match config.gateway.hsts_max_age.as_secs() {
            0 => None,
            s => HeaderValue::from_str(&format!("max-age={s}; includeSubDomains")).ok(),
        };
        Ok(Self {
            blocks,
            protection,
            protection_fingerprint: fingerprint,
            auth,
            cert_expiry: crate::tls::expiry::of_config(&config),
            config,
            routes,
            tls,
            hsts,
        })
    }

    /// Builds everything a config needs without serving it: what `check-config` runs
    /// beyond parsing (certificates, keys, CA bundles, CRLs), given the storage targets
    /// `run` would check first ([`crate::residency::storage_check::check_storage_targets`]).
    pub fn check(config: &Config, storage: &CheckedStorage) -> Result<(), BuildError> {
        ActiveConfig::build(
            config.clone(),
            storage,
            Arc::new(MemoryRevocations::new()),
            Arc::new(MemoryBlockStore::new()),
        )
        .map(|_| ())
    }

    /// What must happen before this runtime may serve: every issuer's keys loaded.
    pub async fn start(&self) -> Result<(), BuildError> {
        if let Some(auth) = &self.auth {
            auth.start().await?;
        }
        self.protection.spawn_sweeper();
        // Active health checks, once per upstream a route uses (AV-BCP-1); each task ends
        // when this runtime is replaced and dropped.
        let mut started: Vec<&Arc<UpstreamPool>> = Vec::new();
        for r in &self.routes {
            if !started.iter().any(|p| Arc::ptr_eq(p, &r.upstream)) {
                crate::proxy::health::spawn(&r.upstream);
                started.push(&r.upstream);
            }
        }
        Ok(())
    }

    /// Every route, most specific first (readiness looks at each one's upstream).
    pub fn routes(&self) -> &[Arc<ActiveRoute>] {
        &self.routes
    }

    /// The most specific route for a host (without port) and a path among the routes
    /// reachable from `listener`: a route bound to other listeners does not exist here.
    pub fn route(&self, listener: &str, host: &str, path: &str) -> Option<&Arc<ActiveRoute>> {
        self.routes
            .iter()
            .find(|r| r.reachable_from(listener) && r.host_matches(host) && path.starts_with(r.prefix.as_str()))
    }

    pub fn peer_is_trusted(&self, ip: IpAddr) -> bool {
        self.config.gateway.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// What the running gateway holds: the current [`ActiveConfig`] (swapped atomically on
/// reload) and what survives reloads (the config path, revocations, the block list, the
/// access-record writer).
pub struct GatewayState {
    pub current: ArcSwap<ActiveConfig>,
    pub config_path: PathBuf,
    /// Revoked tokens and subjects; survives reloads, refreshed from the store.
    pub revocations: Arc<MemoryRevocations>,
    /// Subjects blocked by the bulk-access detector or an operator; survives reloads.
    pub blocks: Arc<dyn BlockStore>,
    /// The access-record writer; `None` only with `audit.enabled = false`.
    pub audit: Option<crate::audit::writer::AuditHandle>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
}

impl GatewayState {
    pub fn new(
        runtime: ActiveConfig,
        config_path: PathBuf,
        revocations: Arc<MemoryRevocations>,
        blocks: Arc<dyn BlockStore>,
        audit: Option<crate::audit::writer::AuditHandle>,
    ) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(runtime),
            config_path,
            revocations,
            blocks,
            audit,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// Re-reads the config file and swaps in the new runtime, or keeps the old one and
    /// says why. Certificates, keys, CA bundles and CRLs are re-read as part of it.
    pub async fn reload(&self) -> Result<(), BuildError> {
        let result = self.try_reload().await;
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        metrics::counter!("phr_config_reloads_total", "result" => outcome).increment(1);
        match &result {
            Ok(()) => {
                tracing::info!(config = %self.config_path.display(), "configuration reloaded")
            }
            Err(e) => {
                tracing::error!(config = %self.config_path.display(), error = %e, "reload rejected; the last good configuration stays in force")
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), BuildError> {
        let config = config::load(&self.config_path)?;
        // What `check-config` and start-up refuse, a reload refuses too (crate::preflight).
        let issues = crate::preflight::file_and_address_issues(&config);
        if !issues.is_empty() {
            return Err(BuildError::Load(config::LoadError::Invalid {
                file: self.config_path.clone(),
                issues,
            }));
        }
        let old = self.current.load();
        let before: Vec<_> = old.config.listeners.iter().map(|l| (&l.name, l.bind)).collect();
        let after: Vec<_> = config.listeners.iter().map(|l| (&l.name, l.bind)).collect();
        if before != after {
            return Err(BuildError::ListenersChanged(format!("{before:?} -> {after:?}")));
        }
        let restart_only = restart_only_changes(&old.config, &config);
        if !restart_only.is_empty() {
            return Err(BuildError::RestartRequired(restart_only.join(", ")));
        }
        // Where Redis and the store are is checked again: a reload must not point them
        // abroad, nor keep dialling an address the new allow-list refuses (DATA-JP-1).
        let storage = crate::residency::storage_check::check_storage_targets(&config)
            .await
            .map_err(|e| BuildError::Residency(e.to_string()))?;
        let runtime = ActiveConfig::build_after(
            config,
            &storage,
            self.revocations.clone(),
            self.blocks.clone(),
            Some(&old),
        )?;
        runtime.start().await?;
        self.current.store(Arc::new(runtime));
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

/// The adapter's policy for a route: body limits and the extra operations it allows.
fn fhir_policy(route: &config::Route, limits: &config::Limits) -> fhir_adapter::Policy {
    let max = route.max_body_bytes.unwrap_or(limits.max_body_bytes);
    fhir_adapter::Policy {
        limits: fhir_adapter::Limits {
            max_body_bytes: usize::try_from(max).unwrap_or(usize::MAX),
            ..Default::default()
        },
        allowed_operations: route
            .fhir_operations
            .iter()
            .filter_map(|(name, letters)| {
                Some(fhir_adapter::AllowedOperation {
                    name: name.clone(),
                    permission: fhir_adapter::Perms::from_v2(letters)?,
                })
            })
            .collect(),
    }
}

/// Settings that are read once at start-up: the store and the access-record writer
/// (opened once; `gateway.instance_id` names the writer's hash chain, so records of one
/// process must carry one id), the admin listener, the runtime's threads and the
/// connection semaphore. A reload that changes one of them is refused as a whole,
/// instead of reporting success while part of the new file is silently not in force.
/// Only section names are reported: `[store]` may hold a database password.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differ(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    [
        ("[store]", differ(&old.store, &new.store)),
        ("[audit]", differ(&old.audit, &new.audit)),
        ("admin.bind", old.admin.bind != new.admin.bind),
        (
            "gateway.instance_id",
            old.gateway.instance_id != new.gateway.instance_id,
        ),
        (
            "gateway.handover_socket",
            old.gateway.handover_socket != new.gateway.handover_socket,
        ),
        (
            "gateway.worker_threads",
            old.gateway.worker_threads != new.gateway.worker_threads,
        ),
        (
            "limits.max_connections",
            old.limits.max_connections != new.limits.max_connections,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
