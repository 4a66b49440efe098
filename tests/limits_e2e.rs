//! End-to-end: rate limiting and abuse protection through the real binary
//! (AV-DOS-1, EX-NET-3, AUTH-LOCK-1, LOG-ACC-1, EX-FILE-1).
//!
//! Upload filter by content, keyed GCRA policies (burst, sustained rate, shared in Redis,
//! Redis failure modes), per-IP connection and handshake caps, failed-auth back-off and
//! the bulk-access detector. Tests that need Redis read `PHR_TEST_REDIS_URL` and skip
//! without it (panic instead with `PHR_TEST_REQUIRE_SERVICES=1`). Every load loop is
//! bounded in count and in time.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use phr_test_support::config::issuer;
use phr_test_support::services::redis_url;
use phr_test_support::tokens;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ---- configuration -----------------------------------------------------------------

/// A config with this test's own `[connection_limits]` and `[auth_backoff]` keys.
fn config(pki: &Pki, connection_limits: &str, auth_backoff: &str, rest: &str) -> String {
    gateway_config(pki, "limits-test", "", connection_limits, auth_backoff, "", rest)
}

/// A `[rate_limits.policies.NAME]` table.
pub(crate) fn policy(name: &str, key: &str, rate: u32, per: &str, burst: u32, extra: &str) -> String {
    format!(
        "[rate_limits.policies.{name}]\nkey = \"{key}\"\nrate = {rate}\nper = \"{per}\"\nburst = {burst}\n{extra}\n"
    )
}

/// A shared (Redis) policy of 1000 requests a second per route, a burst of 1000: one
/// that never limits, so only Redis failures (`on_redis_error`) decide.
fn generous_shared_policy(name: &str, on_redis_error: &str) -> String {
    policy(
        name,
        "route",
        1000,
        "1s",
        1000,
        &format!("shared = true\non_redis_error = \"{on_redis_error}\""),
    )
}

/// A public (non-PHI, unauthenticated) route to `backend` applying `policies`.
fn limited_route(name: &str, prefix: &str, backend: SocketAddr, policies: &[&str]) -> String {
    let names: Vec<String> = policies.iter().map(|p| format!("\"{p}\"")).collect();
    route_with(
        name,
        prefix,
        &[backend],
        "",
        &format!(
            "phi = false\nrate_limits = [{}]\n[routes.auth]\nmode = \"none\"\n",
            names.join(", ")
        ),
    )
}

/// A valid ES256 token for `sub` with `scope`.
fn token(sub: &str, scope: &str) -> String {
    let mut c = tokens::claims();
    c["sub"] = json!(sub);
    c["scope"] = json!(scope);
    tokens::sign("ec1", Algorithm::ES256, "ec1", &c)
}

/// Starts a gateway with its config in its own file (several gateways can share a PKI).
fn start_named(pki: &Pki, file: &str, config: &str) -> Gateway {
    let path: PathBuf = pki.path(file);
    std::fs::write(&path, config).unwrap();
    Gateway::start_with_args(&["run", "--config", path.to_str().unwrap()], path.clone())
}

/// The test Redis (`None`: skip) and a TCP proxy in front of it that a test can stop
/// and restart to take Redis away and bring it back.
async fn redis_behind_proxy() -> Option<(String, tcp_proxy::TcpProxy)> {
    let url = redis_url()?;
    let target: SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("redis://IP:port");
    Some((url, tcp_proxy::TcpProxy::start(target).await))
}

/// A Redis key prefix no other run (or test) uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("phr-e2e:{test}:{}:{nanos}:", std::process::id())
}

// ---- client helpers ----------------------------------------------------------------

async fn open(gw: &Gateway, pki: &Pki) -> Conn {
    Conn::open(gw.addr, client(pki))
        .await
        .expect("connection to the gateway")
}

/// Sends one request; `auth` is a bearer token.
async fn send(
    c: &mut Conn,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, http::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    c.request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The `error.code` of the gateway's JSON refusal body.
fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn header<'h>(h: &'h http::HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

/// What one load worker saw.
#[derive(Default, Debug)]
struct Tally {
    admitted: u64,
    limited: u64,
    other: Vec<u16>,
}

/// Sends GET `path` back to back on `c` until `deadline` or `max` requests.
async fn hammer(mut c: Conn, path: &'static str, deadline: Instant, max: u64) -> Tally {
    let mut t = Tally::default();
    for _ in 0..max {
        if Instant::now() >= deadline {
            break;
        }
        match c.get(path).await {
            Ok((200, _, _)) => t.admitted += 1,
            Ok((429, _, _)) => t.limited += 1,
            Ok((s, _, _)) => t.other.push(s),
            Err(_) => t.other.push(0),
        }
    }
    t
}

/// Runs one `hammer` per connection concurrently for `run`; returns the tallies
/// summed and the wall time from just before the first request to after the last answer.
async fn load(conns: Vec<Conn>, path: &'static str, run: Duration, max_per_conn: u64) -> (Tally, Duration) {
    let start = Instant::now();
    let deadline = start + run;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(hammer(c, path, deadline, max_per_conn)))
        .collect();
    let mut sum = Tally::default();
    for w in workers {
        let t = w.await.unwrap();
        sum.admitted += t.admitted;
        sum.limited += t.limited;
        sum.other.extend(t.other);
    }
    (sum, start.elapsed())
}

/// GCRA admits at most `burst` at once plus `rate` per second afterwards: the strict
/// ceiling for a window of `elapsed` (+1 for the boundary).
pub(crate) fn gcra_ceiling(rate: u32, burst: u32, elapsed: Duration) -> u64 {
    u64::from(burst) + (f64::from(rate) * elapsed.as_secs_f64()).floor() as u64 + 1
}

// ---- upload filter (EX-FILE-1) -----------------------------------------------------

fn elf() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.resize(128, 0);
    b
}

fn pe() -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b
}

/// A minimal OOXML package: `[Content_Types].xml` naming `main_type`, one main part,
/// and a `vbaProject.bin` under `dir`.
fn macro_ooxml(dir: &str, main_part: &str, main_type: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let types = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/{main_part}" ContentType="{main_type}"/></Types>"#
    );
    w.start_file("[Content_Types].xml", opts).unwrap();
    w.write_all(types.as_bytes()).unwrap();
    w.start_file(main_part, opts).unwrap();
    w.write_all(b"<?xml version=\"1.0\"?><root/>").unwrap();
    w.start_file(format!("{dir}/vbaProject.bin"), opts).unwrap();
    w.write_all(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1 not really a VBA project")
        .unwrap();
    w.finish().unwrap().into_inner()
}

const PLAIN_PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const JS_PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R /OpenAction 3 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n3 0 obj << /Type /Action /S /JavaScript /JS (app.alert('x')) >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

fn jpeg() -> Vec<u8> {
    let mut b = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
    b.extend_from_slice(&[0x11; 64]);
    b.extend_from_slice(b"\xFF\xD9");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_filter_refuses_executables_macros_and_active_pdfs_whatever_the_declared_type() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}\n[upload_filter.routes.docs]\nallowed_media_types = [\"application/pdf\", \"image/jpeg\"]\n",
        route_with(
            "docs",
            "/docs/",
            &[backend],
            "",
            "phi = false\nmax_body_bytes = 65536\n[routes.auth]\nmode = \"none\"\n",
        )
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;

    let docm = macro_ooxml(
        "word",
        "word/document.xml",
        "application/vnd.ms-word.document.macroEnabled.main+xml",
    );
    let xlsm = macro_ooxml(
        "xl",
        "xl/workbook.xml",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    );
    let refused: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("ELF", elf(), "application/pdf", 415, "executable"),
        ("PE", pe(), "image/jpeg", 415, "executable"),
        ("docm", docm, "application/pdf", 422, "office_macros"),
        ("xlsm", xlsm, "image/jpeg", 422, "office_macros"),
        (
            "PDF with JavaScript",
            JS_PDF.to_vec(),
            "application/pdf",
            422,
            "pdf_active_content",
        ),
    ];
    for (what, body, declared, status, code) in &refused {
        let (s, h, b) = send(&mut c, "POST", "/docs/echo", None, Some(declared), body).await;
        let text = String::from_utf8_lossy(&b);
        assert_eq!(s, *status, "{what} declared {declared}: {text}");
        assert_eq!(header(&h, "content-type"), "application/json", "{what}");
        assert_eq!(error_code(&b), *code, "{what}: {text}");
        assert!(
            json(&b)["error"]["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {text}"
        );
        assert!(text.contains("\"error\""), "{what} reached the backend: {text}");
    }

    // Clean files pass and reach the backend whole.
    let clean: Vec<(&str, Vec<u8>, &str)> = vec![
        ("plain PDF", PLAIN_PDF.to_vec(), "application/pdf"),
        ("JPEG", jpeg(), "image/jpeg"),
    ];
    for (what, body, declared) in &clean {
        let (s, _, b) = send(&mut c, "POST", "/docs/echo", None, Some(declared), body).await;
        assert_eq!(s, 200, "{what}: {}", String::from_utf8_lossy(&b));
        let echo = json(&b);
        assert_eq!(echo["method"], "POST", "{what}: {echo}");
        assert_eq!(echo["body_len"], body.len(), "{what}: {echo}");
    }
    gw.wait_log("upload refused").await;
}

// ---- request-rate policies (AV-DOS-1) ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_honoured_then_429_with_retry_after_and_ratelimit_headers() {
    let pki = Pki::new();
    let backend = start_backend().await;
    // 5 per 5 s (one unit per second) with a burst of 5: the first five pass at once,
    // the sixth must wait about a second. The long period keeps the test exact on a
    // slow machine: six requests take far less than the one-second emission interval.
    let rest = format!(
        "{}{}{}",
        policy("per_ip", "source_ip", 5, "5s", 5, ""),
        limited_route("api", "/api/", backend, &["per_ip"]),
        limited_route("free", "/free/", backend, &[]),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;

    let started = Instant::now();
    let mut remaining = Vec::new();
    for i in 0..5 {
        let (s, h, b) = c.get("/api/echo").await.unwrap();
        assert_eq!(s, 200, "request {i} of the burst: {}", String::from_utf8_lossy(&b));
        // Admitted responses say how much is left, so a client can slow down in time.
        assert_eq!(header(&h, "ratelimit-policy"), "\"per_ip\";q=5;w=5");
        let rl = header(&h, "ratelimit");
        let r: u64 = rl
            .strip_prefix("\"per_ip\";r=")
            .and_then(|rest| rest.split(';').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("RateLimit on an admitted request: {rl}"));
        remaining.push(r);
    }
    let (s, h, b) = c.get("/api/echo").await.unwrap();
    let burst_took = started.elapsed();
    assert!(
        burst_took < Duration::from_millis(900),
        "six requests took {burst_took:?}; the machine is too slow for this check"
    );
    assert_eq!(s, 429, "sixth request: {}", String::from_utf8_lossy(&b));
    assert_eq!(error_code(&b), "rate_limited");
    let retry: u64 = header(&h, "retry-after").parse().expect("Retry-After is delay-seconds");
    assert_eq!(retry, 1, "one unit replenishes within a second");
    assert_eq!(header(&h, "ratelimit-policy"), "\"per_ip\";q=5;w=5");
    let rl = header(&h, "ratelimit");
    let t: u64 = rl
        .strip_prefix("\"per_ip\";r=0;t=")
        .unwrap_or_else(|| panic!("RateLimit: {rl}"))
        .parse()
        .unwrap_or_else(|_| panic!("RateLimit: {rl}"));
    assert!(
        (1..=5).contains(&t),
        "RateLimit t={t}: the full budget returns within 5 s"
    );
    assert_eq!(remaining, [4, 3, 2, 1, 0], "remaining units through the burst");

    // Denials spend nothing, and other routes (without the policy) are not limited.
    for _ in 0..3 {
        assert_eq!(c.get("/api/echo").await.unwrap().0, 429);
    }
    for _ in 0..10 {
        let (s, h, _) = c.get("/free/echo").await.unwrap();
        assert_eq!(s, 200);
        assert!(
            h.get("ratelimit").is_none(),
            "a route without policies has no RateLimit"
        );
    }

    // After Retry-After, exactly one unit is back: one passes, the next is refused. (A new
    // connection: the policy counts the source address, not the connection.)
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    let mut c = open(&gw, &pki).await;
    let (s, _, b) = c.get("/api/echo").await.unwrap();
    assert_eq!(s, 200, "after Retry-After: {}", String::from_utf8_lossy(&b));
    let (s, h, _) = c.get("/api/echo").await.unwrap();
    assert_eq!(s, 429, "only one unit replenished after a second");
    assert!(header(&h, "retry-after").parse::<u64>().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_rate_is_held_over_a_bounded_run() {
    const RATE: u32 = 50;
    const BURST: u32 = 1;
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}",
        policy("upstream_cap", "route", RATE, "1s", BURST, ""),
        limited_route("api", "/api/", backend, &["upstream_cap"]),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(open(&gw, &pki).await);
    }
    let (tally, elapsed) = load(conns, "/api/x", Duration::from_secs(3), 20_000).await;
    assert!(tally.other.is_empty(), "only 200 or 429 expected: {tally:?}");
    assert!(tally.limited > 0, "the load never reached the limit: {tally:?}");
    let ceiling = gcra_ceiling(RATE, BURST, elapsed);
    let ideal = f64::from(RATE) * elapsed.as_secs_f64();
    assert!(
        tally.admitted <= ceiling,
        "admitted {} in {elapsed:?}, the policy allows at most {ceiling}",
        tally.admitted
    );
    // Loose: each admission can come a request's latency late (burst 1 keeps no credit),
    // and this machine may be busy with other tests.
    assert!(
        tally.admitted as f64 >= ideal * 0.5,
        "admitted only {} of ~{ideal:.0} in {elapsed:?}: {tally:?}",
        tally.admitted
    );
    eprintln!(
        "sustained: admitted {} / limited {} in {elapsed:?} (ceiling {ceiling})",
        tally.admitted, tally.limited
    );
}

pub(crate) fn redis_table(url: &str, prefix: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"1s\"\njurisdiction = \"JP\"\nin_cluster = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_the_shared_limit_together() {
    let Some(url) = redis_url() else { return };
    const RATE: u32 = 40;
    const BURST: u32 = 1;
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}{}",
        policy(
            "shared_cap",
            "route",
            RATE,
            "1s",
            BURST,
            "shared = true\non_redis_error = \"closed\""
        ),
        limited_route("api", "/api/", backend, &["shared_cap"]),
        redis_table(&url, &unique_prefix("shared")),
    );
    let text = config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest);
    let a = start_named(&pki, "gateway-a.toml", &text);
    let b = start_named(&pki, "gateway-b.toml", &text);

    // Each gateway alone holds the shared limit (warm-up also connects both to Redis).
    for gw in [&a, &b] {
        let mut c = open(gw, &pki).await;
        let (s, _, body) = c.get("/api/x").await.unwrap();
        assert!(s == 200 || s == 429, "warm-up: {s} {}", String::from_utf8_lossy(&body));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut conns = Vec::new();
    for gw in [&a, &b, &a, &b] {
        conns.push(open(gw, &pki).await);
    }
    let (tally, elapsed) = load(conns, "/api/x", Duration::from_secs(3), 20_000).await;
    assert!(tally.other.is_empty(), "only 200 or 429 expected: {tally:?}");
    assert!(tally.limited > 0, "the load never reached the limit: {tally:?}");
    let ideal = f64::from(RATE) * elapsed.as_secs_f64();
    // The shared budget + 1% (two local limiters would admit about twice as much).
    let ceiling = (gcra_ceiling(RATE, BURST, elapsed) as f64 * 1.01).floor() as u64;
    assert!(
        tally.admitted <= ceiling,
        "two gateways admitted {} in {elapsed:?}; the shared limit allows {ceiling}",
        tally.admitted
    );
    assert!(
        tally.admitted as f64 >= ideal * 0.5,
        "admitted only {} of ~{ideal:.0}: {tally:?}",
        tally.admitted
    );
    eprintln!(
        "shared: admitted {} / limited {} in {elapsed:?} (ceiling {ceiling})",
        tally.admitted, tally.limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_closed_or_open_as_configured() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}{}{}{}",
        policy("strict", "route", 100, "1s", 100, "shared = true\non_redis_error = \"closed\""),
        policy("lenient", "route", 100, "1s", 100, "shared = true\non_redis_error = \"open\""),
        limited_route("closed", "/closed/", backend, &["strict"]),
        limited_route("open", "/open/", backend, &["lenient"]),
        // Port 1 on loopback: nothing listens, connections are refused at once.
        "[redis]\nurl = \"redis://127.0.0.1:1\"\nkey_prefix = \"phr-e2e:down:\"\njurisdiction = \"JP\"\nin_cluster = true\n",
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    for i in 0..3 {
        let (s, h, b) = c.get("/closed/echo").await.unwrap();
        assert_eq!(s, 503, "closed, request {i}: {}", String::from_utf8_lossy(&b));
        assert_eq!(error_code(&b), "rate_limit_unavailable");
        assert!(header(&h, "retry-after").parse::<u64>().unwrap() >= 1);
        // The limit was not checked: no quota or remaining budget is claimed for it.
        assert!(
            h.get("ratelimit-policy").is_none() && h.get("ratelimit").is_none(),
            "{h:?}"
        );

        let (s, _, b) = c.get("/open/echo").await.unwrap();
        assert_eq!(s, 200, "open, request {i}: {}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["method"], "GET", "reached the backend");
    }
    gw.wait_log("shared rate limit: redis unavailable").await;
}

/// The sum of a Prometheus counter's samples whose labels contain every `labels` item.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Issue 17, item 8: with Redis refusing connections, the shared limiter's circuit
/// breaker opens after a few errors and later requests are decided by the policy's
/// failure mode without calling Redis (counted, logged); a fail-open response claims no
/// `RateLimit` budget, because none was checked. Defaults only (no breaker keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_redis_opens_the_breaker_and_unchecked_responses_carry_no_ratelimit() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}[redis]\nurl = \"redis://127.0.0.1:1\"\nkey_prefix = \"phr-e2e:breaker:\"\njurisdiction = \"JP\"\nin_cluster = true\n",
        policy("lenient", "route", 100, "1s", 100, "shared = true\non_redis_error = \"open\""),
        limited_route("open", "/open/", backend, &["lenient"]),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    const REQUESTS: usize = 20;
    for i in 0..REQUESTS {
        let (s, h, b) = c.get("/open/echo").await.unwrap();
        assert_eq!(s, 200, "open, request {i}: {}", String::from_utf8_lossy(&b));
        assert!(
            h.get("ratelimit").is_none() && h.get("ratelimit-policy").is_none(),
            "request {i}: nothing was checked, yet the response claims a budget: {h:?}"
        );
    }
    gw.wait_log("redis circuit breaker opened").await;
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    let errors = metric_sum(&metrics, "phr_rate_limit_redis_errors_total", &["policy=\"lenient\""]);
    let spared = metric_sum(
        &metrics,
        "phr_rate_limit_redis_short_circuited_total",
        &["policy=\"lenient\""],
    );
    assert!(errors >= 1.0, "{metrics}");
    assert!(
        spared >= 1.0 && errors + spared == REQUESTS as f64 && errors < (REQUESTS / 2) as f64,
        "later requests must not go to Redis: {errors} errors, {spared} short-circuited\n{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "phr_rate_limit_redis_breaker_open", &[]),
        1.0,
        "{metrics}"
    );
}

/// Issue 17, item 8, with the real Redis: the breaker opens when Redis goes away
/// (requests stop calling it), and the first probe after Redis is back closes it, after
/// which responses carry `RateLimit` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_opens_the_breaker_and_a_probe_closes_it() {
    let Some((_, proxy)) = redis_behind_proxy().await else {
        return;
    };
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}[redis]\nurl = \"redis://{}\"\nkey_prefix = \"{}\"\njurisdiction = \"JP\"\nin_cluster = true\n\
         breaker_after_errors = 2\nbreaker_retry_interval = \"300ms\"\n",
        generous_shared_policy("lenient", "open"),
        limited_route("open", "/open/", backend, &["lenient"]),
        proxy.addr,
        unique_prefix("breaker"),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    let (s, h, _) = c.get("/open/echo").await.unwrap();
    assert_eq!(s, 200);
    assert!(
        header(&h, "ratelimit").starts_with("\"lenient\";r="),
        "checked with Redis up"
    );

    proxy.stop().await;
    for i in 0..10 {
        let (s, h, _) = c.get("/open/echo").await.unwrap();
        assert_eq!(s, 200, "fail-open, request {i}");
        assert!(h.get("ratelimit").is_none(), "request {i} was not checked: {h:?}");
    }
    gw.wait_log("redis circuit breaker opened").await;
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metric_sum(
            &metrics,
            "phr_rate_limit_redis_short_circuited_total",
            &["policy=\"lenient\""]
        ) >= 1.0,
        "requests while the breaker is open do not call Redis: {metrics}"
    );

    proxy.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h, _) = c.get("/open/echo").await.unwrap();
        if h.get("ratelimit").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.wait_log("redis circuit breaker closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_policy_charges_fhir_interaction_costs_per_subject() {
    let pki = Pki::new();
    let backend = fhir_backend::start().await;
    let rest = format!(
        "{}\n{}{}",
        issuer(pki.dir.path()),
        policy(
            "per_subject",
            "subject",
            4,
            "60s",
            4,
            "costs = { read = 1, \"search-type\" = 2 }"
        ),
        route_with(
            "fhir",
            "/fhir/",
            &[backend],
            "",
            "fhir = true\nrate_limits = [\"per_subject\"]\n[routes.auth]\nmode = \"required\"\n"
        ),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    let searcher = token("dr-search", "openid fhirUser user/*.rs");
    let reader = token("dr-read", "openid fhirUser user/*.rs");

    // Two searches cost 2 each: the budget of 4 is spent, and even a read (cost 1) waits.
    for i in 0..2 {
        let (s, _, b) = send(&mut c, "GET", "/fhir/Observation", Some(&searcher), None, b"").await;
        assert_eq!(s, 200, "search {i}: {}", String::from_utf8_lossy(&b));
    }
    let (s, h, b) = send(&mut c, "GET", "/fhir/Patient/pa", Some(&searcher), None, b"").await;
    let v = json(&b);
    assert_eq!(s, 429, "read after two searches: {v}");
    assert_eq!(
        v["resourceType"], "OperationOutcome",
        "FHIR routes refuse with an OperationOutcome"
    );
    assert_eq!(header(&h, "ratelimit-policy"), "\"per_subject\";q=4;w=60");
    assert!(header(&h, "ratelimit").starts_with("\"per_subject\";r=0;t="));
    // 4 units per 60 s: the next unit is 15 s away.
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((14..=15).contains(&retry), "Retry-After {retry}");

    // Another subject on the same connection and address has its own budget: 4 reads.
    for i in 0..4 {
        let (s, _, b) = send(&mut c, "GET", "/fhir/Patient/pb", Some(&reader), None, b"").await;
        assert_eq!(s, 200, "read {i}: {}", String::from_utf8_lossy(&b));
    }
    let (s, _, _) = send(&mut c, "GET", "/fhir/Patient/pb", Some(&reader), None, b"").await;
    assert_eq!(s, 429, "fifth read");
}

// ---- connection limits (EX-NET-3) --------------------------------------------------

/// Opens a connection and proves it serves; `Err` when the gateway refused it.
async fn try_conn(gw: &Gateway, pki: &Pki) -> Result<Conn, String> {
    let opened = tokio::time::timeout(Duration::from_secs(5), Conn::open(gw.addr, client(pki)))
        .await
        .map_err(|_| "handshake timed out".to_string())?;
    let mut c = opened.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), c.get("/api/echo")).await {
        Ok(Ok((200, _, _))) => Ok(c),
        Ok(Ok((s, _, _))) => Err(format!("status {s}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("request timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_cap_refuses_the_third_connection_until_one_closes() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = limited_route("api", "/api/", backend, &[]);
    let limits = "max_connections_per_ip = 2\ntls_handshakes_per_ip_per_second = 10000\ntls_handshake_burst = 10000";
    let gw = Gateway::start(&pki, &config(&pki, limits, NO_BACKOFF, &rest));

    let mut first = try_conn(&gw, &pki).await.expect("first connection");
    let mut second = try_conn(&gw, &pki).await.expect("second connection");
    for _ in 0..2 {
        let third = try_conn(&gw, &pki).await;
        assert!(third.is_err(), "a third connection from 127.0.0.1 was served");
    }
    // The two open ones keep working (keep-alive, several requests each).
    for c in [&mut first, &mut second] {
        for _ in 0..3 {
            assert_eq!(c.get("/api/echo").await.unwrap().0, 200);
        }
    }

    // Closing one frees exactly one slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let replacement = loop {
        match try_conn(&gw, &pki).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => panic!("slot not released after close: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(try_conn(&gw, &pki).await.is_err(), "the cap holds again with two open");
    assert_eq!(second.get("/api/echo").await.unwrap().0, 200);
    drop(replacement);
    // Three refusals, one log line for the source within the minute, naming the key.
    gw.wait_log("connection refused before TLS").await;
    let lines = refusal_lines(&gw, "connection refused before TLS");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("127.0.0.1") && lines[0].contains("connection_limits.max_connections_per_ip"),
        "{}",
        lines[0]
    );
}

/// The gateway's log lines containing `needle`, once the log has had time to settle.
fn refusal_lines(gw: &Gateway, needle: &str) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    gw.log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_logged_once_per_source_per_interval() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = limited_route("api", "/api/", backend, &[]);
    let limits = "max_connections_per_ip = 10000\ntls_handshakes_per_ip_per_second = 1\ntls_handshake_burst = 1";
    let gw = Gateway::start(&pki, &config(&pki, limits, NO_BACKOFF, &rest));
    // A scanner's burst: most of these are refused before TLS.
    let mut refused = 0;
    for _ in 0..8 {
        if try_conn(&gw, &pki).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 2, "only {refused} of 8 handshakes were refused");
    gw.wait_log("TLS handshake refused").await;
    let lines = refusal_lines(&gw, "TLS handshake refused");
    assert_eq!(lines.len(), 1, "{refused} refusals: {lines:#?}");
    let line = &lines[0];
    for needed in [
        "\"source\":\"127.0.0.1\"",
        "connection_limits.tls_handshake_burst = 1",
        "connection_limits.tls_handshakes_per_ip_per_second = 1",
        "connection_limits.exempt",
    ] {
        assert!(line.contains(needed), "{needed:?} missing: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_rate_per_ip_is_limited() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = limited_route("api", "/api/", backend, &[]);
    let limits = "max_connections_per_ip = 10000\ntls_handshakes_per_ip_per_second = 1\ntls_handshake_burst = 3";
    let gw = Gateway::start(&pki, &config(&pki, limits, NO_BACKOFF, &rest));

    let started = Instant::now();
    for i in 0..3 {
        let c = try_conn(&gw, &pki).await;
        assert!(c.is_ok(), "handshake {i} within the burst: {:?}", c.err());
    }
    let fourth = try_conn(&gw, &pki).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "four handshakes took {took:?}");
    assert!(fourth.is_err(), "a fourth handshake within a second was served");
    // One handshake per second replenishes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(try_conn(&gw, &pki).await.is_ok(), "one handshake back after a second");
    assert!(try_conn(&gw, &pki).await.is_err(), "and only one");
}

// ---- failed-authentication back-off (AUTH-LOCK-1) ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_lock_the_source_out_even_with_a_valid_token() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}\n{}",
        issuer(pki.dir.path()),
        route_with("api", "/api/", &[backend], "", "[routes.auth]\nmode = \"required\"\n"),
    );
    let backoff = "after_failures = 3\nwindow = \"60s\"\nblock_for = \"60s\"";
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, backoff, &rest));
    let mut c = open(&gw, &pki).await;
    let good = token("user-lock", "openid patient/*.read");
    // A token for the right issuer and kid, signed with someone else's key.
    let mut forged_claims = tokens::claims();
    forged_claims["sub"] = json!("user-lock");
    let forged = tokens::sign("attacker_ec", Algorithm::ES256, "ec1", &forged_claims);

    let (s, _, b) = send(&mut c, "GET", "/api/echo", Some(&good), None, b"").await;
    assert_eq!(
        s,
        200,
        "valid token before any failure: {}",
        String::from_utf8_lossy(&b)
    );
    for i in 0..3 {
        let (s, h, b) = send(&mut c, "GET", "/api/echo", Some(&forged), None, b"").await;
        assert_eq!(s, 401, "failure {i}: {}", String::from_utf8_lossy(&b));
        assert!(h.contains_key("www-authenticate"));
    }
    let (s, h, b) = send(&mut c, "GET", "/api/echo", Some(&good), None, b"").await;
    assert_eq!(s, 429, "valid token after 3 failures: {}", String::from_utf8_lossy(&b));
    assert_eq!(error_code(&b), "auth_locked");
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry} for a 60 s block");
    // Blocked before the token is even looked at: no token, a new connection, same answer.
    let mut fresh = open(&gw, &pki).await;
    let (s, _, b) = send(&mut fresh, "GET", "/api/echo", None, None, b"").await;
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert_eq!(error_code(&b), "auth_locked");
    gw.wait_log("repeated authentication failures").await;
}

// ---- bulk-access detector (LOG-ACC-1) ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_access_blocks_a_subject_after_more_distinct_patients_than_allowed() {
    let pki = Pki::new();
    let backend = fhir_backend::start().await;
    let rest = format!(
        "{}\n{}\n[bulk_access]\nwindow = \"60s\"\nmax_distinct_patients = 1\naction = \"block\"\n",
        issuer(pki.dir.path()),
        fhir_route(backend),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    let scraper = token("dr-scraper", "openid fhirUser user/*.rs");
    let calm = token("dr-calm", "openid fhirUser user/*.rs");
    let read = |v: &Value| v["resourceType"].as_str().unwrap_or_default().to_string();

    // Below the threshold nothing fires: one patient, read twice.
    for i in 0..2 {
        let (s, _, b) = send(&mut c, "GET", "/fhir/Patient/pa", Some(&calm), None, b"").await;
        assert_eq!(s, 200, "calm read {i}: {}", String::from_utf8_lossy(&b));
    }

    let (s, _, b) = send(&mut c, "GET", "/fhir/Patient/pa", Some(&scraper), None, b"").await;
    assert_eq!(s, 200, "first patient: {}", String::from_utf8_lossy(&b));
    assert_eq!(read(&json(&b)), "Patient");
    // The second distinct patient is threshold + 1: this response is delivered, then the
    // detector fires and blocks the subject.
    let (s, _, b) = send(&mut c, "GET", "/fhir/Patient/pb", Some(&scraper), None, b"").await;
    assert_eq!(s, 200, "second patient: {}", String::from_utf8_lossy(&b));
    gw.wait_log("bulk access").await;
    assert_eq!(
        gw.log_text().matches("bulk access detected").count(),
        1,
        "one alert: {}",
        gw.log_text()
    );

    for path in ["/fhir/Patient/pa", "/fhir/Observation", "/fhir/Patient/pb"] {
        let (s, _, b) = send(&mut c, "GET", path, Some(&scraper), None, b"").await;
        let v = json(&b);
        assert_eq!(s, 403, "{path} after the block: {v}");
        assert_eq!(read(&v), "OperationOutcome", "{path}: {v}");
        assert!(v.to_string().contains("blocked"), "{path}: {v}");
    }
    gw.wait_log("\"code\":\"subject_blocked\"").await;
    // Other subjects are unaffected, and re-reading one patient never fires.
    for i in 0..2 {
        let (s, _, b) = send(&mut c, "GET", "/fhir/Patient/pa", Some(&calm), None, b"").await;
        assert_eq!(s, 200, "calm read after the block {i}: {}", String::from_utf8_lossy(&b));
    }
    assert_eq!(gw.log_text().matches("bulk access detected").count(), 1);
}

// ---- known bugs (ignored until fixed; see the commit message) ----------------------

/// An upload rule must filter uploads, not reads: a request without a body has no
/// content to judge. Today every GET/HEAD/DELETE on an upload route is refused 415
/// ("detected type text/plain is not allowed"): the empty body is classified as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_requests_on_an_upload_route_are_not_filtered() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}\n[upload_filter.routes.docs]\nallowed_media_types = [\"application/pdf\"]\n",
        route_with(
            "docs",
            "/docs/",
            &[backend],
            "",
            "phi = false\n[routes.auth]\nmode = \"none\"\n"
        )
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    for method in ["GET", "DELETE"] {
        let (s, _, b) = send(&mut c, method, "/docs/echo", None, None, b"").await;
        assert_eq!(s, 200, "{method}: {}", String::from_utf8_lossy(&b));
    }
}

/// A configuration reload must not lift lockouts, refill rate-limit budgets or forget
/// open connections. Today `Runtime::build` builds a fresh `Protection` on every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_lockouts_budgets_and_connection_counts() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}\n{}{}{}",
        issuer(pki.dir.path()),
        route_with("api", "/api/", &[backend], "", "[routes.auth]\nmode = \"required\"\n"),
        policy("per_ip", "source_ip", 1, "60s", 1, ""),
        limited_route("lim", "/lim/", backend, &["per_ip"]),
    );
    let backoff = "after_failures = 1\nwindow = \"60s\"\nblock_for = \"60s\"";
    let limits = "max_connections_per_ip = 1\ntls_handshakes_per_ip_per_second = 10000\ntls_handshake_burst = 10000";
    let gw = Gateway::start(&pki, &config(&pki, limits, backoff, &rest));
    let mut c = open(&gw, &pki).await;
    assert_eq!(c.get("/lim/x").await.unwrap().0, 200);
    assert_eq!(c.get("/lim/x").await.unwrap().0, 429);
    assert_eq!(send(&mut c, "GET", "/api/echo", Some("x.y.z"), None, b"").await.0, 401);
    let good = token("user-reload", "openid patient/*.read");
    assert_eq!(send(&mut c, "GET", "/api/echo", Some(&good), None, b"").await.0, 429);
    assert!(try_conn(&gw, &pki).await.is_err(), "cap of one connection");

    assert_eq!(gw.admin("POST", "/reload").await.0, 200);
    assert_eq!(
        send(&mut c, "GET", "/api/echo", Some(&good), None, b"").await.0,
        429,
        "lockout lifted by a reload"
    );
    assert_eq!(c.get("/lim/x").await.unwrap().0, 429, "budget refilled by a reload");
    assert!(
        try_conn(&gw, &pki).await.is_err(),
        "connection count forgotten by a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_fails_closed_or_open_then_recovers() {
    let Some((_, proxy)) = redis_behind_proxy().await else {
        return;
    };
    let pki = Pki::new();
    let backend = start_backend().await;
    let rest = format!(
        "{}{}{}{}[redis]\nurl = \"redis://{}\"\nkey_prefix = \"{}\"\njurisdiction = \"JP\"\nin_cluster = true\n",
        generous_shared_policy("strict", "closed"),
        generous_shared_policy("lenient", "open"),
        limited_route("closed", "/closed/", backend, &["strict"]),
        limited_route("open", "/open/", backend, &["lenient"]),
        proxy.addr,
        unique_prefix("midrun"),
    );
    let gw = Gateway::start(&pki, &config(&pki, UNLIMITED_CONNECTIONS, NO_BACKOFF, &rest));
    let mut c = open(&gw, &pki).await;
    for path in ["/closed/echo", "/open/echo"] {
        assert_eq!(c.get(path).await.unwrap().0, 200, "{path} with Redis up");
    }
    // Redis goes away mid-run.
    proxy.stop().await;
    let (s, _, b) = c.get("/closed/echo").await.unwrap();
    assert_eq!(
        s,
        503,
        "fail-closed policy with Redis down: {}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(
        c.get("/open/echo").await.unwrap().0,
        200,
        "fail-open policy with Redis down"
    );
    // And comes back: the closed policy admits again without a restart.
    proxy.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if c.get("/closed/echo").await.unwrap().0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shared limiter did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// DATA-JP-1: Redis is dialled at the address the residency check passed, on the first
/// connection and on every reconnection, never at a fresh resolution of its name; a
/// reload that names a Redis outside the allow-list is refused and the checked one stays.
/// `cache.test` and `abroad.test` exist only in the gateway's hosts file, so the system
/// resolver (which the Redis client would use on its own) cannot find them: a request
/// that reaches Redis proves the checked address was the one dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_dialled_at_its_checked_address_and_a_reload_abroad_is_refused() {
    let Some((url, proxy)) = redis_behind_proxy().await else {
        return;
    };
    let pki = Pki::new();
    let backend = start_backend().await;
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 cache.test\n127.0.0.2 abroad.test\n").unwrap();
    let prefix = unique_prefix("pinned");
    let text = |redis_host: &str| {
        config(
            &pki,
            UNLIMITED_CONNECTIONS,
            NO_BACKOFF,
            &format!(
                "{}{}[redis]\nurl = \"redis://{redis_host}:{}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"1s\"\n\
                 jurisdiction = \"JP\"\n\n[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n",
                // A slow rate, so the bucket outlives the request (its expiry is its TAT).
                policy(
                    "strict",
                    "route",
                    1,
                    "1h",
                    1000,
                    "shared = true\non_redis_error = \"closed\""
                ),
                limited_route("api", "/api/", backend, &["strict"]),
                proxy.addr.port(),
                hosts.display()
            ),
        )
    };
    let path = pki.path("gateway.toml");
    std::fs::write(&path, text("cache.test")).unwrap();
    let gw = Gateway::start_with_args(&["run", "--config", path.to_str().unwrap()], path.clone());
    let mut c = open(&gw, &pki).await;
    let (s, _, b) = c.get("/api/x").await.unwrap();
    assert_eq!(s, 200, "shared limit via cache.test: {}", String::from_utf8_lossy(&b));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "no bucket under {prefix} in Redis");

    // Reconnections dial the checked address too.
    proxy.stop().await;
    assert_eq!(c.get("/api/x").await.unwrap().0, 503, "fail closed while Redis is away");
    proxy.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get("/api/x").await.unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "no reconnection to the checked address");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A reload pointing Redis abroad is refused; the checked Redis stays in use.
    std::fs::write(&path, text("abroad.test")).unwrap();
    gw.signal("HUP");
    gw.wait_log("reload rejected").await;
    let log = gw.log_text();
    assert!(
        log.contains("127.0.0.2") && log.contains("redis"),
        "the refusal names the address and the target: {log}"
    );
    assert_eq!(c.get("/api/x").await.unwrap().0, 200, "the last good config stays");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut r).await.unwrap();
}
