//! Active health checks of upstream endpoints (AV-BCP-1).
//!
//! Why: passive health alone (an endpoint is ejected for `eject_for` after
//! `eject_after_failures` connection failures, see [`super::endpoint`]) keeps a backend
//! that restarted out of service for the whole ejection period, and learns that an idle
//! route's backend died only when a client's request fails. So each upstream's endpoints
//! are also probed every `interval`: `unhealthy_threshold` failed probes in a row take an
//! endpoint out of service until a probe succeeds, and `healthy_threshold` successful
//! probes in a row (1 by default) bring an ejected endpoint back at once, whatever
//! ejected it.
//!
//! A probe is `GET path` on a new connection opened by the upstream's own connector: the
//! residency check (DATA-JP-1) and the verified upstream TLS (EX-TLS-1, with the client
//! certificate if configured) apply exactly as for traffic, so a probe can only succeed
//! where a request could go. It succeeds when the response head arrives within `timeout`
//! with a status below 500: any answer short of a server error shows the process is up
//! and speaks HTTP (a 404 or 401 on a path that is not a health endpoint must not take a
//! healthy backend out); point `path` at the backend's health endpoint to have its 503
//! during start-up or maintenance count.
//!
//! On by default, every 5 s: the cost is one small request per endpoint per interval
//! per gateway instance, and the gain is that a restarted backend is back within about
//! one interval instead of `eject_for` (30 s), and `/readyz` sees a dead backend even
//! when no client is using it. `enabled = false` leaves passive ejection alone.
//!
//! Metrics: `phr_upstream_probes_total{upstream,endpoint,result="ok"|"failed"}` and
//! `phr_endpoint_healthy{upstream,endpoint}` (1 or 0, refreshed at each scrape, see
//! [`export_gauges`]); `phr_endpoint_ejections_total` counts probe ejections too.

use super::{Endpoint, UpstreamPool};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Consecutive probe outcomes of one endpoint (kept by its probe task only).
#[derive(Default, Clone, Copy)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// Starts the probe task of `pool` if its health check is enabled. The task holds the
/// pool weakly: it ends once the runtime that built the pool is gone (after a reload).
pub fn spawn(pool: &Arc<UpstreamPool>) {
    if !pool.health.enabled {
        return;
    }
    let weak = Arc::downgrade(pool);
    let interval = pool.health.interval;
    let mut streaks = vec![Streak::default(); pool.endpoints.len()];
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            // Concurrently: a dead endpoint's timeout must not delay the others' probes.
            let mut probes = tokio::task::JoinSet::new();
            for i in 0..pool.endpoints.len() {
                let pool = pool.clone();
                probes.spawn(async move { (i, probe(&pool, &pool.endpoints[i]).await) });
            }
            while let Some(done) = probes.join_next().await {
                if let Ok((i, result)) = done {
                    apply(&pool, &pool.endpoints[i], &mut streaks[i], result);
                }
            }
        }
    });
}

/// Updates one endpoint's state from one probe's outcome.
fn apply(pool: &UpstreamPool, endpoint: &Endpoint, streak: &mut Streak, result: Result<StatusCode, ProbeError>) {
    let h = &pool.health;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("phr_upstream_probes_total", "upstream" => pool.name.to_string(), "endpoint" => endpoint.base.clone(), "result" => outcome)
        .increment(1);
    match result {
        Ok(status) => {
            streak.failed = 0;
            streak.ok = streak.ok.saturating_add(1);
            if streak.ok >= h.healthy_threshold && endpoint.restore() {
                tracing::info!(upstream = %pool.name, endpoint = %endpoint.base, status = status.as_u16(), "endpoint back in service: a health probe succeeded");
            }
        }
        Err(reason) => {
            streak.ok = 0;
            streak.failed = streak.failed.saturating_add(1);
            tracing::debug!(upstream = %pool.name, endpoint = %endpoint.base, reason = %reason, "health probe failed");
            if streak.failed >= h.unhealthy_threshold && endpoint.mark_down() {
                metrics::counter!("phr_endpoint_ejections_total", "upstream" => pool.name.to_string(), "endpoint" => endpoint.base.clone())
                    .increment(1);
                tracing::warn!(upstream = %pool.name, endpoint = %endpoint.base, failed_probes = streak.failed, reason = %reason, "endpoint taken out of service until a health probe succeeds");
            }
        }
    }
}

/// One probe: connect (residency check, TLS), `GET path`, wait for the response head.
async fn probe(pool: &UpstreamPool, endpoint: &Endpoint) -> Result<StatusCode, ProbeError> {
    let h = &pool.health;
    let exchange = async {
        let stream = pool
            .connector
            .connect_to(&endpoint.host, endpoint.port, endpoint.tls)
            .await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);
        let req = Request::get(h.path.as_str())
            .header(header::HOST, HeaderValue::from_str(&endpoint.authority)?)
            .header(header::USER_AGENT, PROBE_USER_AGENT)
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())?;
        let result = sender.send_request(req).await;
        // The body is not needed; dropping the connection closes it.
        driver.abort();
        let status = result?.status();
        match status.is_server_error() {
            true => Err(ProbeError::ServerError(status)),
            false => Ok(status),
        }
    };
    match tokio::time::timeout(h.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::NoAnswer(h.timeout)),
    }
}

/// Why a health probe failed; logged with the probe.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The connection failed (residency check, TCP, TLS).
    #[error("{0}")]
    Connect(#[from] super::connector::ConnectError),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The endpoint's authority is not a valid `Host` header.
    #[error("{0}")]
    Host(#[from] http::header::InvalidHeaderValue),
    /// The probe request could not be built.
    #[error("{0}")]
    Request(#[from] http::Error),
    /// The endpoint answered with a 5xx status.
    #[error("answered {0}")]
    ServerError(StatusCode),
    /// No response head within `health.timeout`.
    #[error("no answer within {0:?}")]
    NoAnswer(std::time::Duration),
}

/// The `User-Agent` of probes, so a backend's logs can tell them from traffic.
pub const PROBE_USER_AGENT: &str = "phr-gateway-health-check";

/// Sets `phr_endpoint_healthy` for every endpoint of `pools` (at each `/metrics` scrape).
pub fn export_gauges<'a>(pools: impl Iterator<Item = &'a Arc<UpstreamPool>>) {
    for pool in pools {
        for e in &pool.endpoints {
            let healthy = if e.is_ejected() { 0.0 } else { 1.0 };
            metrics::gauge!("phr_endpoint_healthy", "upstream" => pool.name.to_string(), "endpoint" => e.base.clone())
                .set(healthy);
        }
    }
}

/// How many of `pool`'s endpoints are in service now (the route's
/// `phr_route_healthy_endpoints` gauge; 0 means it answers 503).
pub fn healthy_endpoints(pool: &UpstreamPool) -> usize {
    pool.endpoints.iter().filter(|e| !e.is_ejected()).count()
}
