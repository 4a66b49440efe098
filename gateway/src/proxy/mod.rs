//! Forwarding to upstreams: pooled keep-alive connections (hyper-util), round-robin over
//! endpoints with passive health checks, upstream TLS, and the header hygiene that keeps a
//! client from speaking for the gateway.

mod connector;
pub mod egress;
mod endpoint;
pub mod headers;
pub mod websocket;

pub use connector::{ConnectError, PeerAddr};
pub use endpoint::Endpoint;

use crate::config::Upstream;
use crate::error::GatewayError;
use bytes::Bytes;
use egress::{EgressPolicy, UpstreamResolver};
use http::{Request, Response};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Request bodies sent upstream: the client's body streamed through a size limit, or a
/// body the gateway already holds (empty, or rewritten by a later safeguard).
pub type UpstreamBody = Either<Limited<Incoming>, Full<Bytes>>;

/// A client for the gateway's own requests (JWKS fetches), through the same connector
/// and residency check as forwarded traffic.
pub type GatewayClient = Client<connector::Connector, Full<Bytes>>;

pub fn gateway_client(
    target: crate::residency::jurisdiction::Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    resolver: Arc<UpstreamResolver>,
    policy: Arc<crate::residency::policy::Policy>,
) -> GatewayClient {
    let connector = connector::Connector {
        tls: tls.map(tokio_rustls::TlsConnector::from),
        connect_timeout,
        resolver,
        egress: Arc::new(EgressPolicy { policy, target }),
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// One configured upstream at run time.
pub struct UpstreamPool {
    pub name: Arc<str>,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    client: Client<connector::Connector, UpstreamBody>,
    pub response_timeout: Duration,
    eject_after: u32,
    eject_for: Duration,
    pub preserve_host: bool,
}

impl UpstreamPool {
    pub fn build(
        name: &str,
        config: &Upstream,
        resolver: Arc<UpstreamResolver>,
        policy: Arc<crate::residency::policy::Policy>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::upstream::build(config)?.map(tokio_rustls::TlsConnector::from);
        let egress = Arc::new(EgressPolicy {
            policy,
            target: crate::residency::targets::upstream_target(name, config),
        });
        let connector = connector::Connector {
            tls,
            connect_timeout: config.connect_timeout,
            resolver,
            egress,
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.pool_max_idle)
            // The gateway sets Host itself (see headers::prepare_upstream).
            .set_host(false)
            .build(connector);
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .expect("endpoints are validated with the config");
        Ok(Self {
            name: Arc::from(name),
            endpoints,
            next: AtomicUsize::new(0),
            client,
            response_timeout: config.response_timeout,
            eject_after: config.eject_after_failures,
            eject_for: config.eject_for,
            preserve_host: config.preserve_host,
        })
    }

    /// Round-robin over endpoints that are not ejected.
    pub fn pick(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| !e.is_ejected())
    }

    /// Sends a prepared request to `endpoint`, with the response timeout, and keeps the
    /// endpoint's health up to date.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let result = tokio::time::timeout(self.response_timeout, self.client.request(req)).await;
        match result {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                upstream: self.name.to_string(),
                seconds: self.response_timeout.as_secs_f64(),
            }),
            Ok(Ok(resp)) => {
                endpoint.record_success();
                Ok(resp)
            }
            Ok(Err(e)) => Err(self.classify_error(endpoint, e)),
        }
    }

    fn classify_error(&self, endpoint: &Endpoint, e: hyper_util::client::legacy::Error) -> GatewayError {
        let upstream = self.name.to_string();
        // Walk the source chain: our connector's error or a body-limit error may be inside.
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(ce) = s.downcast_ref::<ConnectError>() {
                if let ConnectError::Egress(reason) = ce {
                    return GatewayError::EgressRefused {
                        upstream,
                        reason: reason.clone(),
                    };
                }
                metrics::counter!("phr_upstream_errors_total", "upstream" => upstream.clone(), "kind" => "connect")
                    .increment(1);
                if endpoint.record_failure(self.eject_after, self.eject_for) {
                    metrics::counter!("phr_endpoint_ejections_total", "upstream" => upstream.clone(), "endpoint" => endpoint.base.clone())
                        .increment(1);
                    tracing::warn!(upstream = %upstream, endpoint = %endpoint.base, eject_for_s = self.eject_for.as_secs(), "endpoint ejected after repeated connection failures");
                }
                return GatewayError::UpstreamConnect {
                    upstream,
                    reason: ce.to_string(),
                };
            }
            if let Some(limit) = s.downcast_ref::<http_body_util::LengthLimitError>() {
                let _ = limit;
                return GatewayError::BodyTooLarge { limit: 0 };
            }
            source = s.source();
        }
        metrics::counter!("phr_upstream_errors_total", "upstream" => upstream.clone(), "kind" => "request")
            .increment(1);
        GatewayError::UpstreamFailed {
            upstream,
            reason: e.to_string(),
        }
    }
}
