//! Forwarding to upstreams: pooled keep-alive connections, round-robin over endpoints
//! with passive and active health checks, upstream TLS, and the header hygiene that keeps a client
//! from speaking for the gateway.

pub mod body;
mod connector;
mod endpoint;
mod forward;
pub mod headers;
pub mod health;
mod pool;
pub mod public_url;
pub mod websocket;

pub use connector::ConnectError;
pub use endpoint::Endpoint;
pub use forward::{forward, ForwardPlan, Outgoing};

use crate::config::Upstream;
use crate::residency::egress::{EgressPolicy, UpstreamResolver};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pool::Conn;
use std::error::Error as _;
use std::net::SocketAddr;
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
    policy: Arc<crate::residency::policy::ResidencyPolicy>,
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

/// How long an unused upstream connection may be reused; upstream servers commonly close
/// idle keep-alive connections after 60 s or more, so older ones are closed by us first.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// One configured upstream at run time.
pub struct UpstreamPool {
    pub name: Arc<str>,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    connector: connector::Connector,
    pub response_timeout: Duration,
    eject_after: u32,
    eject_for: Duration,
    pub preserve_host: bool,
    health: crate::config::health::HealthCheckConfig,
}

impl UpstreamPool {
    pub fn build(
        name: &str,
        config: &Upstream,
        resolver: Arc<UpstreamResolver>,
        policy: Arc<crate::residency::policy::ResidencyPolicy>,
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
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map(|e| e.keeping(config.pool_max_idle, IDLE_TIMEOUT)))
            .collect::<Result<Vec<_>, _>>()
            .expect("endpoints are validated with the config");
        Ok(Self {
            name: Arc::from(name),
            endpoints,
            next: AtomicUsize::new(0),
            connector,
            response_timeout: config.response_timeout,
            eject_after: config.eject_after_failures,
            eject_for: config.eject_for,
            preserve_host: config.preserve_host,
            health: config.health_check.clone(),
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

    /// Whether any endpoint is in service (what `/readyz` asks of each route).
    pub fn has_healthy_endpoint(&self) -> bool {
        self.endpoints.iter().any(|e| !e.is_ejected())
    }

    /// When an endpoint may be back, for the `Retry-After` of a 503 when none is: the
    /// soonest end of an ejection, or the next probe if that is sooner (a successful
    /// probe ends any ejection).
    pub fn retry_after(&self) -> Duration {
        let soonest = self
            .endpoints
            .iter()
            .filter_map(|e| e.ejected_for())
            .min()
            .unwrap_or(Duration::ZERO);
        match self.health.enabled {
            true => soonest.min(self.health.interval),
            false => soonest,
        }
    }

    /// Sends a prepared request (origin-form URI, `Host` set) to `endpoint`, with the
    /// response timeout, and keeps the endpoint's health up to date. Returns the response
    /// and the address that served it (returned beside the response rather than as a
    /// response extension, which would cost three allocations per request).
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, SocketAddr), UpstreamError> {
        // Boxed: the exchange (pool checkout, connect, handshake) is the largest
        // state in the request's future, and that future is moved whole into
        // hyper's dispatcher (HTTP/1.1) or a task per stream (HTTP/2). Boxing it
        // took the future from 6.9 to 4.3 KiB and 4-6 % off CPU per small request.
        match tokio::time::timeout(self.response_timeout, Box::pin(self.exchange(endpoint, req))).await {
            Err(_) => Err(UpstreamError::Timeout {
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

    /// One exchange: on a ready pooled connection if there is one, else on a new one. A
    /// pooled connection that closed before the request was written gives it back, and
    /// the next one is tried; a request that was (partly) written is never resent.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, SocketAddr), SendError> {
        while let Some(mut conn) = endpoint.connections.checkout() {
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.respond(endpoint, conn, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
        let mut conn = self.open(endpoint).await?;
        let resp = conn.sender.send_request(req).await.map_err(SendError::Exchange)?;
        Ok(self.respond(endpoint, conn, resp))
    }

    /// Opens a connection (residency check and TLS in the connector) and starts the task
    /// that drives it; upgrades are enabled so a WebSocket can take the connection over.
    async fn open(&self, endpoint: &Endpoint) -> Result<Conn, SendError> {
        let stream = self
            .connector
            .connect_to(&endpoint.host, endpoint.port, endpoint.tls)
            .await
            .map_err(SendError::Connect)?;
        let peer = stream.peer;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn::new(sender, peer))
    }

    /// Returns the connection to the pool, unless it was switched to another protocol,
    /// and pairs the response with the address that served it.
    fn respond(&self, endpoint: &Endpoint, conn: Conn, resp: Response<Incoming>) -> (Response<Incoming>, SocketAddr) {
        let peer = conn.peer;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            endpoint.connections.checkin(conn);
        }
        (resp, peer)
    }

    fn classify_error(&self, endpoint: &Endpoint, e: SendError) -> UpstreamError {
        let upstream = self.name.to_string();
        let e = match e {
            SendError::Connect(ConnectError::Egress(reason)) => {
                return UpstreamError::EgressRefused { upstream, reason };
            }
            SendError::Connect(ce) => {
                metrics::counter!("phr_upstream_errors_total", "upstream" => upstream.clone(), "kind" => "connect")
                    .increment(1);
                if endpoint.record_failure(self.eject_after, self.eject_for) {
                    metrics::counter!("phr_endpoint_ejections_total", "upstream" => upstream.clone(), "endpoint" => endpoint.base.clone())
                        .increment(1);
                    tracing::warn!(upstream = %upstream, endpoint = %endpoint.base, eject_for_s = self.eject_for.as_secs(), "endpoint ejected after repeated connection failures");
                }
                return UpstreamError::Connect {
                    upstream,
                    reason: ce.to_string(),
                };
            }
            SendError::Exchange(e) => e,
        };
        // A request body cut off by the size limit surfaces as the body's error; so does
        // a body the client framed badly (a malformed chunk, a stream reset): the
        // client's `hyper::Error` is then a source of the upstream exchange's error.
        // Neither is the upstream's fault, so neither is counted against it.
        let mut source = e.source();
        while let Some(s) = source {
            if s.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                return UpstreamError::RequestBodyTooLarge;
            }
            if let Some(client) = s.downcast_ref::<hyper::Error>() {
                return UpstreamError::ClientBody(client.to_string());
            }
            source = s.source();
        }
        metrics::counter!("phr_upstream_errors_total", "upstream" => upstream.clone(), "kind" => "request")
            .increment(1);
        UpstreamError::Failed {
            upstream,
            reason: e.to_string(),
        }
    }
}

/// Why a request could not be forwarded, or its upstream did not answer. The request
/// path turns each into the client's status (502, 503, 504, 413 or 400).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every endpoint is ejected; `retry_after` is when one may be back (ejection end
    /// or next health probe).
    #[error("no healthy endpoint for upstream {upstream}")]
    NoHealthyEndpoint {
        /// The upstream's name in the config.
        upstream: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The residency policy refused the address the endpoint resolved to (DATA-JP-1).
    #[error("upstream {upstream}: {reason}")]
    EgressRefused {
        /// The upstream's name in the config.
        upstream: String,
        /// The policy's reason, for the log.
        reason: String,
    },
    /// No connection could be opened (DNS, TCP, TLS).
    #[error("cannot reach upstream {upstream}: {reason}")]
    Connect {
        /// The upstream's name in the config.
        upstream: String,
        /// What failed, for the log.
        reason: String,
    },
    /// No response head within the upstream's `response_timeout`.
    #[error("upstream {upstream} did not answer within {seconds:.1} s")]
    Timeout {
        /// The upstream's name in the config.
        upstream: String,
        /// The timeout that passed.
        seconds: f64,
    },
    /// The exchange broke after the connection was open.
    #[error("upstream {upstream} failed while answering: {reason}")]
    Failed {
        /// The upstream's name in the config.
        upstream: String,
        /// What failed, for the log.
        reason: String,
    },
    /// The client's streamed body passed the route's size limit while being sent.
    #[error("the request body exceeds the route's limit")]
    RequestBodyTooLarge,
    /// The client's body broke off or was framed badly while being sent.
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
    /// The request cannot be put into origin form for the endpoint.
    #[error("{0}")]
    BadPath(&'static str),
}

/// Why an exchange with an upstream failed: opening the connection (each reason maps to
/// its own status and metric), or the HTTP exchange itself.
enum SendError {
    Connect(ConnectError),
    Exchange(hyper::Error),
}
