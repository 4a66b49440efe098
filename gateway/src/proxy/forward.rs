//! Phases 6 and 7 of the request path, in the proxy's own terms: choose an endpoint,
//! rewrite the request for it (origin-form path, header hygiene, the gateway's own
//! headers), send it, and hand the response back, splicing a WebSocket when the upstream
//! switches protocols. What the request path decided reaches this module as a
//! [`ForwardPlan`]; nothing here knows of routes, tokens or the request context.

use super::body::{collect_limited, BodyError};
use super::{headers, websocket, UpstreamBody, UpstreamError, UpstreamPool};
use crate::tls::ClientIdentity;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Declared bodies up to this size are read whole before anything is sent upstream.
/// A body that then fails to arrive as declared (an HTTP/2 DATA total that differs from
/// `content-length`, a client that stops short) is refused without a byte of it reaching
/// the backend, which would otherwise see a request it may act on before the body breaks.
/// Larger bodies stream; a failure cuts the upstream request short instead.
pub const PREREAD_BODY_BYTES: u64 = 64 * 1024;

/// The request as it will leave the gateway: phases may rewrite it before it is sent.
pub struct Outgoing {
    /// Method, URI, headers as the client sent them (until a phase rewrites them).
    pub parts: http::request::Parts,
    /// The body: streamed under the route's size limit, or held whole.
    pub body: UpstreamBody,
    /// The client's side of a WebSocket upgrade, taken before the request is consumed.
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Outgoing {
    /// Takes the request apart for forwarding. A streamed body is wrapped in the route's
    /// size limit (`max_body_bytes`), so a body longer than declared is cut off too.
    pub fn new(mut req: Request<Incoming>, max_body_bytes: u64, take_upgrade: bool) -> Self {
        let client_upgrade = take_upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let body: UpstreamBody = if body.is_end_stream() {
            Either::Right(Full::new(Bytes::new()))
        } else {
            Either::Left(Limited::new(
                body,
                usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            ))
        };
        Self {
            parts,
            body,
            client_upgrade,
        }
    }

    /// Whether a body remains to be sent.
    pub fn has_body(&self) -> bool {
        match &self.body {
            Either::Left(_) => true,
            Either::Right(full) => !full.is_end_stream(),
        }
    }

    /// Takes the whole body into memory (within `limit`), leaving it held for sending.
    pub async fn buffer_body(&mut self, limit: u64) -> Result<Bytes, BodyError> {
        let body = std::mem::replace(&mut self.body, Either::Right(Full::new(Bytes::new())));
        let bytes = collect_limited(body, limit).await?;
        self.body = Either::Right(Full::new(bytes.clone()));
        Ok(bytes)
    }

    /// Reads a small declared body into memory (see [`PREREAD_BODY_BYTES`]); anything
    /// else is left to stream.
    pub async fn read_small_body(&mut self, limit: u64) -> Result<(), BodyError> {
        let Either::Left(body) = &self.body else {
            return Ok(());
        };
        // Nothing to read (most GETs): the request goes on exactly as it came.
        if body.is_end_stream() || body.size_hint().exact().is_none_or(|n| n > PREREAD_BODY_BYTES) {
            return Ok(());
        }
        self.buffer_body(limit).await.map(drop)
    }
}

/// How many headers [`forward`] may add to a client's request: `X-Forwarded-For`,
/// `-Proto`, `-Host`, `-Prefix`, `Forwarded`, `X-Request-Id` and `Host`.
const GATEWAY_HEADERS: usize = 7;

/// What the request path decided about forwarding one request.
pub struct ForwardPlan<'a> {
    /// The route's prefix, when the route strips it from the forwarded path (and
    /// announces it as `X-Forwarded-Prefix`).
    pub strip_prefix: Option<&'a str>,
    /// The request id, sent upstream as `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// The TCP peer, appended to `X-Forwarded-For`.
    pub peer: IpAddr,
    /// Whether the peer is a configured trusted proxy (its `X-Forwarded-For` is kept).
    pub peer_trusted: bool,
    /// The connection's forwarding values (for `peer`), reused when no chain is extended.
    pub forwarded: &'a headers::ForwardedCache,
    /// The host the client addressed, for `Forwarded`/`X-Forwarded-Host` and, when the
    /// upstream preserves it, `Host`.
    pub original_host: Option<&'a HeaderValue>,
    /// The verified client certificate, announced to the upstream (EX-MTLS-1).
    pub client_cert: Option<&'a ClientIdentity>,
    /// The caller's identity as `x-phr-*` headers (empty on routes without auth).
    pub identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// How long a spliced WebSocket may stay idle.
    pub websocket_idle_timeout: Duration,
}

/// The upstream's answer and where it came from.
pub struct Forwarded {
    /// The response, hop-by-hop headers removed (or the switched-protocols answer of a
    /// WebSocket that is now spliced).
    pub response: Response<Incoming>,
    /// `scheme://host:port` of the endpoint that answered (to rebase FHIR links).
    pub upstream_base: Arc<str>,
    /// The address that answered (DATA-JP-1 evidence for the access record).
    pub upstream_addr: Option<SocketAddr>,
}

/// Sends `out` to an endpoint of `pool` as `plan` says.
pub async fn forward(pool: &UpstreamPool, plan: ForwardPlan<'_>, out: Outgoing) -> Result<Forwarded, UpstreamError> {
    let Outgoing {
        mut parts,
        body,
        client_upgrade,
    } = out;
    let endpoint = pool.pick().ok_or_else(|| UpstreamError::NoHealthyEndpoint {
        upstream: pool.name.to_string(),
        retry_after: pool.retry_after(),
    })?;
    let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let forwarded_path = match plan.strip_prefix {
        Some(prefix) => {
            let rest = &path_and_query[prefix.len().min(path_and_query.len())..];
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        }
        None => path_and_query.to_string(),
    };
    // Origin form: the connection already goes to the endpoint.
    parts.uri = Uri::try_from(forwarded_path).map_err(|_| UpstreamError::BadPath("the path cannot be forwarded"))?;
    parts.version = Version::HTTP_11;
    // Hop-by-hop, forwarding and gateway-only (`x-phr-*`: client certificate,
    // identity) headers: every client-sent copy goes before the gateway writes its own.
    let prior_chain = headers::trusted_forwarded_for(&parts.headers, plan.peer_trusted);
    let prior_forwarded = headers::trusted_forwarded(&parts.headers, plan.peer_trusted);
    headers::clean_request(&mut parts.headers, client_upgrade.is_some());
    // Room for what is written below (forwarding headers, request id, Host), so the
    // map grows at most once instead of once per insert that crosses a threshold.
    parts.headers.reserve(GATEWAY_HEADERS);
    let forwarded = match (prior_chain.as_deref(), prior_forwarded.as_deref()) {
        (None, None) => plan.forwarded.get(plan.peer, plan.original_host),
        (chain, elements) => headers::forwarded_values(plan.peer, chain, elements, plan.original_host),
    };
    headers::insert_forwarded(&mut parts.headers, forwarded, plan.original_host);
    if let Some(prefix) = plan.strip_prefix {
        headers::set_forwarded_prefix(&mut parts.headers, prefix);
    }
    headers::set_client_identity(&mut parts.headers, plan.client_cert);
    for (name, value) in plan.identity_headers {
        parts.headers.insert(name, value);
    }
    parts.headers.insert(&headers::X_REQUEST_ID, plan.request_id.clone());
    let host = match (pool.preserve_host, plan.original_host) {
        (true, Some(h)) => h.clone(),
        _ => endpoint
            .host_header
            .clone()
            .ok_or(UpstreamError::BadPath("bad upstream authority"))?,
    };
    parts.headers.insert(header::HOST, host);

    let (mut response, upstream_addr) = pool.send(endpoint, Request::from_parts(parts, body)).await?;
    match client_upgrade {
        Some(client_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            websocket::splice(client_upgrade, &mut response, plan.websocket_idle_timeout)
        }
        _ => headers::remove_hop_by_hop(response.headers_mut(), false),
    }
    Ok(Forwarded {
        response,
        upstream_base: endpoint.base.clone(),
        upstream_addr: Some(upstream_addr),
    })
}
