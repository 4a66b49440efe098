//! What `/readyz` answers (AV-BCP-1): ready when the gateway has started, is not
//! draining, and no more than `[health] max_unhealthy_route_share` of its routes are
//! without a healthy endpoint.
//!
//! Why upstream health belongs in readiness: an instance whose route has no healthy
//! endpoint can only answer that route's requests with 503, while another instance
//! behind the same load balancer may still reach the backend (or will once its own
//! probes see it back). Saying "not ready" moves the traffic there; the 503 carries
//! `Retry-After`, the time until the next health probe may bring an endpoint back.

use crate::runtime::GatewayState;
use std::time::Duration;

/// The answer, with the reason an operator reads in the body.
pub struct Readiness {
    /// `true`: `/readyz` answers 200; `false`: 503 with `Retry-After`.
    pub ready: bool,
    /// One line for the response body: `ready`, or what is wrong, naming each route
    /// without a healthy endpoint and its upstream.
    pub reason: String,
    /// For a 503: when to ask again.
    pub retry_after: Duration,
}

/// Evaluates readiness now.
pub fn evaluate(shared: &GatewayState) -> Readiness {
    if !shared.is_ready() {
        return Readiness {
            ready: false,
            reason: "not ready: starting or draining".into(),
            retry_after: crate::error::UNAVAILABLE_RETRY_AFTER,
        };
    }
    let runtime = shared.current.load();
    let routes = runtime.routes();
    let unhealthy: Vec<_> = routes.iter().filter(|r| !r.upstream.has_healthy_endpoint()).collect();
    metrics::gauge!("phr_routes_without_healthy_endpoint").set(unhealthy.len() as f64);
    let share = match routes.len() {
        0 => 0.0,
        n => unhealthy.len() as f64 / n as f64,
    };
    if unhealthy.is_empty() || share <= runtime.config.health.max_unhealthy_route_share {
        return Readiness {
            ready: true,
            reason: "ready".into(),
            retry_after: Duration::ZERO,
        };
    }
    let names: Vec<String> = unhealthy
        .iter()
        .map(|r| format!("route {:?} (upstream {:?})", r.name, r.upstream.name))
        .collect();
    Readiness {
        ready: false,
        reason: format!(
            "not ready: {} of {} routes have no healthy endpoint, above health.max_unhealthy_route_share = {}: {}",
            unhealthy.len(),
            routes.len(),
            runtime.config.health.max_unhealthy_route_share,
            names.join(", ")
        ),
        retry_after: unhealthy
            .iter()
            .map(|r| r.upstream.retry_after())
            .min()
            .unwrap_or(crate::error::UNAVAILABLE_RETRY_AFTER),
    }
}
