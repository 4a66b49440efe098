//! End-to-end: active upstream health checks, `Retry-After` on 503 and upstream health in
//! `/readyz` (AV-BCP-1; issue 17, item 7), through the real binary.
//!
//! A backend is taken away and brought back on the same port with a stoppable TCP proxy
//! in front of it (listener closed and every connection cut, then listening again).

use crate::common::tcp_proxy::TcpProxy;
use crate::common::*;
use std::time::{Duration, Instant};

fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// The `Retry-After` delay-seconds of a response (panics if absent or not a number).
fn retry_after(h: &http::HeaderMap) -> u64 {
    h.get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After in {h:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls `/readyz` until it answers `status`; returns its headers and body then.
async fn readyz_becomes(gw: &Gateway, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = gw.admin("GET", "/readyz").await;
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {s} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway with one route, `api` at `/api/`, to a backend behind a [`TcpProxy`] (which
/// a test stops to take the backend away); `upstream_extra` goes into the upstream.
async fn gateway_to_a_stoppable_backend(upstream_extra: &str) -> (Pki, TcpProxy, Gateway) {
    let pki = Pki::new();
    let proxy = TcpProxy::start(start_backend().await).await;
    let route = plain_route("api", "/api/", &[proxy.addr], upstream_extra);
    let gw = Gateway::start(&pki, &base_config(&pki, "", &route));
    (pki, proxy, gw)
}

/// The default configuration (no health keys): a backend that restarts is served again
/// within about one probe interval (5 s by default), not after `eject_for` (10 min
/// here); meanwhile its 503 says when to come back and `/readyz` is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_is_back_after_a_probe_not_after_eject_for() {
    let (pki, proxy, gw) = gateway_to_a_stoppable_backend("eject_after_failures = 1\neject_for = \"10min\"").await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    assert_eq!(c.get("/api/x").await.unwrap().0, 200);
    assert_eq!(gw.admin("GET", "/readyz").await.0, 200);

    // The backend goes away: one connection failure ejects the endpoint.
    proxy.stop().await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let (s, _, b) = c.get("/api/x").await.unwrap();
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    let (s, h, b) = c.get("/api/x").await.unwrap();
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(error_code(&b), "no_healthy_endpoint");
    let wait = retry_after(&h);
    assert!(
        (1..=5).contains(&wait),
        "Retry-After is the time to the next probe (interval 5 s), not eject_for: {wait}"
    );
    let body = readyz_becomes(&gw, 503, Duration::from_secs(5)).await;
    assert!(body.contains("\"api\""), "the body names the route: {body}");

    // The backend comes back on the same port: a probe returns the endpoint.
    proxy.restart().await;
    let started = Instant::now();
    loop {
        let (s, _, _) = c.get("/api/x").await.unwrap();
        if s == 200 {
            break;
        }
        assert_eq!(s, 503);
        // Two default intervals and then some; eject_for is 10 minutes.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still refused {:?} after the backend came back",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    readyz_becomes(&gw, 200, Duration::from_secs(5)).await;
    gw.wait_log("endpoint back in service").await;
}

/// Configured probes find a dead backend with no traffic at all: `/readyz` goes 503
/// (with Retry-After), the endpoint is out (a request gets 503 at once, without a
/// connection attempt), the metrics show the failed probes and the endpoint's state;
/// when the backend is back, all of it reverts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_take_a_dead_endpoint_out_without_traffic_and_readyz_follows() {
    let (pki, proxy, gw) = gateway_to_a_stoppable_backend(
        "[upstreams.api.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nunhealthy_threshold = 2\n",
    )
    .await;
    readyz_becomes(&gw, 200, Duration::from_secs(5)).await;

    proxy.stop().await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let why = loop {
        let (status, body) = gw.admin("GET", "/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "readyz never went 503 ({body:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(why.contains("no healthy endpoint"), "{why}");
    gw.wait_log("endpoint taken out of service until a health probe succeeds")
        .await;
    let (s, h, b) = c.get("/api/x").await.unwrap();
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(retry_after(&h), 1, "the next probe is within 200 ms");
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("phr_upstream_probes_total{") && metrics.contains("result=\"failed\""),
        "{metrics}"
    );
    let healthy = metrics
        .lines()
        .find(|l| l.starts_with("phr_endpoint_healthy{"))
        .unwrap_or_else(|| panic!("no phr_endpoint_healthy: {metrics}"));
    assert!(healthy.ends_with(" 0"), "{healthy}");
    assert!(metrics.contains("phr_routes_without_healthy_endpoint 1"), "{metrics}");

    proxy.restart().await;
    readyz_becomes(&gw, 200, Duration::from_secs(5)).await;
    assert_eq!(c.get("/api/x").await.unwrap().0, 200);
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(metrics.contains("result=\"ok\""), "{metrics}");
}

/// `[health] max_unhealthy_route_share`: one dead route out of two is tolerated at 0.5,
/// and the readiness check names the share it applied when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_tolerates_the_configured_share_of_unhealthy_routes() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let probes = "[upstreams.{}.health_check]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nunhealthy_threshold = 1\n";
    let routes = format!(
        "[health]\nmax_unhealthy_route_share = 0.5\n\n{}{}",
        plain_route("live", "/live/", &[backend], &probes.replace("{}", "live")),
        plain_route("dead", "/dead/", &[closed_port()], &probes.replace("{}", "dead")),
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &routes));
    gw.wait_log("endpoint taken out of service").await;
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(metrics.contains("phr_routes_without_healthy_endpoint 1"), "{metrics}");
    assert_eq!(gw.admin("GET", "/readyz").await.0, 200, "1 of 2 is within 0.5");
}
