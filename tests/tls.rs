//! End-to-end: TLS termination by the real binary (EX-TLS-1..4, EX-MTLS-1).

use crate::common::*;
use phr_test_support::cli;
use rustls::pki_types::pem::PemObject;
use std::process::Command;
use std::time::Duration;

async fn gateway_with(pki: &Pki, listener_extra: &str) -> Gateway {
    let backend = start_backend().await;
    Gateway::start(
        pki,
        &base_config(pki, listener_extra, &plain_route("b", "/", &[backend], "")),
    )
}

/// EX-TLS-4: the listener chooses the suite, AES-128-GCM first, whatever order the client
/// lists; a client that offers only AES-256-GCM or only ChaCha20 still gets it.
#[tokio::test]
async fn the_listener_chooses_aes_128_gcm_whatever_the_clients_order() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::CipherSuite as S;
    let pki = Pki::new();
    let gw = gateway_with(&pki, "").await;
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let cases = [
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            S::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            S::TLS13_AES_128_GCM_SHA256,
        ),
        (vec![cs::TLS13_AES_256_GCM_SHA384], S::TLS13_AES_256_GCM_SHA384),
        (
            vec![cs::TLS13_CHACHA20_POLY1305_SHA256],
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (offered, expected) in cases {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: offered,
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tls_connect(gw.addr, std::sync::Arc::new(cfg)).await.unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, expected);
    }
}

#[tokio::test]
async fn http1_and_http2_by_alpn() {
    let pki = Pki::new();
    let gw = gateway_with(&pki, "").await;
    for h2 in [false, true] {
        let cfg = client_config(
            &pki.ca_pem,
            &ClientOpts {
                h2,
                ..Default::default()
            },
        );
        let mut conn = Conn::open(gw.addr, cfg).await.unwrap();
        let (status, headers, body) = conn.get("/echo").await.unwrap();
        assert_eq!(status, 200, "h2={h2}");
        let echoed = json(&body);
        // The upstream hop is always HTTP/1.1 over a pooled connection; the client's
        // protocol shows in the response version, checked via the hyper connection type.
        assert_eq!(echoed["method"], "GET");
        assert!(headers.contains_key("strict-transport-security"));
        assert!(headers.contains_key("x-request-id"));
    }
}

/// A client that offers TLS 1.2 only.
fn tls12_client(pki: &Pki) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(
        &pki.ca_pem,
        &ClientOpts {
            tls12_only: true,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn tls12_refused_unless_enabled() {
    let pki = Pki::new();
    let tls12 = tls12_client(&pki);
    let strict = gateway_with(&pki, "").await;
    assert!(
        Conn::open(strict.addr, tls12.clone()).await.is_err(),
        "TLS 1.2 must be refused by default"
    );

    let pki2 = Pki::new();
    let tls12b = tls12_client(&pki2);
    let relaxed = gateway_with(&pki2, "tls_min_version = \"1.2\"").await;
    let mut conn = Conn::open(relaxed.addr, tls12b)
        .await
        .expect("TLS 1.2 enabled by config");
    assert_eq!(conn.get("/").await.unwrap().0, 200);
}

/// Runs `openssl s_client` with extra args; returns (handshake succeeded, output).
fn openssl(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

#[tokio::test]
async fn old_protocols_and_cbc_suites_refused() {
    let pki = Pki::new();
    let gw = gateway_with(&pki, "tls_min_version = \"1.2\"").await;
    // Positive controls: the same tool does complete TLS 1.3 and 1.2 AEAD handshakes.
    let (ok13, out) = openssl(gw.addr, &["-tls1_3"]);
    assert!(ok13, "TLS 1.3 control handshake failed:\n{out}");
    let (ok12, out) = openssl(gw.addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(ok12, "TLS 1.2 AEAD control handshake failed:\n{out}");
    // TLS 1.1 (the client's security level lowered so it really offers it).
    let (ok11, out) = openssl(gw.addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok11, "TLS 1.1 must be refused:\n{out}");
    // A CBC suite over TLS 1.2.
    let (okcbc, out) = openssl(
        gw.addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"],
    );
    assert!(!okcbc, "CBC suites must be refused:\n{out}");
}

#[tokio::test]
async fn mutual_tls_required_optional_absent() {
    let pki = Pki::new();
    let (cert, key) = pki.client_cert("clinic-a");
    let other = Pki::new();
    let (bad_cert, bad_key) = other.client_cert("intruder");
    let ca = pki.path("ca.pem");
    let with = client_config(
        &pki.ca_pem,
        &ClientOpts {
            client_cert: Some((cert.clone(), key.clone())),
            ..Default::default()
        },
    );
    let foreign = client_config(
        &pki.ca_pem,
        &ClientOpts {
            client_cert: Some((bad_cert, bad_key)),
            ..Default::default()
        },
    );
    let without = client(&pki);
    let expected_fp = {
        use sha2::Digest;
        let der = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        hex::encode(sha2::Sha256::digest(der.as_ref()))
    };

    // required
    let gw = gateway_with(
        &pki,
        &format!("client_auth = \"required\"\nclient_ca_file = \"{}\"", ca.display()),
    )
    .await;
    let mut c = Conn::open(gw.addr, with.clone()).await.unwrap();
    let (status, _, body) = c.get("/echo").await.unwrap();
    assert_eq!(status, 200);
    let echoed = json(&body);
    assert_eq!(
        echoed["headers"]["x-phr-client-cert-sha256"],
        expected_fp.as_str(),
        "{echoed}"
    );
    assert!(echoed["headers"]["x-phr-client-cert-subject"]
        .as_str()
        .unwrap()
        .contains("clinic-a"));
    // Without a certificate, or with one from another CA: no request gets through.
    for cfg in [without.clone(), foreign.clone()] {
        let refused = match Conn::open(gw.addr, cfg).await {
            Err(_) => true,
            Ok(mut c) => c.get("/echo").await.is_err(),
        };
        assert!(refused, "required mTLS let a client through");
    }
    drop(gw);

    // optional: no certificate is fine, a bad one is not, and a spoofed header is dropped.
    let gw = gateway_with(
        &pki,
        &format!("client_auth = \"optional\"\nclient_ca_file = \"{}\"", ca.display()),
    )
    .await;
    let mut c = Conn::open(gw.addr, without.clone()).await.unwrap();
    let req = http::Request::get("/echo")
        .header("host", "localhost")
        .header("x-phr-client-cert-sha256", "forged")
        .body(Default::default())
        .unwrap();
    let (status, _, body) = c.request(req).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        json(&body)["headers"].get("x-phr-client-cert-sha256").is_none(),
        "forged identity header reached the backend"
    );
    let refused = match Conn::open(gw.addr, foreign).await {
        Err(_) => true,
        Ok(mut c) => c.get("/echo").await.is_err(),
    };
    assert!(refused, "optional mTLS accepted a certificate from an unknown CA");
    drop(gw);

    // none: a client certificate is not asked for and no identity is forwarded.
    let gw = gateway_with(&pki, "").await;
    let mut c = Conn::open(gw.addr, with).await.unwrap();
    let (status, _, body) = c.get("/echo").await.unwrap();
    assert_eq!(status, 200);
    assert!(json(&body)["headers"].get("x-phr-client-cert-sha256").is_none());
}

#[tokio::test]
async fn revoked_client_certificate_refused_by_crl() {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let pki = Pki::new();
    let (cert, key) = pki.client_cert("revoked-clinic");
    let der = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let serial = SerialNumber::from_slice(parsed.raw_serial());
    let now = rcgen::date_time_ymd(2026, 1, 1);
    let crl = CertificateRevocationListParams {
        this_update: now,
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: serial,
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    };
    std::fs::write(pki.path("crl.pem"), pki.ca.sign_crl(crl).unwrap()).unwrap();
    let gw = gateway_with(
        &pki,
        &format!(
            "client_auth = \"required\"\nclient_ca_file = \"{}\"\ncrl_files = [\"{}\"]",
            pki.path("ca.pem").display(),
            pki.path("crl.pem").display()
        ),
    )
    .await;
    let revoked = client_config(
        &pki.ca_pem,
        &ClientOpts {
            client_cert: Some((cert, key)),
            ..Default::default()
        },
    );
    let refused = match Conn::open(gw.addr, revoked).await {
        Err(_) => true,
        Ok(mut c) => c.get("/echo").await.is_err(),
    };
    assert!(refused, "a revoked client certificate got through");
    let good = client_config(
        &pki.ca_pem,
        &ClientOpts {
            client_cert: Some(pki.client_cert("good-clinic")),
            ..Default::default()
        },
    );
    assert_eq!(Conn::open(gw.addr, good).await.unwrap().get("/").await.unwrap().0, 200);
}

#[tokio::test]
async fn certificate_hot_reload_keeps_open_connections() {
    let pki = Pki::new();
    let gw = gateway_with(&pki, "").await;
    let cfg = client(&pki);
    let mut old_conn = Conn::open(gw.addr, cfg.clone()).await.unwrap();
    assert_eq!(old_conn.get("/").await.unwrap().0, 200);
    let old_cert = old_conn.peer_cert.clone();

    // A broken key first: the reload is refused and the old certificate stays.
    let (new_cert, new_key) = pki.ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(pki.path("server-key.pem"), "not a key").unwrap();
    let (status, body) = gw.admin("POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("server-key.pem"), "the error names the file: {body}");
    let still = Conn::open(gw.addr, cfg.clone()).await.unwrap();
    assert_eq!(still.peer_cert, old_cert);

    // Then the real new pair, applied by SIGHUP.
    std::fs::write(pki.path("server.pem"), new_cert).unwrap();
    std::fs::write(pki.path("server-key.pem"), new_key).unwrap();
    gw.signal("HUP");
    gw.wait_log("configuration reloaded").await;
    let fresh = Conn::open(gw.addr, cfg).await.unwrap();
    assert_ne!(
        fresh.peer_cert, old_cert,
        "new connections must get the new certificate"
    );
    // The connection opened before the reload still works.
    assert_eq!(old_conn.get("/").await.unwrap().0, 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn refuses_expired_and_weak_certificates_at_start() {
    let pki = Pki::new();
    // Expired certificate.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(pki.path("server.pem"), cert.pem()).unwrap();
    std::fs::write(pki.path("server-key.pem"), key.serialize_pem()).unwrap();
    let path = pki.path("gateway.toml");
    std::fs::write(
        &path,
        base_config(&pki, "", &plain_route("b", "/", &[closed_port()], "")),
    )
    .unwrap();
    let out = cli::check_config(BIN, &path);
    let err = out.stderr;
    assert!(!out.success);
    assert!(err.contains("server.pem") && err.contains("expired"), "{err}");

    // Key that does not match the certificate.
    let (cert, _) = pki.ca.issue_server(&["localhost"]).unwrap();
    std::fs::write(pki.path("server.pem"), cert).unwrap();
    let out = cli::run(BIN, &["run", "--config", path.to_str().unwrap()]);
    let err = out.stderr;
    assert!(!out.success);
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn refuses_weak_rsa_keys_and_sha1_signatures() {
    let pki = Pki::new();
    let path = pki.path("gateway.toml");
    std::fs::write(
        &path,
        base_config(&pki, "", &plain_route("b", "/", &[closed_port()], "")),
    )
    .unwrap();
    for (args, expected) in [
        (["-newkey", "rsa:1024", "-sha256"], "1024-bit RSA key"),
        (["-newkey", "rsa:2048", "-sha1"], "SHA-1"),
    ] {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost"])
            .args(args)
            .args(["-keyout", pki.path("server-key.pem").to_str().unwrap()])
            .args(["-out", pki.path("server.pem").to_str().unwrap()])
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli::check_config(BIN, &path);
        let err = out.stderr;
        assert!(!out.success, "accepted a certificate with {expected}");
        assert!(err.contains("server.pem") && err.contains(expected), "{err}");
    }
}

#[tokio::test]
async fn certificates_are_chosen_by_sni() {
    let pki = Pki::new();
    let (cert, key) = pki.ca.issue_server(&["records.example.jp"]).unwrap();
    std::fs::write(pki.path("records.pem"), cert).unwrap();
    std::fs::write(pki.path("records-key.pem"), key).unwrap();
    let backend = start_backend().await;
    let second = format!(
        "[[listeners.certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.path("records.pem").display(),
        pki.path("records-key.pem").display()
    );
    // The extra certificate table belongs to the listener, so it goes before the routes.
    let config = base_config(
        &pki,
        "",
        &format!("{second}\n{}", plain_route("b", "/", &[backend], "")),
    );
    let gw = Gateway::start(&pki, &config);
    let cfg = client(&pki);
    let names = |der: &[u8]| {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = c.subject_alternative_name().unwrap().unwrap();
        format!("{:?}", san.value.general_names)
    };
    for (sni, expected) in [("localhost", "localhost"), ("records.example.jp", "records.example.jp")] {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(rustls::pki_types::ServerName::try_from(sni).unwrap(), tcp)
            .await
            .unwrap();
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert!(names(&der).contains(expected), "SNI {sni} got {}", names(&der));
    }
}

/// The address of a named listener, from its "listener ready" log line.
fn listener_addr(gw: &Gateway, name: &str) -> std::net::SocketAddr {
    gw.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "listener ready" && v["fields"]["listener"] == name)
        .and_then(|v| v["fields"]["addr"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no ready line for listener {name}:\n{}", gw.log_text()))
}

/// EX-SEG-1, EX-MTLS-1: a route bound to the institutions' listener does not exist on the
/// public one, and a route that requires a client certificate refuses a request without
/// one whatever the listener (here one that only asks, `client_auth = "optional"`).
#[tokio::test]
async fn routes_are_bound_to_listeners_and_can_require_client_certificates() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let (cert, key) = pki.client_cert("clinic-a");
    let ca = pki.path("ca.pem").display().to_string();
    let server = (pki.path("server.pem"), pki.path("server-key.pem"));
    let second_listener = format!(
        "[[listeners]]\nname = \"institutions\"\nbind = \"127.0.0.2:0\"\nclient_auth = \"optional\"\nclient_ca_file = \"{ca}\"\n\n[[listeners.certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n",
        server.0.display(),
        server.1.display()
    );
    let rest = format!(
        "{second_listener}{}{}{}",
        route_with(
            "clinic",
            "/clinic/",
            &[backend],
            "",
            "phi = false\nlisteners = [\"institutions\"]\n[routes.auth]\nmode = \"none\"\n"
        ),
        route_with(
            "mtls",
            "/mtls/",
            &[backend],
            "",
            "phi = false\nlisteners = [\"institutions\"]\nclient_cert = \"required\"\n[routes.auth]\nmode = \"none\"\n"
        ),
        plain_route("open", "/open/", &[backend], ""),
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    let institutions = listener_addr(&gw, "institutions");
    let with_cert = client_config(
        &pki.ca_pem,
        &ClientOpts {
            client_cert: Some((cert, key)),
            ..Default::default()
        },
    );
    let without = client(&pki);
    let status = |addr, cfg, path: &'static str| async move {
        let mut c = Conn::open(addr, cfg).await.unwrap();
        let (status, _, body) = c.get(path).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    // The public listener knows nothing of the institutions' routes.
    let (s, body) = status(gw.addr, without.clone(), "/clinic/x").await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("no_route"), "{body}");
    assert_eq!(status(gw.addr, without.clone(), "/mtls/x").await.0, 404);
    assert_eq!(status(gw.addr, without.clone(), "/open/x").await.0, 200);
    // On the institutions' listener: bound routes and unbound ones.
    assert_eq!(status(institutions, without.clone(), "/clinic/x").await.0, 200);
    assert_eq!(status(institutions, without.clone(), "/open/x").await.0, 200);
    // The route's own demand: no certificate, no service.
    let (s, body) = status(institutions, without.clone(), "/mtls/x").await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("client_cert_required"), "{body}");
    assert_eq!(status(institutions, with_cert, "/mtls/x").await.0, 200);
}

/// check-config refuses a route that requires a client certificate but is reachable from
/// a listener that never asks for one, and a binding to a listener that does not exist.
#[test]
fn check_config_refuses_a_certificate_route_on_a_listener_that_never_asks() {
    let pki = Pki::new();
    let backend = closed_port();
    for (route_extra, expected) in [
        ("client_cert = \"required\"\n", "routes[0].client_cert"),
        ("listeners = [\"nowhere\"]\n", "routes[0].listeners"),
    ] {
        let rest = route_with(
            "mtls",
            "/mtls/",
            &[backend],
            "",
            &format!("phi = false\n{route_extra}[routes.auth]\nmode = \"none\"\n"),
        );
        let path = pki.path("gateway.toml");
        std::fs::write(&path, base_config(&pki, "", &rest)).unwrap();
        let out = run_until_exit(
            &["check-config", "--config", path.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .expect("check-config exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route_extra}: check-config accepted it");
        assert!(stderr.contains(expected), "{route_extra}: {stderr}");
    }
}
