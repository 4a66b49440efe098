//! The request path, in one file, top to bottom.
//!
//! ```text
//! accept    connection caps (total, per IP, handshake rate)            server/
//!           TLS handshake (rustls), client identity (mTLS)             tls/
//! request   1.  request id          ours, or a trusted hop's           request_id
//!           2.  route               host + longest path prefix;        route_request
//!                                   path tricks refused
//!           3.  limits before auth  body size, source IP, route,       phases::limits::before_auth
//!                                   auth back-off
//!           4.  authenticate        bearer JWT, two-factor, DPoP,      authenticate
//!                                   certificate binding
//!           5.  authorise           SMART scopes, patient compartment  phases::fhir::authorize
//!           5b. limits after auth   subject, client, certificate;      phases::limits::after_auth,
//!                                   FHIR cost; block list; uploads     inspect_upload
//!           6.  upstream peer       round-robin, ejection; residency   phases::forward → proxy
//!                                   checked on connect
//!           7.  forward             header hygiene, pooled upstream,   phases::forward → proxy
//!                                   timeouts
//! response  7b. compartment check   FHIR routes: other patients        phases::fhir::check_response
//!               bulk access         distinct patients per subject      phases::limits::after_response
//!           8.  respond             request id, HSTS, metrics          finish
//!           9.  access record       committed before release           audit::request_record::record_for
//! ```
//!
//! The functions below are defined in the order they run. Each safeguard sits behind
//! one call here; the glue that joins a safeguard to the request's context is in
//! [`crate::phases`], and the safeguards themselves do not know this file.
//!
//! On FHIR routes, after phase 3, the gateway answers `<base>/.well-known/smart-configuration`
//! itself, and `GET <base>/metadata` skips phase 4 unless the route says otherwise
//! ([`phases::fhir::smart_configuration`], [`phases::fhir::is_public_metadata`]).
//!
//! Every phase returns `Result<_, GatewayError>`; the first error ends the request and
//! [`crate::error::rescue`] writes the refusal. There is no path from an error to
//! "forward anyway": the only way to reach `forward` is through every phase's `Ok`.
//! A panic in a phase becomes the request's 500, recorded like any refusal.

use crate::audit::request_record::{record_for, RequestMeta};
use crate::auth::{AuthError, AuthMode, AuthRequest, Identity};
use crate::context::{ConnInfo, GatewayBody, RequestContext};
use crate::error::{rescue, GatewayError};
use crate::phases::{self, limits};
use crate::proxy::{headers, websocket, Outgoing};
use crate::runtime::{ActiveConfig, ActiveRoute, GatewayState};
use futures_util::FutureExt as _;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The request path. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<GatewayState>,
}

impl Pipeline {
    /// A request path over the gateway's current runtime (swapped on reload).
    pub fn new(shared: Arc<GatewayState>) -> Self {
        Self { shared }
    }

    /// Runs every phase for one request and always produces a response.
    pub async fn handle(&self, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<GatewayBody> {
        // One snapshot for the whole request: a reload mid-request cannot mix two configs.
        let runtime = self.shared.current.load_full();
        // Phase 1: request id, and who the client is behind any trusted proxy.
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
            Err(err) => (refuse(&runtime, &ctx, &err), Some(err.code())),
        };
        finish(&runtime, &ctx, &mut resp);
        // Phase 9: the access record, committed (or spooled) before the response is
        // released (LOG-ACC-1). If it cannot be written, the response is not released.
        if let (Some(audit), Some(meta)) = (&self.shared.audit, &meta) {
            let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
            let record = record_for(&ctx, meta, resp.status().as_u16(), refusal, bytes_out);
            if let Err(e) = audit.record_announced(record, expected).await {
                tracing::error!(error = %e, "access record could not be written: refusing the response");
                resp = refuse(&runtime, &ctx, &GatewayError::AuditUnavailable);
                finish(&runtime, &ctx, &mut resp);
            }
        }
        resp
    }
}

/// Phases 2 to 7b. Returns the upstream's (checked) response or the first refusal.
async fn process(
    runtime: &ActiveConfig,
    ctx: &mut RequestContext,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    // Phase 2: route (among the routes bound to this listener), then the route's
    // demand for a client certificate.
    check_host_fields(&req)?;
    ctx.original_host = request_authority(&req);
    let route = route_request(runtime, ctx, &req);
    // A refused path is attributed to the route its raw path addresses, so the refusal
    // speaks that route's language (an OperationOutcome under a FHIR base) and its
    // metrics and access record name the route the client aimed at.
    ctx.route = match &route {
        Ok(r) => Some(r.clone()),
        Err((addressed, _)) => addressed.clone(),
    };
    let route = route.map_err(|(_, e)| e)?;
    if route.client_cert_required && ctx.conn.client.is_none() {
        return Err(GatewayError::ClientCertRequired);
    }
    // Phase 3: limits that need no identity (source address, route, auth back-off).
    check_body_size(&req, route.max_body_bytes)?;
    limits::before_auth(&runtime.protection, &route, ctx).await?;
    // SMART discovery on a FHIR base: answered here, without a token.
    if let Some(answer) = phases::fhir::smart_configuration(&route, ctx, req.method(), req.uri().path()) {
        return answer;
    }
    // Phase 4: authenticate.
    ctx.identity = match authenticate(runtime, ctx, &route, &req).await {
        Err(e @ GatewayError::Auth { .. }) => {
            // A request without a token is not a guess; a bad token is (AUTH-LOCK-1).
            if !matches!(
                &e,
                GatewayError::Auth {
                    error: AuthError::MissingToken,
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
    let upgrade = websocket::is_upgrade(req.headers());
    if upgrade && !route.websocket {
        return Err(GatewayError::UpgradeNotAllowed);
    }
    let mut out = Outgoing::new(req, route.max_body_bytes, upgrade);
    out.read_small_body(route.max_body_bytes)
        .await
        .map_err(|e| GatewayError::from_request_body(e, route.max_body_bytes))?;
    // Phase 5: authorise (FHIR routes: SMART scopes and the patient compartment).
    let exchange = match route.fhir {
        // Boxed (FHIR routes only) so its buffered-body state does not enlarge
        // every request's future; see `UpstreamPool::send`.
        true => Some(Box::pin(phases::fhir::authorize(runtime, ctx, &route, &mut out)).await?),
        false => None,
    };
    // Phase 5b: limits keyed by identity (cost from the FHIR interaction), block list,
    // and the upload filter on the body's content.
    limits::after_auth(&runtime.protection, &*runtime.blocks, &route, ctx).await?;
    if out.has_body() && runtime.protection.upload_routes.contains(&*route.name) {
        inspect_upload(runtime, &route, &mut out).await?;
    }
    // Phases 6 and 7: pick an endpoint (residency is checked as it connects) and forward.
    let resp = phases::forward::forward(runtime, ctx, &route, out).await?;
    // Phase 7b: the compartment check on what comes back.
    match exchange {
        Some(exchange) => phases::fhir::check_response(ctx, &route, exchange, resp).await,
        None => Ok(resp.map(Either::Left)),
    }
}

/// Phase 1: accept the request id of a trusted hop if it is well-formed, else make one.
fn request_id(runtime: &ActiveConfig, conn: &ConnInfo, req: &Request<Incoming>) -> HeaderValue {
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
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // Owned by a shared buffer from the start: the id is cloned onto the upstream
    // request and the response, and a clone of a buffer copied from a slice would
    // allocate again to become shareable.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)).expect("a UUID is a valid header value")
}

/// Phase 1: behind trusted proxies, the right-most `X-Forwarded-For` entry they did not add.
fn client_ip(runtime: &ActiveConfig, conn: &ConnInfo, req: &Request<Incoming>) -> IpAddr {
    let peer = conn.peer.ip();
    if !runtime.peer_is_trusted(peer) {
        return peer;
    }
    let chain = req.headers().get_all(&headers::X_FORWARDED_FOR);
    let hops: Vec<IpAddr> = chain
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

/// Phase 2, first: RFC 9112 §3.2 and RFC 9113 §8.3.1: an HTTP/1.1 request has exactly
/// one `Host`; no request has two; an HTTP/2 `Host` names the same authority as
/// `:authority`. A request that breaks these is ambiguous about where it goes, so a
/// backend or a cache behind the gateway could route it differently from the gateway's
/// own route match.
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

/// The authority the client addressed (`host[:port]`): `:authority` (HTTP/2) or `Host`.
/// Routes match its host, tokens' DPoP proofs its URL, and the upstream receives it as
/// `X-Forwarded-Host` (or as `Host` where the upstream preserves it).
fn request_authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// Phase 2: the request's host and path select a route. Paths with dot segments or
/// encoded separators are refused: a backend that normalised `/public/../fhir/x`
/// would otherwise be reached through the route (and the policy) of `/public/`.
/// A refusal comes with the route the raw path addresses, if any (`/fhir/%2e%2e/x` is
/// refused as a request to the FHIR route, in its error format); that route is only
/// ever used to write the refusal.
fn route_request(
    runtime: &ActiveConfig,
    ctx: &RequestContext,
    req: &Request<Incoming>,
) -> Result<Arc<ActiveRoute>, (Option<Arc<ActiveRoute>>, GatewayError)> {
    let path = req.uri().path();
    let host = ctx
        .original_host
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .map_or("", host_of);
    let addressed = runtime.route(&ctx.conn.listener, host, path).cloned();
    if let Err(e) = check_path(path) {
        return Err((addressed, e));
    }
    addressed.ok_or((None, GatewayError::NoRoute))
}

/// The host of an authority, without userinfo, port or IPv6 brackets:
/// `[::1]:8443` → `::1`, `host:8443` → `host`.
fn host_of(authority: &str) -> &str {
    // Byte searches: `'@'` is rare and `str::rsplit_once` with a char pattern was a
    // visible share of the routing cost per request.
    let bytes = authority.as_bytes();
    let raw = match bytes.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    match raw.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).unwrap_or(raw),
        None => match raw.as_bytes().iter().position(|&b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        },
    }
}

/// Phase 2: the path tricks [`route_request`] refuses: dot segments (`.`, `..`),
/// encoded `/`, `\`, `.` or NUL, and `\`. One pass over the bytes (every request pays
/// for it); when a path has several, the refusal names them in that order.
pub(crate) fn check_path(path: &str) -> Result<(), GatewayError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(GatewayError::BadPath("the path must start with '/'"));
    }
    let (mut dot_segment, mut encoded, mut backslash) = (false, false, false);
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                dot_segment |= matches!(&bytes[segment_start..i], b"." | b"..");
                segment_start = i + 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let code = [bytes[i + 1].to_ascii_lowercase(), bytes[i + 2].to_ascii_lowercase()];
                encoded |= matches!(&code, b"2f" | b"5c" | b"2e" | b"00");
            }
            b'\\' => backslash = true,
            _ => {}
        }
    }
    dot_segment |= matches!(&bytes[segment_start..], b"." | b"..");
    if dot_segment {
        return Err(GatewayError::BadPath("dot segments ('.' or '..') are not allowed"));
    }
    if encoded {
        return Err(GatewayError::BadPath(
            "encoded '/', '\\', '.' or NUL in the path is not allowed",
        ));
    }
    if backslash {
        return Err(GatewayError::BadPath("'\\' in the path is not allowed"));
    }
    Ok(())
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

/// Phase 4: who is calling (AUTH-ID-1, AUTH-2FA-1..3, なりすまし対策). The route's policy
/// decides whether a token is required; a missing authenticator on a route that needs one
/// refuses rather than lets the request through.
async fn authenticate(
    runtime: &ActiveConfig,
    ctx: &RequestContext,
    route: &ActiveRoute,
    req: &Request<Incoming>,
) -> Result<Option<Identity>, GatewayError> {
    if phases::fhir::is_public_metadata(route, req.method(), req.uri().path()) {
        // The CapabilityStatement: no patient data, and clients read it before they
        // have a token. The adapter still classifies and checks the request.
        return Ok(None);
    }
    let Some(auth) = &runtime.auth else {
        return match route.auth.mode {
            AuthMode::None => Ok(None),
            _ => Err(GatewayError::AuthUnavailable),
        };
    };
    let authority = ctx.original_host.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("");
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

/// Phase 5b, EX-FILE-1: the body is buffered (within the route's limit) and inspected by
/// content.
async fn inspect_upload(runtime: &ActiveConfig, route: &ActiveRoute, out: &mut Outgoing) -> Result<(), GatewayError> {
    let bytes = out
        .buffer_body(route.max_body_bytes)
        .await
        .map_err(|e| GatewayError::from_request_body(e, route.max_body_bytes))?;
    let declared = out
        .parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    limits::inspect_upload(&runtime.protection, &route.name, declared, &bytes)
}

/// Phase 8: what every response carries, and the request's metrics.
fn finish(runtime: &ActiveConfig, ctx: &RequestContext, resp: &mut Response<GatewayBody>) {
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

/// A refusal as the client sees it, logged once.
fn refuse(runtime: &ActiveConfig, ctx: &RequestContext, err: &GatewayError) -> Response<GatewayBody> {
    tracing::warn!(
        request_id = ctx.id.to_str().unwrap_or_default(),
        route = ctx.route.as_ref().map(|r| &*r.name),
        code = err.code(),
        status = err.status().as_u16(),
        detail = %detail(err),
        "request refused"
    );
    let fhir = ctx.route.as_ref().is_some_and(|r| r.fhir);
    let mut resp = rescue(err, ctx.id.to_str().unwrap_or_default(), fhir);
    if let Some(challenge) = scope_challenge(runtime, ctx, err) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    resp.map(Either::Right)
}

/// RFC 6750 §3.1: the FHIR adapter's 403 for want of a scope carries the
/// `insufficient_scope` challenge naming the scope that would allow the request, in the
/// token's own scope family (ACL-ROLE-1), under the scheme the token came with.
fn scope_challenge(runtime: &ActiveConfig, ctx: &RequestContext, err: &GatewayError) -> Option<HeaderValue> {
    let GatewayError::Fhir(e) = err else { return None };
    let scope = e.insufficient_scope_hint()?;
    let scheme = match ctx.identity.as_ref().map(|i| i.binding) {
        Some(crate::auth::Binding::Dpop) => "DPoP",
        _ => "Bearer",
    };
    let challenge = crate::auth::insufficient_scope_challenge(scheme, &runtime.config.auth.realm, &scope);
    HeaderValue::from_str(&challenge).ok()
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
    use super::{check_path, host_of};

    /// The README's diagram of the request path is this module's, line for line, so
    /// the two cannot drift apart.
    #[test]
    fn readme_diagram_is_the_module_doc() {
        fn text_block(lines: impl Iterator<Item = String>) -> Vec<String> {
            lines
                .skip_while(|l| l != "```text")
                .skip(1)
                .take_while(|l| l != "```")
                .collect()
        }
        let module = include_str!("pipeline.rs").lines().map(|l| {
            l.strip_prefix("//! ")
                .or_else(|| l.strip_prefix("//!"))
                .unwrap_or(l)
                .to_string()
        });
        let readme = include_str!("../../README.md").lines().map(str::to_string);
        let (module, readme) = (text_block(module), text_block(readme));
        assert!(!module.is_empty());
        assert_eq!(
            module, readme,
            "copy the diagram of gateway/src/pipeline.rs into README.md"
        );
    }

    #[test]
    fn host_of_drops_port_brackets_and_userinfo() {
        assert_eq!(host_of("example.jp:8443"), "example.jp");
        assert_eq!(host_of("example.jp"), "example.jp");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("user@example.jp:1"), "example.jp");
    }

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
            "/.",
            "/a/.",
            "/a/b/..",
        ] {
            assert!(check_path(bad).is_err(), "{bad} should be refused");
        }
        for good in ["/", "/fhir/Patient/1", "/a..b/c", "/a%20b", "/a%2", "/a%", "/.a/b."] {
            assert!(check_path(good).is_ok(), "{good} should pass");
        }
    }
}
