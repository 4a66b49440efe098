//! The operator's listener: `/healthz`, `/readyz` (see [`crate::readiness`]), `/metrics`
//! and `POST /reload`.
//! Plain HTTP on loopback by default (EX-SEG-2): it carries no medical data, and binding
//! it to a public address is the operator's explicit choice.

use crate::runtime::GatewayState;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Accepts admin connections on `listener` until `shutdown` changes, serving each over
/// HTTP/1.1 or HTTP/2 without TLS. Not behind the request path: no authentication, no
/// limits, so it must stay on loopback or a management network (EX-SEG-2).
pub async fn serve(listener: TcpListener, shared: Arc<GatewayState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(shared: &GatewayState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => {
            let r = crate::readiness::evaluate(shared);
            match r.ready {
                true => text(StatusCode::OK, "ready\n".into()),
                false => {
                    let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", r.reason));
                    let wait = r.retry_after.min(std::time::Duration::from_secs(3600));
                    let secs = crate::limits::headers::ceil_secs(wait).max(1);
                    resp.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
                    resp
                }
            }
        }
        (&Method::GET, "/metrics") => {
            let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
            let openmetrics = crate::metrics::openmetrics::wants_openmetrics(accept);
            let body = scrape(shared);
            let (body, content_type) = match openmetrics {
                true => (
                    crate::metrics::openmetrics::from_prometheus_text(&body),
                    crate::metrics::openmetrics::CONTENT_TYPE,
                ),
                // Prometheus 3 refuses a scrape without a Content-Type unless the operator
                // configures a fallback protocol; this is the text format's own type.
                false => (body, PROMETHEUS_TEXT),
            };
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            resp
        }
        (&Method::POST, "/reload") => match shared.reload().await {
            Ok(()) => text(StatusCode::OK, "reloaded\n".into()),
            Err(e) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("reload rejected, last good configuration kept: {e}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Refreshes the values read at scrape time (access-record writer, endpoint health,
/// routes without a healthy endpoint) and renders every metric in the Prometheus text
/// format, with the certificate-expiry gauge of the active configuration appended.
fn scrape(shared: &GatewayState) -> String {
    if let Some(audit) = &shared.audit {
        crate::metrics::audit_writer(&audit.stats());
    }
    let runtime = shared.current.load();
    crate::proxy::health::export_gauges(runtime.routes().iter().map(|r| &r.upstream));
    for route in runtime.routes() {
        let healthy = crate::proxy::health::healthy_endpoints(&route.upstream);
        metrics::gauge!("phr_route_healthy_endpoints", "route" => route.name.to_string()).set(healthy as f64);
    }
    crate::readiness::evaluate(shared);
    let mut body = crate::metrics::install().render();
    // Rendered here rather than recorded: a certificate replaced by a reload must not
    // leave its old expiry behind as a stale series (a false expiry alert).
    let expiry: Vec<_> = runtime
        .cert_expiry
        .iter()
        .map(|c| {
            let labels = vec![
                ("section", c.section.clone()),
                ("role", c.role.to_string()),
                ("subject", c.subject.clone()),
            ];
            (labels, c.not_after as f64)
        })
        .collect();
    crate::metrics::render_gauge_family(&mut body, crate::metrics::catalogue::CERT_EXPIRY, &expiry);
    body
}

/// The Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
