//! End-to-end: `phr-gateway probe` (issue 20 item 3) against the demo passes every check;
//! against a deliberately weakened gateway (TLS 1.2 on, a route without auth, a backend
//! that serves any patient) it fails exactly the matching checks; the JUnit file is
//! well-formed with one test case per check. `probe upstreams` (item 4) fails an upstream
//! with an expired certificate, one that refuses the gateway's client certificate and one
//! that resolves outside the allow-list, each with a precise message. Error bodies that
//! leak a panic and a backend address fail `errors.no_internals`.

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Runs `phr-gateway ARGS` off the runtime (the backends the probe reaches run on it);
/// returns (exit code, stdout, stderr).
async fn run_probe(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN).args(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The checks of a `--json` report, by name.
fn checks(report: &Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn failed(report: &Value) -> BTreeSet<String> {
    checks(report)
        .into_iter()
        .filter(|(_, o, _)| o == "fail")
        .map(|(n, _, _)| n)
        .collect()
}

fn detail(report: &Value, name: &str) -> String {
    checks(report)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
        .2
}

/// A minimal well-formedness check: every tag closes in order, attributes are quoted,
/// and no bare `&` or `<` is left in text. Returns the element names in document order.
fn xml_elements(xml: &str) -> Vec<String> {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in {text:?}"
            );
        }
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "< inside a tag: {tag:?}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag.split_whitespace().next().unwrap().trim_end_matches('/').to_string();
            names.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert!(rest.trim().is_empty());
    names
}

fn assert_junit_matches(junit: &Path, report: &Value) {
    let xml = std::fs::read_to_string(junit).unwrap();
    let names = xml_elements(&xml);
    let n = report["checks"].as_array().unwrap().len();
    assert_eq!(names.iter().filter(|e| *e == "testcase").count(), n, "{xml}");
    assert_eq!(
        names.iter().filter(|e| *e == "failure").count(),
        failed(report).len(),
        "{xml}"
    );
    for (name, _, _) in checks(report) {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{name} missing: {xml}");
    }
}

#[tokio::test]
async fn probe_passes_every_check_against_the_demo() {
    let demo = Demo::start();
    let (gw, data) = (&demo.gw, &demo.data);
    let token = demo.token("PATIENT_TOKEN");
    let junit = data.join("probe.xml");
    let (code, stdout, stderr) = run_probe(vec![
        "probe".into(),
        format!("https://localhost:{}/fhir", gw.addr.port()),
        "--ca".into(),
        data.join("ca.pem").display().to_string(),
        "--token".into(),
        token,
        "--other-patient".into(),
        "p2".into(),
        "--junit".into(),
        junit.display().to_string(),
        "--json".into(),
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(report["ok"], true);
    let all = checks(&report);
    assert!(all.iter().all(|(_, o, _)| o == "pass"), "{all:#?}");
    let names: BTreeSet<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in [
        "tls.versions",
        "tls.suites",
        "tls.groups",
        "tls.certificate.chain",
        "tls.certificate.name",
        "tls.certificate.expiry",
        "http.hsts",
        "tokens.unsigned",
        "tokens.wrong_key",
        "tokens.expired",
        "tokens.wrong_audience",
        "tokens.wrong_issuer",
        "patients.read",
        "patients.search",
        "errors.no_internals",
    ] {
        assert!(names.contains(want), "{want} not run: {names:?}");
    }
    assert_eq!(names.len(), 15, "{names:?}");
    assert!(report["duration_ms"].as_u64().is_some());
    assert_junit_matches(&junit, &report);
}

#[tokio::test]
async fn probe_fails_exactly_the_weakened_checks() {
    let pki = Pki::new();
    let backend = fhir_backend::start().await;
    // TLS 1.2 on, and /fhir/ forwarded without authentication or FHIR confinement to a
    // backend that answers for any patient.
    let gw = Gateway::start(
        &pki,
        &base_config(
            &pki,
            "tls_min_version = \"1.2\"",
            &plain_route("open", "/fhir/", &[backend], ""),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("weak.xml");
    let (code, stdout, stderr) = run_probe(vec![
        "probe".into(),
        format!("https://localhost:{}/fhir/", gw.addr.port()),
        "--ca".into(),
        pki.path("ca.pem").display().to_string(),
        "--token".into(),
        "any-token-is-let-through".into(),
        "--other-patient".into(),
        "pb".into(),
        "--junit".into(),
        junit.display().to_string(),
        "--json".into(),
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let want: BTreeSet<String> = [
        "tls.versions",
        "tokens.unsigned",
        "tokens.wrong_key",
        "tokens.expired",
        "tokens.wrong_audience",
        "tokens.wrong_issuer",
        "patients.read",
        "patients.search",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(failed(&report), want, "{report:#}");
    assert!(detail(&report, "tls.versions").contains("TLS 1.2 accepted"));
    assert!(detail(&report, "tokens.wrong_key").contains("answered 200 instead of 401"));
    assert!(detail(&report, "patients.read").contains("patient pb's data"));
    assert_junit_matches(&junit, &report);

    // A listener that allows TLS 1.2 on purpose passes tls.versions with --allow-tls12.
    let (_, stdout, _) = run_probe(vec![
        "probe".into(),
        format!("https://localhost:{}/fhir/", gw.addr.port()),
        "--ca".into(),
        pki.path("ca.pem").display().to_string(),
        "--allow-tls12".into(),
        "--json".into(),
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(!failed(&report).contains("tls.versions"), "{report:#}");
    assert!(detail(&report, "tls.versions").contains("TLS 1.2 allowed"));

    // Unusable input is exit status 2, not a failed check.
    let (code, _, stderr) = run_probe(vec!["probe".into(), "http://localhost/fhir".into()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("https"), "{stderr}");
}

// ---- probe upstreams --------------------------------------------------------------

fn pem_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// A TLS server answering every request with 200 "ok"; with `client_ca`, it requires a
/// client certificate issued by that CA.
async fn tls_server(cert: &str, key: &str, client_ca: Option<&str>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_chain(ca) {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = builder.with_single_cert(pem_chain(cert), key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A server certificate for `expired.test` that expired in 2021, and its CA (PEM).
fn expired_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "expired test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let mut leaf = CertificateParams::new(vec!["expired.test".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "expired.test");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

fn tls_upstream(name: &str, host: &str, port: u16, ca: &Path, extra: &str) -> String {
    format!(
        "[upstreams.{name}]\nendpoints = [\"https://{host}:{port}\"]\nca_file = \"{}\"\njurisdiction = \"JP\"\nhealth_check = {{ enabled = false }}\n{extra}\n\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}/\"\nupstream = \"{name}\"\nphi = false\n[routes.auth]\nmode = \"none\"\n",
        ca.display()
    )
}

#[tokio::test]
async fn probe_upstreams_names_the_expired_the_refusing_and_the_foreign_upstream() {
    let pki = Pki::new();
    // 1. An expired server certificate.
    let (expired_ca, expired_cert, expired_key) = expired_certificate();
    std::fs::write(pki.path("expired-ca.pem"), &expired_ca).unwrap();
    let expired = tls_server(&expired_cert, &expired_key, None).await;
    // 2. A hospital that trusts only its own CA for client certificates; the gateway
    //    presents one from the test CA.
    let (hospital_ca_pem, _hospital) = phr_gateway::demo::certs::new_ca("hospital CA").unwrap();
    let (mtls_cert, mtls_key) = pki.ca.issue_server(&["mtls.test"]).unwrap();
    let mtls = tls_server(&mtls_cert, &mtls_key, Some(&hospital_ca_pem)).await;
    let (client_cert, client_key) = pki.client_cert("gateway");
    // 3. A name that resolves outside the allow-list (TEST-NET-1, never connected to).
    // 4. A healthy FHIR upstream, for contrast: every check passes.
    let fhir = fhir_backend::start().await;
    let hosts = pki.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 expired.test mtls.test\n192.0.2.1 abroad.test\n").unwrap();
    let rest = format!(
        "{}\n[residency]\nallowed_networks = [\"127.0.0.1/32\"]\nhosts_file = \"{}\"\n\n{}\n{}\n{}\n{}",
        phr_test_support::config::issuer(pki.dir.path()),
        hosts.display(),
        tls_upstream(
            "expired",
            "expired.test",
            expired.port(),
            &pki.path("expired-ca.pem"),
            ""
        ),
        tls_upstream(
            "mtls",
            "mtls.test",
            mtls.port(),
            &pki.path("ca.pem"),
            &format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                client_cert.display(),
                client_key.display()
            )
        ),
        tls_upstream("abroad", "abroad.test", 443, &pki.path("ca.pem"), ""),
        fhir_route(fhir),
    );
    let config = pki.path("gateway.toml");
    std::fs::write(&config, base_config(&pki, "", &rest)).unwrap();
    let junit = pki.path("upstreams.xml");
    let (code, stdout, stderr) = run_probe(vec![
        "probe".into(),
        "upstreams".into(),
        "--config".into(),
        config.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
        "--json".into(),
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let e = format!("upstream.expired.expired.test:{}", expired.port());
    let m = format!("upstream.mtls.mtls.test:{}", mtls.port());
    let a = "upstream.abroad.abroad.test:443";
    let want: BTreeSet<String> = [
        format!("{e}.tls"),
        format!("{e}.certificate.chain"),
        format!("{e}.certificate.expiry"),
        format!("{m}.client_certificate"),
        format!("{a}.residency"),
    ]
    .into_iter()
    .collect();
    assert_eq!(failed(&report), want, "{report:#}");
    let expiry = detail(&report, &format!("{e}.certificate.expiry"));
    assert!(expiry.contains("certificate expired on 2021-01-01"), "{expiry}");
    let refused = detail(&report, &format!("{m}.client_certificate"));
    assert!(
        refused.contains("refused the gateway's client certificate")
            && refused.contains("gateway.pem")
            && refused.contains("UnknownCA"),
        "{refused}"
    );
    let abroad = detail(&report, &format!("{a}.residency"));
    assert!(
        abroad.contains("192.0.2.1") && abroad.contains("outside the allow-list"),
        "{abroad}"
    );
    // Nothing is attempted past a refused address: no TCP check for abroad.test.
    assert!(!checks(&report).iter().any(|(n, _, _)| n == &format!("{a}.tcp")));
    // The healthy FHIR upstream: resolved, allowed, reachable, metadata with its version.
    let f = format!("upstream.fhir.{fhir}");
    assert!(detail(&report, &format!("{f}.fhir_metadata")).contains("FHIR 4.0.1"));
    assert_junit_matches(&junit, &report);
}

/// A backend whose every answer is a 500 with a Rust panic message and a database
/// address in the body.
async fn leaky_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let body = "thread 'db' panicked at src/store.rs:88:13: connection to 10.1.2.3:5432 refused";
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn probe_fails_error_bodies_that_leak_internals() {
    let pki = Pki::new();
    let backend = leaky_backend().await;
    let gw = Gateway::start(
        &pki,
        &base_config(&pki, "", &plain_route("leaky", "/api/", &[backend], "")),
    );
    let (code, stdout, stderr) = run_probe(vec![
        "probe".into(),
        format!("https://localhost:{}/api", gw.addr.port()),
        "--ca".into(),
        pki.path("ca.pem").display().to_string(),
        "--json".into(),
    ])
    .await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(code, 1, "{report:#}");
    let leaks = detail(&report, "errors.no_internals");
    assert!(
        leaks.contains("panicked at") && leaks.contains("10.1.2.3:5432") && leaks.contains(".rs:LINE"),
        "{leaks}"
    );
    assert!(failed(&report).contains("errors.no_internals"));
    // Without --token the cross-patient checks are skipped, not passed.
    for name in ["patients.read", "patients.search"] {
        assert!(
            checks(&report).iter().any(|(n, o, _)| n == name && o == "skip"),
            "{report:#}"
        );
    }
    assert!(detail(&report, "tokens.unsigned").contains("answered 500 instead of 401"));
}
