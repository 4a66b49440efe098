//! The limits as the request path uses them: built from the config with the rest of the
//! runtime, and called from the pipeline's phases (pre-auth, post-auth, after response)
//! and from the accept loop (connections and handshakes).

use super::auth_backoff::AuthBackoff;
use super::bulk_detector::BulkAccessDetector;
use super::config::{KeyKind, LimitsConfig, PolicyConfig};
use super::connections::ConnectionLimiter;
use super::decision::RateLimitDecision;
use super::local::LocalLimiter;
use super::shared::{RedisStore, SharedLimiter};
use super::subject_blocks::BlockStore;
use super::upload_filter::UploadFilter;
use std::collections::HashMap;
use std::sync::Arc;

/// One policy's limiter, local (governor) or shared (Redis).
pub enum Limiter {
    /// Counted in this process only (`shared = false`).
    Local(LocalLimiter),
    /// Counted in Redis across every gateway instance (`shared = true`).
    Shared(SharedLimiter),
}

impl Limiter {
    /// Charges `cost` units to `key` and says whether the request may pass (AV-DOS-1).
    pub async fn check(&self, key: &str, cost: u32) -> RateLimitDecision {
        match self {
            Self::Local(l) => l.check(key, cost),
            Self::Shared(s) => s.check(key, cost).await,
        }
    }
}

/// A policy a route applies: what it counts by, its costs, its limiter.
pub struct RouteRateLimit {
    /// What the policy counts by (source IP, subject, client).
    pub key: KeyKind,
    /// The policy's section, for its costs and limits.
    pub config: PolicyConfig,
    /// The limiter shared by every route that names this policy.
    pub limiter: Arc<Limiter>,
}

/// Everything the limits keep at run time.
pub struct Protection {
    /// One limiter per `[rate_limits.policies.NAME]`, by name (AV-DOS-1).
    pub policies: HashMap<String, Arc<Limiter>>,
    /// The same policies' sections, by name.
    pub configs: HashMap<String, PolicyConfig>,
    /// Per-IP connection cap and handshake rate, consulted on accept (EX-NET-3).
    pub connections: ConnectionLimiter,
    /// Failed-authentication counters and blocks (AUTH-LOCK-1).
    pub auth_backoff: AuthBackoff,
    /// Mass-read detector (LOG-ACC-1); `None` when `[bulk_access]` is absent.
    pub bulk: Option<BulkAccessDetector>,
    /// Content filter for upload bodies (EX-FILE-1).
    pub uploads: UploadFilter,
    /// Routes with an upload rule: only their bodies are buffered for inspection.
    pub upload_routes: std::collections::HashSet<String>,
    sweeper: std::sync::atomic::AtomicBool,
}

/// Why the limiters could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    /// The Redis client for shared limits could not be made.
    #[error(transparent)]
    Redis(#[from] super::shared::SharedError),
    /// A policy with `shared = true` but no `[redis]` section.
    #[error("rate_limits.policies.{policy}: shared = true needs a [redis] section")]
    SharedWithoutRedis {
        /// The policy's name.
        policy: String,
    },
    /// A limiter's settings are out of range.
    #[error(transparent)]
    Limiter(#[from] super::local::LimiterError),
}

impl Protection {
    /// Builds every limiter; `blocks` survives reloads (it is the operator's list).
    /// `redis_at` is the checked address Redis is dialled at (DATA-JP-1).
    pub fn build(
        config: &LimitsConfig,
        blocks: Arc<dyn BlockStore>,
        redis_at: Option<std::net::SocketAddr>,
    ) -> Result<Self, ProtectionError> {
        let store = match &config.redis {
            Some(r) => Some(RedisStore::new(r, redis_at)?),
            None => None,
        };
        let mut policies = HashMap::new();
        for (name, p) in &config.rate_limits.policies {
            let limiter = match (p.shared, &store) {
                (true, Some(store)) => Limiter::Shared(SharedLimiter::from_policy(name, p, store.clone())),
                (true, None) => return Err(ProtectionError::SharedWithoutRedis { policy: name.clone() }),
                (false, _) => Limiter::Local(LocalLimiter::from_policy(name, p)?),
            };
            policies.insert(name.clone(), Arc::new(limiter));
        }
        Ok(Self {
            policies,
            configs: config.rate_limits.policies.clone().into_iter().collect(),
            connections: ConnectionLimiter::new(&config.connection_limits)?,
            auth_backoff: AuthBackoff::new(&config.auth_backoff),
            bulk: config
                .bulk_access
                .as_ref()
                .map(|b| BulkAccessDetector::new(b, Some(blocks))),
            uploads: UploadFilter::new(&config.upload_filter),
            upload_routes: config.upload_filter.routes.keys().cloned().collect(),
            sweeper: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The policies a route names, in order.
    pub fn route_policies(&self, names: &[String]) -> Vec<RouteRateLimit> {
        names
            .iter()
            .filter_map(|n| {
                Some(RouteRateLimit {
                    key: self.configs.get(n)?.key,
                    config: self.configs.get(n)?.clone(),
                    limiter: self.policies.get(n)?.clone(),
                })
            })
            .collect()
    }

    /// Runs periodic eviction of expired keys, so memory stays bounded between floods.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        // Once per Protection: a reload that keeps it must not start a second sweeper.
        if self.sweeper.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                for l in this.policies.values() {
                    if let Limiter::Local(l) = &**l {
                        l.sweep();
                    }
                }
            }
        });
    }
}
