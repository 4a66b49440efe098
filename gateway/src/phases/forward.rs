//! Phases 6 and 7: what the request path hands the proxy, and what it keeps of the
//! answer. The FHIR pre-read forwards through here too, so a gateway-made request gets
//! the same endpoint choice, header hygiene and residency check as a client's.

use crate::auth::{identity_headers, HeaderNames};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::proxy::{self, ForwardPlan, Outgoing};
use crate::runtime::{ActiveConfig, ActiveRoute};
use http::Response;
use hyper::body::Incoming;
use std::sync::LazyLock;

/// The identity header names, built once. All start with `x-phr-`, so
/// `headers::clean_request` drops a client's copies (checked in `auth::identity`).
static IDENTITY_HEADERS: LazyLock<HeaderNames> = LazyLock::new(HeaderNames::default);

/// Sends `out` to the route's upstream and records in `ctx` which endpoint answered.
pub async fn forward(
    runtime: &ActiveConfig,
    ctx: &mut RequestContext,
    route: &ActiveRoute,
    out: Outgoing,
) -> Result<Response<Incoming>, GatewayError> {
    let plan = ForwardPlan {
        strip_prefix: route.strip_prefix.then_some(&*route.prefix),
        request_id: &ctx.id,
        peer: ctx.conn.peer.ip(),
        peer_trusted: runtime.peer_is_trusted(ctx.conn.peer.ip()),
        forwarded: &ctx.conn.forwarded,
        original_host: ctx.original_host.as_ref(),
        client_cert: ctx.conn.client.as_ref(),
        identity_headers: match &ctx.identity {
            Some(identity) => identity_headers(identity, &IDENTITY_HEADERS),
            None => Vec::new(),
        },
        websocket_idle_timeout: runtime.config.limits.websocket_idle_timeout,
    };
    let forwarded = proxy::forward(&route.upstream, plan, out)
        .await
        .map_err(|e| GatewayError::from_upstream(e, route.max_body_bytes))?;
    ctx.upstream_base = Some(forwarded.upstream_base);
    ctx.upstream_addr = forwarded.upstream_addr;
    let mut response = forwarded.response;
    if route.strip_prefix {
        restore_prefix(ctx, route, &mut response);
    }
    Ok(response)
}

/// A route that strips its prefix: `Location` and `Content-Location` the backend built
/// without it (from `X-Forwarded-Host`, or as a path) get it back, so a client that
/// follows them reaches the gateway's route and not a 404 (see `proxy::public_url`).
fn restore_prefix(ctx: &RequestContext, route: &ActiveRoute, response: &mut Response<Incoming>) {
    let client_host = ctx.original_host.as_ref().and_then(|h| h.to_str().ok());
    let base_host = route
        .public_base_url
        .as_deref()
        .and_then(proxy::public_url::authority_of);
    let hosts: Vec<&str> = client_host.into_iter().chain(base_host).collect();
    proxy::public_url::restore_prefix(response.headers_mut(), &route.prefix, &hosts);
}
