//! End-to-end: domestic-only egress (DATA-JP-1..3). Upstream names are pinned with a
//! hosts file; 127.0.0.1 plays "inside the allow-list" and 127.0.0.2 plays "abroad".

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use phr_test_support::cli;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A TLS backend on `ip` that names itself in every response and closes the connection
/// after each one, so every request through the gateway opens a new upstream connection.
async fn tls_backend(pki: &Pki, ip: &str, name: &'static str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = pki.ca.issue_server(&["fhir.test", "abroad.test"]).unwrap();
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let _ = TokioExecutor::new();
    addr
}

fn upstream(name: &str, host: &str, port: u16, ca: &std::path::Path, extra: &str) -> String {
    format!(
        "[upstreams.{name}]\nendpoints = [\"https://{host}:{port}\"]\nca_file = \"{}\"\n{extra}\n\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}/\"\nupstream = \"{name}\"\nphi = false\n[routes.auth]\nmode = \"none\"\n",
        ca.display()
    )
}

/// Writes `text` to `path` and sets its modification time `ahead` into the future, so a
/// reader that polls the mtime sees a change even within the file system's granularity.
fn rewrite_with_a_later_mtime(path: &std::path::Path, text: &str, ahead: Duration) {
    std::fs::write(path, text).unwrap();
    let later = std::time::SystemTime::now() + ahead;
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(later)
        .unwrap();
}

#[test]
fn undeclared_or_foreign_targets_stop_start_up() {
    let pki = Pki::new();
    let path = pki.path("gateway.toml");
    let ca = pki.path("ca.pem");
    let rest = format!(
        "{}\n{}",
        upstream("nowhere", "fhir.test", 443, &ca, ""),
        upstream("overseas", "fhir.test", 443, &ca, "jurisdiction = \"US\"")
    );
    std::fs::write(&path, base_config(&pki, "", &rest)).unwrap();
    for cmd in ["check-config", "run"] {
        let out = cli::run(BIN, &[cmd, "--config", path.to_str().unwrap()]);
        let err = out.stderr;
        assert!(!out.success, "{cmd} started with undeclared targets");
        assert!(
            err.contains("upstreams.nowhere.jurisdiction") && err.contains("no jurisdiction declared"),
            "{err}"
        );
        assert!(
            err.contains("upstreams.overseas.jurisdiction") && err.contains("US"),
            "{err}"
        );
    }
    // A malformed code gets a fix, too.
    std::fs::write(
        &path,
        base_config(&pki, "", &upstream("x", "fhir.test", 443, &ca, "jurisdiction = \"jp\"")),
    )
    .unwrap();
    let out = cli::check_config(BIN, &path);
    let err = out.stderr;
    assert!(!out.success && err.contains("\"JP\""), "{err}");
}

#[tokio::test]
async fn connections_are_checked_on_the_resolved_address_every_time() {
    let pki = Pki::new();
    let inside = tls_backend(&pki, "127.0.0.1", "inside").await;
    let abroad = tls_backend(&pki, "127.0.0.2", "abroad").await;
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 fhir.test\n127.0.0.2 abroad.test\n").unwrap();
    let ca = pki.path("ca.pem");
    // Both backends listen on their own port; the names pick the address. Active health
    // probes are off: they are checked (and refused) like traffic, and this test counts
    // the refusals of its own requests.
    let no_probes = "jurisdiction = \"JP\"\nhealth_check = { enabled = false }";
    let rest = format!(
        "[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n\n{}\n{}",
        hosts.display(),
        upstream("fhir", "fhir.test", inside.port(), &ca, no_probes),
        upstream("abroad", "abroad.test", abroad.port(), &ca, no_probes)
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();

    // Inside the allow-list: passes, over verified upstream TLS.
    let (status, _, body) = c.get("/fhir/Patient/1").await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"inside"[..]));
    // A name that resolves outside the allow-list: refused at connect time.
    let (status, _, body) = c.get("/abroad/Patient/1").await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"]["code"], "egress_refused");
    gw.wait_log("outbound connection refused by the residency policy").await;

    // The DNS answer for fhir.test moves abroad mid-run: the next connection is refused.
    // (Same port number on 127.0.0.2 is not needed: the check happens before connecting.)
    rewrite_with_a_later_mtime(
        &hosts,
        "127.0.0.2 fhir.test\n127.0.0.2 abroad.test\n",
        Duration::from_secs(2),
    );
    let (status, _, body) = c.get("/fhir/Patient/1").await.unwrap();
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["code"], "egress_refused");

    // And back: allowed again, with no reload.
    rewrite_with_a_later_mtime(&hosts, "127.0.0.1 fhir.test\n", Duration::from_secs(4));
    assert_eq!(c.get("/fhir/Patient/1").await.unwrap().0, 200);
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metrics.contains("phr_egress_refused_total{target=\"abroad\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let backend = tls_backend(&other, "127.0.0.1", "untrusted").await;
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 fhir.test\n").unwrap();
    let rest = format!(
        "[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n\n{}",
        hosts.display(),
        upstream(
            "fhir",
            "fhir.test",
            backend.port(),
            &pki.path("ca.pem"),
            "jurisdiction = \"JP\""
        )
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let (status, _, body) = c.get("/fhir/x").await.unwrap();
    assert_eq!(status, 502, "a backend with a certificate from another CA was trusted");
    assert_eq!(json(&body)["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn report_lists_every_target_and_fails_on_a_refused_address() {
    let pki = Pki::new();
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 fhir.test\n127.0.0.2 abroad.test\n").unwrap();
    let ca = pki.path("ca.pem");
    let rest = format!(
        "[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n\n{}\n{}",
        hosts.display(),
        upstream("fhir", "fhir.test", 8443, &ca, "jurisdiction = \"JP\""),
        upstream("abroad", "abroad.test", 8443, &ca, "jurisdiction = \"JP\"")
    );
    let path = pki.path("gateway.toml");
    std::fs::write(&path, base_config(&pki, "", &rest)).unwrap();
    let out = Command::new(BIN)
        .args(["residency", "report", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a refused address must make the report fail");
    assert!(text.contains("fhir") && text.contains("127.0.0.1"), "{text}");
    assert!(text.contains("abroad") && text.contains("127.0.0.2"), "{text}");
    let out = Command::new(BIN)
        .args(["residency", "report", "--json", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let report = json(&out.stdout);
    assert_eq!(report["rows"].as_array().unwrap().len(), 2);
    assert_eq!(report["ok"], false);
}

#[test]
fn apnic_import_produces_the_jp_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("jp.txt");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/delegated-apnic-extended-sample.txt"
    );
    let run = Command::new(BIN)
        .args(["residency", "import-apnic", sample, "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let nets: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for expected in [
        "1.0.16.0/20",
        "1.0.32.0/19",
        "27.96.0.0/21",
        "27.96.8.0/22",
        "202.0.65.0/24",
        "2001:200::/34",
    ] {
        assert!(nets.contains(&expected), "missing {expected} in\n{text}");
    }
    assert!(
        !nets.iter().any(|n| n.starts_with("1.0.64.") || n.starts_with("43.")),
        "non-JP or reserved range imported:\n{text}"
    );
}

/// The PostgreSQL store and Redis are residency targets like any upstream: the report
/// covers them (it used to panic on every target that was not an upstream) and the
/// gateway does not start while their names resolve to an address the policy refuses.
#[test]
fn store_and_redis_addresses_are_checked_at_start_and_reported() {
    let pki = Pki::new();
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 fhir.test cache.test\n127.0.0.2 db.test\n").unwrap();
    let ca = pki.path("ca.pem");
    let rest = format!(
        "[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n\n{}\n\
         [store]\nurl = \"postgres://gw@db.test:5432/phr\"\njurisdiction = \"JP\"\n\n\
         [redis]\nurl = \"redis://cache.test:6379\"\njurisdiction = \"JP\"\n",
        hosts.display(),
        upstream("fhir", "fhir.test", 8443, &ca, "jurisdiction = \"JP\""),
    );
    let path = pki.path("gateway.toml");
    std::fs::write(&path, base_config(&pki, "", &rest)).unwrap();

    let out = Command::new(BIN)
        .args(["residency", "report", "--json", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the store's address is refused: the report must fail"
    );
    let report = json(&out.stdout);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{report}");
    let text = report.to_string();
    assert!(text.contains("store") && text.contains("127.0.0.2"), "{text}");
    assert!(text.contains("redis"), "{text}");

    // db.test is loopback, allowed only for a store declared in_cluster: check-config
    // says so (it used to skip the storage targets and call this config valid), and
    // the gateway does not start.
    for cmd in ["check-config", "run"] {
        let out = run_until_exit(&[cmd, "--config", path.to_str().unwrap()], Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{cmd} went on with a store address the policy refuses"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} accepted a refused store address");
        assert!(
            err.contains("store") && err.contains("127.0.0.2") && err.contains("in_cluster"),
            "{cmd}: {err}"
        );
    }
}
