//! End-to-end: what a Prometheus server scrapes from the real binary is valid and
//! complete (EX-IDS-1, issue 19 item 1): `promtool check metrics` finds nothing in a
//! real scrape, every family has `# HELP` and `# TYPE`, the OpenMetrics answer parses,
//! the new operator metrics (handshake refusals by reason, certificate expiry, health
//! per endpoint and route) are there; and `deploy/monitoring/check.sh` (alert rules,
//! their unit tests, the dashboard's shape and every panel query) passes.
//!
//! promtool comes with Debian's `prometheus` package (`.ci/run` installs it). Without
//! it these tests say so and pass, unless `PHR_TEST_REQUIRE_SERVICES=1` or `CI` is set.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use phr_test_support::config::issuer;
use phr_test_support::tokens;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether promtool can run; when it cannot, a visible skip, or a failure in CI.
fn promtool_available() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let required =
            std::env::var("PHR_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "promtool is not installed (apt-get install --no-install-recommends prometheus) and PHR_TEST_REQUIRE_SERVICES/CI require it"
        );
        eprintln!("SKIPPED: promtool is not installed (Debian package `prometheus`); the scrape is not checked");
    }
    found
}

/// Runs promtool with `args`, feeding `stdin`: (success, stdout + stderr).
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// GET /metrics on the admin listener with an optional `Accept`: (content type, body).
async fn scrape(gw: &Gateway, accept: Option<&str>) -> (String, String) {
    let tcp = TcpStream::connect(gw.admin).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::get("/metrics").header("host", "admin");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (ct, String::from_utf8(body.to_vec()).unwrap())
}

/// Sends a plain HTTP request to the TLS port and waits until the gateway closes it.
async fn plain_http_to_the_tls_port(gw: &Gateway) {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
}

/// Waits (bounded) until the text scrape has a line starting with `prefix`; returns it.
async fn wait_for_line(gw: &Gateway, prefix: &str) -> String {
    for _ in 0..100 {
        let (_, body) = scrape(gw, None).await;
        if let Some(l) = body.lines().find(|l| l.starts_with(prefix)) {
            return l.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = scrape(gw, None).await;
    panic!("no line starting with {prefix:?} in:\n{body}");
}

/// A gateway with a FHIR route (token required) and a plain route, after traffic that
/// makes most families appear: allowed and refused requests (401, 404, 429), a plain HTTP
/// client on the TLS port, a TLS 1.2 client on a TLS 1.3 listener.
async fn gateway_after_traffic() -> (Pki, Gateway) {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    // One request a minute on /limited/: the second is refused by policy `tight`.
    let limited = route_with(
        "limited",
        "/limited/",
        &[plain],
        "",
        "phi = false\nrate_limits = [\"tight\"]\n[routes.auth]\nmode = \"none\"\n",
    );
    let rest = format!(
        "{}\n{}\n{}\n{limited}\n[rate_limits.policies.tight]\nkey = \"route\"\nrate = 1\nper = \"60s\"\nburst = 1\n",
        issuer(pki.dir.path()),
        fhir_route(fhir),
        plain_route("plain", "/plain/", &[plain], "")
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    let mut claims = tokens::claims();
    claims["scope"] = json!("launch/patient openid patient/*.rs");
    claims["patient"] = json!("pa");
    let token = tokens::sign("ec1", Algorithm::ES256, "ec1", &claims);

    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(path).header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };
    for (path, token, expected) in [
        ("/fhir/Patient/pa", Some(token.as_str()), 200),
        ("/fhir/Patient/pa", None, 401),
        ("/nowhere", None, 404),
        ("/plain/echo", None, 200),
        ("/limited/echo", None, 200),
        ("/limited/echo", None, 429),
    ] {
        let (status, _, body) = c.request(get(path, token)).await.unwrap();
        assert_eq!(status, expected, "{path}: {}", String::from_utf8_lossy(&body));
    }
    drop(c);
    plain_http_to_the_tls_port(&gw).await;
    let tls12 = ClientOpts {
        tls12_only: true,
        ..Default::default()
    };
    assert!(
        tls_connect(gw.addr, client_config(&pki.ca_pem, &tls12)).await.is_err(),
        "the listener's minimum is TLS 1.3"
    );
    (pki, gw)
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_and_has_the_operator_metrics() {
    if !promtool_available() {
        return;
    }
    let (pki, gw) = gateway_after_traffic().await;
    // Refusals by reason, counted when the gateway gives up on the connection.
    wait_for_line(
        &gw,
        "phr_tls_handshake_failures_total{listener=\"public\",reason=\"not_tls\"} 1",
    )
    .await;
    wait_for_line(
        &gw,
        "phr_tls_handshake_failures_total{listener=\"public\",reason=\"protocol_version\"} 1",
    )
    .await;

    let (content_type, body) = scrape(&gw, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, findings) = promtool(&["check", "metrics"], &body);
    assert!(
        ok && findings.trim().is_empty(),
        "promtool check metrics:\n{findings}\nscrape:\n{body}"
    );

    // Every family has both HELP and TYPE (promtool reports a missing HELP; TYPE is
    // checked here, since promtool accepts untyped samples).
    let types: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name = &line[..line.find(['{', ' ']).unwrap()];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains(f)))
            .unwrap_or(name);
        assert!(types.contains(&family), "no # TYPE for {name}:\n{body}");
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "no # HELP for {family}:\n{body}"
        );
    }
    for expected in [
        "phr_requests_total{route=\"fhir\",status=\"401\"} 1",
        "phr_requests_total{route=\"none\",status=\"404\"} 1",
        "phr_rate_limit_refused_total{policy=\"tight\"} 1",
        "phr_tls_handshakes_total{listener=\"public\",version=\"TLSv1.3\"} 1",
        "phr_route_healthy_endpoints{route=\"fhir\"} 1",
        "phr_endpoint_healthy{upstream=\"fhir\",endpoint=",
        "phr_auth_refused_total{code=",
        "phr_tls_certificate_expiry_timestamp_seconds{section=\"listeners.public\",role=\"server\",subject=",
        "phr_audit_records_committed_total ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(expected)),
            "no {expected:?} in:\n{body}"
        );
    }
    // The expiry is the served certificate's notAfter, as a Unix time.
    let expiry: f64 = body
        .lines()
        .find(|l| l.starts_with("phr_tls_certificate_expiry_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let pem = std::fs::read(pki.path("server.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    assert_eq!(expiry, cert.validity().not_after.timestamp() as f64);
}

#[tokio::test]
async fn openmetrics_is_served_when_the_scraper_asks_for_it() {
    let (_pki, gw) = gateway_after_traffic().await;
    // What Prometheus sends by default.
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (content_type, body) = scrape(&gw, Some(accept)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert!(body.contains("# TYPE phr_requests counter\n"), "{body}");
    assert!(
        body.contains("phr_requests_total{route=\"fhir\",status=\"401\"} 1\n"),
        "{body}"
    );
    assert!(!body.contains("\n\n"), "no blank lines in OpenMetrics:\n{body}");
    let (ct, _) = scrape(&gw, Some("text/plain")).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");

    // Prometheus's own OpenMetrics parser (in promtool's backfill command, which
    // wants a timestamp on every sample) reads the whole answer.
    if !promtool_available() {
        return;
    }
    let stamped: String = body
        .lines()
        .map(|l| match l.starts_with('#') {
            true => format!("{l}\n"),
            false => format!("{l} 1700000000\n"),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scrape.om");
    std::fs::write(&input, stamped).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.path().join("blocks"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool could not parse the OpenMetrics answer: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `deploy/monitoring/check.sh`: the alert rules load and their unit tests pass, the
/// dashboard has the shape Grafana imports, every panel query parses, and every metric
/// the dashboard and rules name is in the catalogue.
#[test]
fn the_monitoring_bundle_passes_its_checks() {
    if !promtool_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(root.join("deploy/monitoring/check.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/monitoring/check.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
