//! End-to-end: OIDC discovery (issue 19 item 2) through the real binary. A local
//! provider on loopback serves its metadata and keys over HTTPS (the test CA); the
//! gateway is configured with `discovery = true` and no `jwks_url`.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use phr_test_support::tokens::{self, claims, sign, AUD};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An OpenID Provider on 127.0.0.1 over TLS: `/.well-known/openid-configuration`
/// names `issuer` (settable) and `<base>/jwks`; `/jwks` serves a settable key set.
struct Provider {
    addr: SocketAddr,
    claimed_issuer: Arc<Mutex<Option<String>>>,
    jwks: Arc<Mutex<Bytes>>,
    metadata_fetches: Arc<AtomicUsize>,
}

impl Provider {
    fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

async fn provider(pki: &Pki, initial: Bytes) -> Provider {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = pki.ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = Provider {
        addr,
        claimed_issuer: Arc::new(Mutex::new(None)),
        jwks: Arc::new(Mutex::new(initial)),
        metadata_fetches: Arc::new(AtomicUsize::new(0)),
    };
    let base = p.issuer();
    let (claimed, jwks, count) = (p.claimed_issuer.clone(), p.jwks.clone(), p.metadata_fetches.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, base) = (acceptor.clone(), base.clone());
            let (claimed, jwks, count) = (claimed.clone(), jwks.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        "/.well-known/openid-configuration" => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let issuer = claimed.lock().unwrap().clone().unwrap_or_else(|| base.clone());
                            Some(Bytes::from(
                                json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")}).to_string(),
                            ))
                        }
                        "/jwks" => Some(jwks.lock().unwrap().clone()),
                        _ => None,
                    };
                    async move {
                        let resp = match body {
                            Some(b) => hyper::Response::new(Full::new(b)),
                            None => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    p
}

fn config(pki: &Pki, p: &Provider, backend: SocketAddr) -> String {
    let rest = format!(
        "[auth]\nmin_refetch_interval = \"1s\"\n\n[[auth.issuers]]\nissuer = \"{}\"\ndiscovery = true\nca_file = \"{}\"\naudiences = [\"{AUD}\"]\njurisdiction = \"JP\"\nin_cluster = true\n\n{}",
        p.issuer(),
        pki.path("ca.pem").display(),
        route_with("fhir", "/fhir/", &[backend], "", "[routes.auth]\nmode = \"required\"\n"),
    );
    base_config(pki, "", &rest)
}

fn token(p: &Provider, key: &str, kid: &str) -> String {
    let mut c = claims();
    c["iss"] = json!(p.issuer());
    sign(key, Algorithm::RS256, kid, &c)
}

async fn status(c: &mut Conn, token: &str) -> (u16, String) {
    let req = Request::get("/fhir/x")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, _, body) = c.request(req).await.unwrap();
    (s, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample of `metric` whose labels contain every one of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_keys_are_used_and_a_rotated_key_is_found_through_the_jwks_uri() {
    let pki = Pki::new();
    let p = provider(&pki, tokens::jwks(&[("rsa1", Algorithm::RS256, "k1")])).await;
    let gw = Gateway::start(&pki, &config(&pki, &p, start_backend().await));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();

    let (s, body) = status(&mut c, &token(&p, "rsa1", "k1")).await;
    assert_eq!(s, 200, "{body}");
    let before = p.metadata_fetches.load(Ordering::SeqCst);
    assert!(before >= 1, "the metadata was fetched at start");

    // The provider rotates to a new key with a new kid: the unknown kid makes the
    // gateway re-read the metadata and fetch the keys from the discovered jwks_uri.
    *p.jwks.lock().unwrap() = tokens::jwks(&[("rsa2", Algorithm::RS256, "k2")]);
    let (s, body) = status(&mut c, &token(&p, "rsa2", "k2")).await;
    assert_eq!(s, 200, "{body}");
    assert!(p.metadata_fetches.load(Ordering::SeqCst) > before);

    let (code, metrics) = gw.admin("GET", "/metrics").await;
    assert_eq!(code, 200);
    let issuer = format!("issuer=\"{}\"", p.issuer());
    let count = |kind: &str, result: &str| {
        sample(
            &metrics,
            "phr_jwks_fetches_total",
            &[&issuer, &format!("kind=\"{kind}\""), &format!("result=\"{result}\"")],
        )
    };
    assert!(count("discovery", "success").is_some_and(|n| n >= 2.0), "{metrics}");
    assert!(count("scheduled", "success").is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(count("unknown_kid", "success").is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(count("discovery", "failure"), Some(0.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_for_another_issuer_stops_start_up_with_the_precise_error() {
    let pki = Pki::new();
    let p = provider(&pki, tokens::default_jwks()).await;
    *p.claimed_issuer.lock().unwrap() = Some(format!("{}/", p.issuer()));
    let path = pki.path("gateway.toml");
    std::fs::write(&path, config(&pki, &p, closed_port())).unwrap();
    let path = path.to_str().unwrap().to_string();
    // The provider runs on this test's runtime: wait for the exit off the runtime.
    let out = tokio::task::spawn_blocking(move || run_until_exit(&["run", "--config", &path], Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the gateway must refuse to start");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "discovery document of issuer {iss}: issuer is \"{iss}/\", expected \"{iss}\" exactly",
        iss = p.issuer()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

/// `check-config` checks the discovery URL like a `jwks_url`: a loopback provider without
/// `in_cluster = true` is named by its key, and discovery cannot be mixed with jwks_url.
#[test]
fn check_config_names_the_discovery_key() {
    let pki = Pki::new();
    let path = pki.path("gateway.toml");
    let issuer = |extra: &str| {
        format!(
            "[[auth.issuers]]\nissuer = \"https://127.0.0.1:{}\"\ndiscovery = true\naudiences = [\"{AUD}\"]\njurisdiction = \"JP\"\n{extra}\n\n{}",
            closed_port().port(),
            route_with("fhir", "/fhir/", &[closed_port()], "", "[routes.auth]\nmode = \"required\"\n"),
        )
    };
    std::fs::write(&path, base_config(&pki, "", &issuer(""))).unwrap();
    let out = phr_test_support::cli::check_config(BIN, &path);
    assert!(!out.success, "{}", out.stderr);
    for needle in ["auth.issuers[0].discovery", "127.0.0.1", "in_cluster = true"] {
        assert!(out.stderr.contains(needle), "{needle:?} missing in: {}", out.stderr);
    }

    let both = issuer("in_cluster = true\njwks_url = \"https://127.0.0.1:1/jwks\"");
    std::fs::write(&path, base_config(&pki, "", &both)).unwrap();
    let out = phr_test_support::cli::check_config(BIN, &path);
    assert!(!out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("auth.issuers[0].discovery") && out.stderr.contains("cannot be combined with jwks_url"),
        "{}",
        out.stderr
    );
}
