//! End-to-end: the reverse proxy (routing, header hygiene, limits, upstream failures,
//! WebSocket) through the real binary with a real TLS client.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::Duration;

/// A gateway with one route, `api` at `/api/`, to a fresh [`start_backend`].
async fn gateway_to_the_test_backend() -> (Pki, Gateway) {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(
        &pki,
        &base_config(&pki, "", &plain_route("api", "/api/", &[backend], "")),
    );
    (pki, gw)
}

#[tokio::test]
async fn forwards_and_replaces_spoofed_forwarding_headers() {
    let (pki, gw) = gateway_to_the_test_backend().await;
    for h2 in [false, true] {
        let mut c = Conn::open(
            gw.addr,
            client_config(
                &pki.ca_pem,
                &ClientOpts {
                    h2,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        let req = Request::get("/api/echo?x=1")
            .header("host", "localhost")
            .header("x-forwarded-for", "203.0.113.7")
            .header("forwarded", "for=203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
            .header("x-request-id", "client-chosen")
            .header("connection", "x-drop-me")
            .header("x-drop-me", "secret")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let req = if h2 {
            // HTTP/2 forbids connection-specific headers; send the rest.
            let (mut p, b) = req.into_parts();
            p.headers.remove("connection");
            p.headers.remove("x-drop-me");
            Request::from_parts(p, b)
        } else {
            req
        };
        let (status, headers, body) = c.request(req).await.unwrap();
        assert_eq!(status, 200);
        let e = json(&body);
        let h = &e["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "h2={h2}");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(h["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=https"));
        assert!(h.get("x-real-ip").is_none());
        assert!(
            h.get("x-drop-me").is_none(),
            "a header named by Connection reached the backend"
        );
        // The gateway's own request id, forwarded and returned.
        let rid = headers["x-request-id"].to_str().unwrap();
        assert_ne!(rid, "client-chosen");
        assert_eq!(h["x-request-id"], rid);
        assert_eq!(e["uri"], "/api/echo?x=1");
    }
}

#[tokio::test]
async fn unknown_route_404_and_path_tricks_400_as_json() {
    let (pki, gw) = gateway_to_the_test_backend().await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let (status, headers, body) = c.get("/nothing-here").await.unwrap();
    assert_eq!(status, 404);
    let e = json(&body);
    assert_eq!(e["error"]["code"], "no_route");
    assert_eq!(e["error"]["request_id"], headers["x-request-id"].to_str().unwrap());
    let (status, _, body) = c.get("/api/%2e%2e/admin").await.unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["code"], "bad_path");
}

#[tokio::test]
async fn body_limit_413_declared_and_streamed() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("api", "/", &[backend], "")));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let small = Request::post("/echo")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    let (status, _, body) = c.request(small).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body_len"], 1000);
    let big = Request::post("/echo")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(vec![b'a'; 5000])))
        .unwrap();
    let (status, _, body) = c.request(big).await.unwrap();
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["code"], "body_too_large");

    // A chunked body with no length: cut off while streaming.
    let mut tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tls.write_all(b"400\r\n").await.unwrap();
        tls.write_all(&[b'b'; 0x400]).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
    }
    tls.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn upstream_down_502_and_slow_upstream_504() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let routes = format!(
        "{}\n{}",
        plain_route("down", "/down/", &[closed_port()], ""),
        plain_route("slow", "/slow", &[backend], "response_timeout = \"500ms\"")
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &routes));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let (status, _, body) = c.get("/down/x").await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"]["code"], "upstream_unreachable");
    let (status, _, body) = c.get("/slow?ms=3000").await.unwrap();
    assert_eq!(status, 504);
    assert_eq!(json(&body)["error"]["code"], "upstream_timeout");
    let (status, _, _) = c.get("/slow?ms=10").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn round_robin_ejects_a_dead_endpoint() {
    let pki = Pki::new();
    let live = start_backend().await;
    let dead = closed_port();
    let gw = Gateway::start(
        &pki,
        &base_config(
            &pki,
            "",
            &plain_route(
                "rr",
                "/",
                &[dead, live],
                "eject_after_failures = 2\neject_for = \"60s\"",
            ),
        ),
    );
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        let (status, _, _) = c.get("/").await.unwrap();
        if status != 200 {
            assert_eq!(status, 502);
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "the dead endpoint should fail exactly eject_after_failures times, then be skipped"
    );
    gw.wait_log("endpoint ejected").await;
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(metrics.contains("phr_endpoint_ejections_total"), "{metrics}");
}

#[tokio::test]
async fn slow_client_header_is_cut_off() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("api", "/", &[backend], "")));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: local").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 1024];
    // header_read_timeout is 1 s in the test config: the gateway must hang up (408 or EOF).
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("gateway kept a slow client open")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let pki = Pki::new();
    let ws = start_ws_echo().await;
    let backend = start_backend().await;
    let routes = format!(
        "{}\n{}",
        plain_route("api", "/api/", &[backend], ""),
        route_with(
            "ws",
            "/ws",
            &[ws],
            "",
            "websocket = true\nphi = false\n[routes.auth]\nmode = \"none\""
        )
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &routes));
    let tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    let (mut socket, resp) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("upgrade through the gateway");
    assert_eq!(resp.status(), 101);
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("診察室 ready"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "診察室 ready");

    // Traffic keeps a tunnel open past websocket_idle_timeout (2 s in the test config)...
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = format!("ping {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("tunnel closed while in use")
            .expect("tunnel closed while in use")
            .expect("tunnel failed while in use");
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    // ...and silence closes it: the client sees the end of the stream within the
    // timeout plus a margin, without sending anything.
    let silent_from = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(8), socket.next())
        .await
        .expect("idle tunnel was not closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "unexpected message: {end:?}"
    );
    let waited = silent_from.elapsed();
    assert!(waited >= Duration::from_millis(1500), "closed too early: {waited:?}");
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("phr_websocket_tunnels_idle_closed_total 1"),
        "no idle-close count in:\n{metrics}"
    );

    // A route without `websocket = true` refuses the upgrade.
    let tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    assert!(tokio_tungstenite::client_async("wss://localhost/api/x", tls)
        .await
        .is_err());
}

/// A backend that counts the requests whose head reached it and the ones whose body
/// it read to the end (health probes not included); answers 200 "ok".
async fn counting_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>,
) {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    let counts: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        // The gateway's health probes are not forwarded requests.
                        if req
                            .headers()
                            .get("user-agent")
                            .is_some_and(|ua| ua == "phr-gateway-health-check")
                        {
                            return Ok(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))));
                        }
                        seen[0].fetch_add(1, Ordering::SeqCst);
                        if req.into_body().collect().await.is_ok() {
                            seen[1].fetch_add(1, Ordering::SeqCst);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, counts)
}

/// Sends raw bytes over TLS (HTTP/1.1) and returns the status code of the answer
/// (0 when the connection closed without one).
async fn raw_http1(gw: &Gateway, pki: &Pki, bytes: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(gw.addr, client(pki)).await.unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// RFC 9112 §3.2: two `Host` headers, or an HTTP/1.1 request without one, are 400 and
/// never reach the backend (it could route them differently from the gateway).
#[tokio::test]
async fn ambiguous_host_is_400_and_not_forwarded() {
    let pki = Pki::new();
    let (backend, counts) = counting_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("api", "/", &[backend], "")));
    let cases: [&[u8]; 2] = [
        b"GET /a HTTP/1.1\r\nHost: localhost\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for raw in cases {
        let (status, text) = raw_http1(&gw, &pki, raw).await;
        assert_eq!(status, 400, "{}: {text}", String::from_utf8_lossy(raw));
        assert!(text.contains("bad_request"), "{text}");
    }
    // The well-formed request still goes through: the backend was reachable all along.
    let (status, _) = raw_http1(
        &gw,
        &pki,
        b"GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        counts[0].load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the good request was forwarded"
    );
}

/// A malformed chunked body is the client's fault: 400, and the upstream's error
/// counter does not move.
#[tokio::test]
async fn malformed_chunked_body_is_400_not_an_upstream_error() {
    let pki = Pki::new();
    let (backend, _) = counting_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("api", "/", &[backend], "")));
    for raw in [
        &b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"[..],
        &b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
        &b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"[..],
    ] {
        let (status, text) = {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
            tls.write_all(raw).await.unwrap();
            // A truncated body ends with the client closing its side.
            tls.shutdown().await.ok();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            (status, text)
        };
        assert_eq!(status, 400, "{}: {text}", String::from_utf8_lossy(raw));
        assert!(text.contains("bad_body"), "{text}");
    }
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        !metrics.contains("phr_upstream_errors_total"),
        "a client's bad body was counted against the upstream:\n{metrics}"
    );
    assert!(
        !gw.log_text().contains("upstream_failed"),
        "a client's bad body was reported as an upstream failure:\n{}",
        gw.log_text()
    );
}

/// RFC 9113 §8.1.1: an HTTP/2 request whose DATA frames disagree with its
/// `content-length` is malformed: a stream error, and no complete request upstream.
#[tokio::test]
async fn http2_content_length_mismatch_is_a_stream_error() {
    let pki = Pki::new();
    // One backend reads every body before answering; the other answers at once,
    // without reading the body (as many do for a request they do not expect a body on).
    let (backend, counts) = counting_backend().await;
    let plain = start_backend().await;
    let gw = Gateway::start(
        &pki,
        &base_config(
            &pki,
            "",
            &format!(
                "{}{}",
                plain_route("api", "/", &[backend], ""),
                plain_route("quick", "/q/", &[plain], "")
            ),
        ),
    );
    let h2 = client_config(
        &pki.ca_pem,
        &ClientOpts {
            h2: true,
            ..Default::default()
        },
    );
    // Repeated: whether the quick backend's answer beats the malformed DATA is a race.
    let cases = [("/a", 10usize, 5usize), ("/a", 3, 8), ("/q/a", 10, 5), ("/q/a", 3, 8)];
    for (path, declared, sent) in cases.into_iter().cycle().take(40) {
        let mut c = Conn::open(gw.addr, h2.clone()).await.unwrap();
        let req = Request::post(format!("https://localhost{path}"))
            .header("content-length", declared)
            .body(Full::new(Bytes::from(vec![b'x'; sent])))
            .unwrap();
        match c.send(req).await {
            Ok(resp) => panic!("{path} declared {declared}, sent {sent}: answered {}", resp.status()),
            Err(e) => assert!(
                format!("{e:?}").contains("PROTOCOL_ERROR"),
                "{path} declared {declared}: {e:?}"
            ),
        }
    }
    assert_eq!(
        counts[0].load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a malformed request reached the backend"
    );
}

/// Issue 19, item 1 (first part): Prometheus 3 refuses a scrape without a Content-Type
/// unless the operator configures a fallback, so `/metrics` declares the text format,
/// and every other admin answer says it is plain text.
#[tokio::test]
async fn metrics_scrape_declares_the_prometheus_text_format() {
    let (_pki, gw) = gateway_to_the_test_backend().await;
    let (status, headers, body) = gw.admin_with_headers("GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(body.contains("# TYPE "), "{body}");
    for path in ["/healthz", "/readyz", "/nothing-here"] {
        let (_, headers, _) = gw.admin_with_headers("GET", path).await;
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8", "{path}");
    }
}

/// An HTTP/1.1 keep-alive connection waiting for its next request is governed by
/// `limits.idle_timeout` (5 s in the test config), not `header_read_timeout` (1 s): a
/// client that asks again after 2.5 s reuses its connection, and the gateway closes the
/// connection once it has been idle for the idle timeout (AV-DOS-1).
#[tokio::test]
async fn an_idle_http1_connection_outlives_the_header_read_timeout_until_the_idle_timeout() {
    let (pki, gw) = gateway_to_the_test_backend().await;
    let tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let get = || {
        Request::get("/api/x")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = send
        .send_request(get())
        .await
        .expect("the keep-alive connection was closed after the header read timeout");
    assert_eq!(again.status(), 200);
    closes_after_the_idle_timeout(conn, "HTTP/1.1").await;
}

/// Once a keep-alive client begins its next request head, `header_read_timeout` (1 s in
/// the test config) runs from that first byte: slowloris protection holds between
/// requests too, however long the connection sat idle before (AV-DOS-1).
#[tokio::test]
async fn a_next_request_head_begun_after_an_idle_spell_must_finish_within_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pki, gw) = gateway_to_the_test_backend().await;
    let mut tls = tls_connect(gw.addr, client(&pki)).await.unwrap();
    tls.write_all(b"GET /api/x HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The whole first response: its head, then content-length bytes.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let complete = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })?
            .parse()
            .ok()?;
        (body.len() >= len).then_some(())
    };
    while complete(&got).is_none() {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("the first response")
            .unwrap();
        assert!(n > 0, "closed before the first response was complete");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    // Idle for longer than the header read timeout, then a head that never ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(b"GET /api/x HTTP/1.1\r\nhost: loc")
        .await
        .expect("the idle connection is still open");
    let began = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("the gateway kept a slow head open past the header read timeout")
        .unwrap_or(0);
    let waited = began.elapsed();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed {waited:?} after the head began (header_read_timeout is 1 s)"
    );
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("phr_connections_timed_out_total{reason=\"header_read\"}"),
        "{metrics}"
    );
}

/// `limits.idle_timeout` (5 s in the test config) closes an HTTP/2 connection that has
/// carried no request for that long (AV-DOS-1), and not sooner: it is the connection
/// task's idle timer that does it, which the task polls only when it fires
/// (`util::wake_gate`).
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let (pki, gw) = gateway_to_the_test_backend().await;
    let h2 = client_config(
        &pki.ca_pem,
        &ClientOpts {
            h2: true,
            ..Default::default()
        },
    );
    let tls = tls_connect(gw.addr, h2).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("https://localhost/api/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    closes_after_the_idle_timeout(conn, "HTTP/2").await;
}

/// Waits for the gateway to close a client connection whose last request has just been
/// answered: not before `limits.idle_timeout` (5 s in the test config; 4 s allows for
/// timer slack), and well within 20 s.
async fn closes_after_the_idle_timeout(conn: tokio::task::JoinHandle<Result<(), hyper::Error>>, protocol: &str) {
    let last_request = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .unwrap_or_else(|_| panic!("the gateway kept an idle {protocol} connection open past its idle timeout"))
        .unwrap()
        .ok();
    let idle = last_request.elapsed();
    assert!(
        idle >= Duration::from_secs(4),
        "{protocol}: closed after {idle:?} idle, before the idle timeout"
    );
}
