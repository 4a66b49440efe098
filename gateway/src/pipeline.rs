//! The request path, in one file, top to bottom.
//!
//! ```text
//! accept ─► connection caps (total, per IP, handshake rate), TLS handshake (rustls),
//!           client identity (mTLS)                                     server.rs, tls/
//! request ─► 1. request id            (ours, or a trusted hop's)      Pipeline::handle
//!         ─► 2. route                 (host + longest path prefix)    route_request
//!         ─► 3. limits before auth    (body size, source IP, route, auth back-off)  limits::before_auth
//!         ─► 4. authenticate          (bearer JWT, two-factor, DPoP, cert binding)  authenticate
//!         ─► 5. authorise             (SMART scopes, patient compartment)  fhir::authorize
//!         ─► 5b. limits after auth    (subject/client/cert, FHIR cost, block list, upload filter)
//!         ─► 6. upstream peer         (round-robin, ejection; residency check on connect)
//!         ─► 7. forward               (header hygiene, pooled upstream, timeouts)  forward
//! response ◄─ 7b. compartment check   (FHIR routes: filter other patients)  fhir::check_response
//!          ◄─ bulk-access detector    (distinct patients per subject)   limits::after_response
//!          ◄─ 8. respond              (request id, HSTS, metrics)       finish
//!          ◄─ 9. access record        (committed before release)        audit::request_record
//! ```
//!
//! Every phase returns `Result<_, GatewayError>`; the first error ends the request and
//! [`crate::error::rescue`] writes the refusal. There is no path from an error to
//! "forward anyway": the only way to reach `forward` is through every phase's `Ok`.

use crate::audit::request_record::{record_for, RequestMeta};
use crate::auth::{identity_headers, AuthMode, AuthRequest, HeaderNames, Identity};
use crate::error::{rescue, GatewayError};
use crate::limits::phases as limits;
use crate::proxy::{headers, websocket, PeerAddr, UpstreamBody};
use crate::runtime::{RouteRuntime, Runtime, Shared};
use crate::tls::ClientIdentity;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The identity header names, built once. All start with `x-phr-`, so
/// `headers::clean_request` drops a client's copies (checked in `auth::identity`).
static IDENTITY_HEADERS: std::sync::LazyLock<HeaderNames> = std::sync::LazyLock::new(HeaderNames::default);

/// Response bodies: streamed from the upstream, or made by the gateway.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// What the connection established before any request: who connected, and how.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// "TLSv1.3" or "TLSv1.2".
    pub tls_version: &'static str,
    /// Present when the client presented a certificate that verified (mTLS).
    pub client: Option<ClientIdentity>,
}

/// What one request has learned so far; later phases read what earlier ones wrote.
pub struct RequestContext {
    pub id: HeaderValue,
    pub conn: Arc<ConnInfo>,
    pub started: Instant,
    pub route: Option<Arc<RouteRuntime>>,
    /// Who the token says is calling (phase 4); `None` on routes without auth.
    pub identity: Option<Identity>,
    /// The host the client addressed (`:authority` or `Host`).
    pub original_host: Option<HeaderValue>,
    /// What the FHIR adapter learned (phase 5 and 7b): interaction, resource, patients.
    pub fhir: Option<crate::fhir::FhirFacts>,
    /// `scheme://host:port` of the endpoint that was chosen.
    pub upstream_base: Option<String>,
    /// The client's address: the peer, or, behind a configured trusted proxy, the last
    /// untrusted address of its `X-Forwarded-For` (what limits and records key on).
    pub client_ip: std::net::IpAddr,
    /// The upstream address that answered (DATA-JP-1 evidence).
    pub upstream_addr: Option<SocketAddr>,
    /// The rate-limit policies that admitted the request (phases 3 and 5b): every
    /// response carries their `RateLimit` headers, so clients can slow down before a 429.
    pub rate_limits: Vec<crate::limits::decision::Decision>,
}

/// The request path. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Runs every phase for one request and always produces a response.
    pub async fn handle(&self, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<ResponseBody> {
        // One snapshot for the whole request: a reload mid-request cannot mix two configs.
        let runtime = self.shared.current.load_full();
        // Phase 1: request id.
        let mut ctx = RequestContext {
            id: request_id(&runtime, &conn, &req),
            client_ip: client_ip(&runtime, &conn, &req),
            conn,
            started: Instant::now(),
            route: None,
            identity: None,
            original_host: None,
            fhir: None,
            upstream_base: None,
            upstream_addr: None,
            rate_limits: Vec::new(),
        };
        // Announced now so the audit writer knows a record is on its way and
        // can gather it into the same commit as its neighbours'.
        let expected = self.shared.audit.as_ref().map(|a| a.announce());
        let meta = self.shared.audit.as_ref().map(|_| RequestMeta {
            instance: runtime.config.gateway.instance_id.clone(),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
            bytes_in: req.body().size_hint().exact().unwrap_or(0),
        });
        // A panic in a phase is a defect, not a reason to drop the connection unanswered
        // and unrecorded: it becomes this request's 500, recorded like any refusal. Only
        // this request's state is abandoned; shared state is behind locks that either
        // survive a panic (atomics, moka, arc-swap) or refuse later requests the same way.
        let outcome = std::panic::AssertUnwindSafe(process(&runtime, &mut ctx, req))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                metrics::counter!("phr_request_panics_total").increment(1);
                Err(GatewayError::Internal(panic_message(panic.as_ref())))
            });
        let (mut resp, refusal) = match outcome {
            Ok(resp) => {
                limits::after_response(&runtime.protection, &ctx);
                (resp, None)
            }
            Err(err) => (self.refuse(&ctx, &err), Some(err.code())),
        };
        finish(&runtime, &ctx, &mut resp);
        // Phase 9: the access record, committed (or spooled) before the response is
        // released (LOG-ACC-1). If it cannot be written, the response is not released.
        if let (Some(audit), Some(meta)) = (&self.shared.audit, &meta) {
            let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
            let record = record_for(&ctx, meta, resp.status().as_u16(), refusal, bytes_out);
            if let Err(e) = audit.record_announced(record, expected).await {
                tracing::error!(error = %e, "access record could not be written: refusing the response");
                resp = self.refuse(&ctx, &GatewayError::AuditUnavailable);
                finish(&runtime, &ctx, &mut resp);
            }
        }
        resp
    }

    /// A refusal as the client sees it, logged once.
    fn refuse(&self, ctx: &RequestContext, err: &GatewayError) -> Response<ResponseBody> {
        tracing::warn!(
            request_id = ctx.id.to_str().unwrap_or_default(),
            route = ctx.route.as_ref().map(|r| &*r.name),
            code = err.code(),
            status = err.status().as_u16(),
            detail = %detail(err),
            "request refused"
        );
        let fhir = ctx.route.as_ref().is_some_and(|r| r.fhir);
        rescue(err, ctx.id.to_str().unwrap_or_default(), fhir).map(Either::Right)
    }
}

/// Phases 2 to 7. Returns the upstream's response or the first refusal.
async fn process(
    runtime: &Runtime,
    ctx: &mut RequestContext,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, GatewayError> {
    // Phase 2: route (among the routes bound to this listener), then the route's
    // demand for a client certificate.
    check_host_fields(&req)?;
    let route = route_request(runtime, &ctx.conn.listener, &req)?.clone();
    ctx.route = Some(route.clone());
    if route.client_cert_required && ctx.conn.client.is_none() {
        return Err(GatewayError::ClientCertRequired);
    }
    // Phase 3: limits that need no identity (source address, route, auth back-off).
    check_body_size(&req, route.max_body_bytes)?;
    limits::before_auth(&runtime.protection, &route, ctx).await?;
    // Phase 4: authenticate.
    ctx.identity = match authenticate(runtime, ctx, &route, &req).await {
        Err(e @ GatewayError::Auth { .. }) => {
            // A request without a token is not a guess; a bad token is (AUTH-LOCK-1).
            if !matches!(
                &e,
                GatewayError::Auth {
                    error: crate::auth::AuthError::MissingToken,
                    ..
                }
            ) {
                limits::auth_failed(&runtime.protection, ctx);
            }
            return Err(e);
        }
        other => other?,
    };
    crate::fault::inject_panic(req.uri().path());
    let mut out = Outgoing::new(ctx, &route, req)?;
    out.read_small_body(route.max_body_bytes).await?;
    // Phase 5: authorise (FHIR routes: SMART scopes and the patient compartment).
    let exchange = match route.fhir {
        // Boxed (FHIR routes only) so its buffered-body state does not enlarge
        // every request's future; see `UpstreamPool::send`.
        true => Some(Box::pin(crate::fhir::authorize(runtime, ctx, &route, &mut out)).await?),
        false => None,
    };
    // Phase 5b: limits keyed by identity (cost from the FHIR interaction), block list,
    // and the upload filter on the body's content.
    limits::after_auth(&runtime.protection, &*runtime.blocks, &route, ctx).await?;
    let has_body = match &out.body {
        Either::Left(_) => true,
        Either::Right(full) => !full.is_end_stream(),
    };
    if has_body && runtime.protection.upload_routes.contains(&*route.name) {
        inspect_upload(runtime, &route, &mut out).await?;
    }
    // Phases 6 and 7: pick an endpoint (residency is checked as it connects) and forward.
    let resp = forward(runtime, ctx, &route, out).await?;
    // Phase 7b: the compartment check on what comes back.
    match exchange {
        Some(exchange) => crate::fhir::check_response(ctx, &route, exchange, resp).await,
        None => Ok(resp.map(Either::Left)),
    }
}

/// EX-FILE-1: the body is buffered (within the route's limit) and inspected by content.
async fn inspect_upload(runtime: &Runtime, route: &RouteRuntime, out: &mut Outgoing) -> Result<(), GatewayError> {
    use http_body_util::BodyExt;
    let body = std::mem::replace(&mut out.body, Either::Right(Full::new(Bytes::new())));
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(GatewayError::BodyTooLarge {
                limit: route.max_body_bytes,
            })
        }
        Err(e) => return Err(GatewayError::ClientBody(e.to_string())),
    };
    let declared = out
        .parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    limits::inspect_upload(&runtime.protection, &route.name, declared, &bytes)?;
    out.body = Either::Right(Full::new(bytes));
    Ok(())
}

/// The request as it will leave the gateway: phases may rewrite it before `forward`.
pub struct Outgoing {
    pub parts: http::request::Parts,
    pub body: UpstreamBody,
    /// The client's side of a WebSocket upgrade, taken before the request is consumed.
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Outgoing {
    fn new(ctx: &mut RequestContext, route: &RouteRuntime, mut req: Request<Incoming>) -> Result<Self, GatewayError> {
        let upgrade = websocket::is_upgrade(req.headers());
        if upgrade && !route.websocket {
            return Err(GatewayError::UpgradeNotAllowed);
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        ctx.original_host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let body: UpstreamBody = if body.is_end_stream() {
            Either::Right(Full::new(Bytes::new()))
        } else {
            Either::Left(Limited::new(body, route.max_body_bytes as usize))
        };
        Ok(Self {
            parts,
            body,
            client_upgrade,
        })
    }
}

/// Declared bodies up to this size are read whole before anything is sent upstream.
/// A body that then fails to arrive as declared (an HTTP/2 DATA total that differs from
/// `content-length`, a client that stops short) is refused without a byte of it reaching
/// the backend, which would otherwise see a request it may act on before the body breaks.
/// Larger bodies stream; a failure cuts the upstream request short instead.
const PREREAD_BODY_BYTES: u64 = 64 * 1024;

impl Outgoing {
    /// Reads a small declared body into memory (see [`PREREAD_BODY_BYTES`]).
    async fn read_small_body(&mut self, limit: u64) -> Result<(), GatewayError> {
        use http_body_util::BodyExt;
        let Either::Left(body) = &self.body else {
            return Ok(());
        };
        // Nothing to read (most GETs): the request goes on exactly as it came.
        if body.is_end_stream() || body.size_hint().exact().is_none_or(|n| n > PREREAD_BODY_BYTES) {
            return Ok(());
        }
        let body = std::mem::replace(&mut self.body, Either::Right(Full::new(Bytes::new())));
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(GatewayError::BodyTooLarge { limit })
            }
            Err(e) => return Err(GatewayError::ClientBody(e.to_string())),
        };
        self.body = Either::Right(Full::new(bytes));
        Ok(())
    }
}

/// Phase 2: the request's host and path select a route. Paths with dot segments or
/// encoded separators are refused first: a backend that normalised `/public/../fhir/x`
/// would otherwise be reached through the route (and the policy) of `/public/`.
fn route_request<'r>(
    runtime: &'r Runtime,
    listener: &str,
    req: &Request<Incoming>,
) -> Result<&'r Arc<RouteRuntime>, GatewayError> {
    let path = req.uri().path();
    check_path(path)?;
    let host = request_host(req).unwrap_or("");
    runtime.route(listener, host, path).ok_or(GatewayError::NoRoute)
}

/// RFC 9112 §3.2 and RFC 9113 §8.3.1: an HTTP/1.1 request has exactly one `Host`; no
/// request has two; an HTTP/2 `Host` names the same authority as `:authority`. A request
/// that breaks these is ambiguous about where it goes, so a backend or a cache behind
/// the gateway could route it differently from the gateway's own route match.
fn check_host_fields<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Host header"));
    }
    match (req.version(), host, req.uri().authority()) {
        (Version::HTTP_11, None, _) => Err(GatewayError::BadRequest("an HTTP/1.1 request needs a Host header")),
        (Version::HTTP_2, Some(host), Some(authority)) if host.as_bytes() != authority.as_str().as_bytes() => {
            Err(GatewayError::BadRequest("the Host header differs from :authority"))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_path(path: &str) -> Result<(), GatewayError> {
    if !path.starts_with('/') {
        return Err(GatewayError::BadPath("the path must start with '/'"));
    }
    for segment in path.split('/') {
        if segment == "." || segment == ".." {
            return Err(GatewayError::BadPath("dot segments ('.' or '..') are not allowed"));
        }
    }
    let lower = path.as_bytes();
    for window in lower.windows(3) {
        if window[0] == b'%' {
            let code = [window[1].to_ascii_lowercase(), window[2].to_ascii_lowercase()];
            if matches!(&code, b"2f" | b"5c" | b"2e" | b"00") {
                return Err(GatewayError::BadPath(
                    "encoded '/', '\\', '.' or NUL in the path is not allowed",
                ));
            }
        }
    }
    if path.contains('\\') {
        return Err(GatewayError::BadPath("'\\' in the path is not allowed"));
    }
    Ok(())
}

/// The host the client asked for, without port: `:authority` (HTTP/2) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(a) => a.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    // "[::1]:8443" keeps its brackets; "host:8443" loses the port.
    Some(match raw.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).unwrap_or(raw),
        None => raw.split_once(':').map(|(h, _)| h).unwrap_or(raw),
    })
}

/// Phase 4: who is calling (AUTH-ID-1, AUTH-2FA-1..3, なりすまし対策). The route's policy
/// decides whether a token is required; a missing authenticator on a route that needs one
/// refuses rather than lets the request through.
async fn authenticate(
    runtime: &Runtime,
    ctx: &RequestContext,
    route: &RouteRuntime,
    req: &Request<Incoming>,
) -> Result<Option<Identity>, GatewayError> {
    let Some(auth) = &runtime.auth else {
        return match route.auth.mode {
            AuthMode::None => Ok(None),
            _ => Err(GatewayError::AuthUnavailable),
        };
    };
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    let url = format!("https://{authority}{}", req.uri().path());
    let request = AuthRequest {
        method: req.method(),
        url: &url,
        headers: req.headers(),
        policy: &route.auth,
        client_cert_sha256: ctx.conn.client.as_ref().map(|c| c.sha256),
    };
    auth.authenticate_route(&request).await.map_err(|error| {
        metrics::counter!("phr_auth_refused_total", "code" => error.code()).increment(1);
        GatewayError::Auth {
            challenge: auth.challenge(&error),
            error,
        }
    })
}

/// Phase 3: a declared body over the limit is refused before anything is read; a
/// streamed body is cut off by `Limited` while forwarding.
fn check_body_size(req: &Request<Incoming>, limit: u64) -> Result<(), GatewayError> {
    let declared = req.body().size_hint().exact();
    match declared {
        Some(n) if n > limit => Err(GatewayError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Phases 6 and 7: choose an endpoint, rewrite the request for it, send it, and hand the
/// response back (splicing a WebSocket if the upstream switched protocols).
pub(crate) async fn forward(
    runtime: &Runtime,
    ctx: &mut RequestContext,
    route: &RouteRuntime,
    out: Outgoing,
) -> Result<Response<Incoming>, GatewayError> {
    let Outgoing {
        mut parts,
        body,
        client_upgrade,
    } = out;
    let pool = &route.upstream;
    let endpoint = pool.pick().ok_or_else(|| GatewayError::NoHealthyEndpoint {
        upstream: pool.name.to_string(),
        retry_after: pool.retry_after(),
    })?;
    let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let forwarded_path = match route.strip_prefix {
        true => {
            let rest = &path_and_query[route.prefix.len().min(path_and_query.len())..];
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        }
        false => path_and_query.to_string(),
    };
    // Origin form: the connection already goes to the endpoint.
    parts.uri = Uri::try_from(forwarded_path).map_err(|_| GatewayError::BadPath("the path cannot be forwarded"))?;
    ctx.upstream_base = Some(endpoint.base.clone());
    parts.version = Version::HTTP_11;
    // Hop-by-hop, forwarding and gateway-only (`x-phr-*`: client certificate,
    // identity) headers: every client-sent copy goes before the gateway writes its own.
    let trusted = runtime.peer_is_trusted(ctx.conn.peer.ip());
    let prior_chain = headers::trusted_forwarded_for(&parts.headers, trusted);
    headers::clean_request(&mut parts.headers, client_upgrade.is_some());
    headers::set_forwarded(
        &mut parts.headers,
        ctx.conn.peer.ip(),
        prior_chain.as_deref(),
        ctx.original_host.as_ref(),
    );
    headers::set_client_identity(&mut parts.headers, ctx.conn.client.as_ref());
    if let Some(identity) = &ctx.identity {
        for (name, value) in identity_headers(identity, &IDENTITY_HEADERS) {
            parts.headers.insert(name, value);
        }
    }
    parts.headers.insert(&headers::X_REQUEST_ID, ctx.id.clone());
    let host = match (pool.preserve_host, ctx.original_host.clone()) {
        (true, Some(h)) => h,
        _ => HeaderValue::from_str(&endpoint.authority).map_err(|_| GatewayError::BadPath("bad upstream authority"))?,
    };
    parts.headers.insert(header::HOST, host);

    let mut resp = match pool.send(endpoint, Request::from_parts(parts, body)).await {
        Err(GatewayError::BodyTooLarge { .. }) => {
            return Err(GatewayError::BodyTooLarge {
                limit: route.max_body_bytes,
            })
        }
        other => other?,
    };
    ctx.upstream_addr = resp.extensions().get::<PeerAddr>().map(|p| p.0);

    match client_upgrade {
        Some(client_upgrade) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            websocket::splice(client_upgrade, &mut resp, runtime.config.limits.websocket_idle_timeout)
        }
        _ => headers::remove_hop_by_hop(resp.headers_mut(), false),
    }
    Ok(resp)
}

/// Phase 8: what every response carries, and the request's metrics.
fn finish(runtime: &Runtime, ctx: &RequestContext, resp: &mut Response<ResponseBody>) {
    let h = resp.headers_mut();
    h.insert(&headers::X_REQUEST_ID, ctx.id.clone());
    if let Some(hsts) = &runtime.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    // A 429 already carries the denying policy's headers (and Retry-After).
    if !ctx.rate_limits.is_empty() && resp.status() != StatusCode::TOO_MANY_REQUESTS {
        let admitted: Vec<_> = ctx.rate_limits.iter().collect();
        crate::limits::headers::insert_headers(resp.headers_mut(), &admitted);
    }
    if let Some(route) = &ctx.route {
        route
            .metrics
            .record(resp.status().as_u16(), ctx.started.elapsed().as_secs_f64());
    } else {
        metrics::counter!("phr_requests_total", "route" => "none", "status" => resp.status().as_u16().to_string())
            .increment(1);
    }
}

/// Behind trusted proxies, the right-most `X-Forwarded-For` entry they did not add.
fn client_ip(runtime: &Runtime, conn: &ConnInfo, req: &Request<Incoming>) -> std::net::IpAddr {
    let peer = conn.peer.ip();
    if !runtime.peer_is_trusted(peer) {
        return peer;
    }
    let chain = req.headers().get_all(&headers::X_FORWARDED_FOR);
    let hops: Vec<std::net::IpAddr> = chain
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !runtime.peer_is_trusted(*ip))
        .unwrap_or(peer)
}

/// Phase 1: accept the request id of a trusted hop if it is well-formed, else make one.
fn request_id(runtime: &Runtime, conn: &ConnInfo, req: &Request<Incoming>) -> HeaderValue {
    if runtime.peer_is_trusted(conn.peer.ip()) {
        if let Some(v) = req.headers().get(&headers::X_REQUEST_ID) {
            let ok = !v.is_empty()
                && v.len() <= 128
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
            if ok {
                return v.clone();
            }
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).expect("a UUID is a valid header value")
}

/// The internal detail of an error, for the log line only.
fn detail(err: &GatewayError) -> String {
    match err {
        GatewayError::EgressRefused { reason, .. }
        | GatewayError::UpstreamConnect { reason, .. }
        | GatewayError::UpstreamFailed { reason, .. } => reason.clone(),
        GatewayError::Concealed { reason, .. } => format!("answered as not found: {reason}"),
        GatewayError::ClientBody(reason) => format!("the request body could not be read: {reason}"),
        GatewayError::Internal(panic) => format!("a phase panicked: {panic}"),
        other => other.to_string(),
    }
}

/// What `panic!` said, for the log line (payloads are `&str` or `String` in practice).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn refuses_path_tricks() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a%2fb",
            "/a%2E%2e/b",
            "/a%5Cb",
            "/a\\b",
            "/%00",
        ] {
            assert!(check_path(bad).is_err(), "{bad} should be refused");
        }
        for good in ["/", "/fhir/Patient/1", "/a..b/c", "/a%20b"] {
            assert!(check_path(good).is_ok(), "{good} should pass");
        }
    }
}
