//! End-to-end: token authentication through the real binary (AUTH-ID-1, AUTH-2FA-1..3,
//! なりすまし対策), with real RSA, EC and Ed25519 signatures and a JWKS server on loopback.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use phr_test_support::tokens::{self, claims, key, now, raw_token, sign, unique, AUD, ISS};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A JWKS endpoint whose key set the test can change, counting fetches.
struct Jwks {
    addr: SocketAddr,
    body: Arc<Mutex<Bytes>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(initial: Bytes) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (b, f) = (b.clone(), f.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().unwrap().clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Jwks { addr, body, fetches }
}

fn route(name: &str, backend: SocketAddr, auth: &str) -> String {
    route_with(
        name,
        &format!("/{name}/"),
        &[backend],
        "",
        &format!("[routes.auth]\n{auth}\n"),
    )
}

async fn start(pki: &Pki, jwks: &Jwks, listener_extra: &str) -> Gateway {
    let backend = start_backend().await;
    let rest = format!(
        "[auth]\nmin_refetch_interval = \"1s\"\n\n[[auth.issuers]]\nissuer = \"{ISS}\"\njwks_url = \"http://{}/jwks\"\naudiences = [\"{AUD}\"]\njurisdiction = \"JP\"\nin_cluster = true\n\n{}\n{}\n{}\n{}",
        jwks.addr,
        route("fhir", backend, "mode = \"required\""),
        route("mfa", backend, "two_factor = true"),
        route("bound", backend, "require_cert_bound = true"),
        route("dpop", backend, "require_dpop = true"),
    );
    Gateway::start(pki, &base_config(pki, listener_extra, &rest))
}

async fn call(c: &mut Conn, path: &str, auth: Option<&str>, dpop: Option<&str>) -> (u16, http::HeaderMap, Bytes) {
    let mut req = Request::get(path).header("host", "localhost");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    c.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_pass_and_every_forgery_is_refused() {
    let pki = Pki::new();
    let jwks = jwks_server(tokens::default_jwks()).await;
    let gw = start(&pki, &jwks, "").await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();

    // Valid tokens of every key family pass, and the backend sees the verified identity
    // (and not the client's forged copy of it).
    for (k, alg) in [
        ("rsa1", Algorithm::RS256),
        ("rsa1", Algorithm::PS256),
        ("ec1", Algorithm::ES256),
        ("ed1", Algorithm::EdDSA),
    ] {
        let t = sign(k, alg, k, &claims());
        let req = Request::get("/fhir/echo")
            .header("host", "localhost")
            .header("authorization", bearer(&t))
            .header("x-phr-subject", "forged-admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = c.request(req).await.unwrap();
        assert_eq!(status, 200, "{alg:?}: {}", String::from_utf8_lossy(&body));
        let seen = json(&body);
        assert_eq!(seen["headers"]["x-phr-subject"], "user-1", "{seen}");
        assert!(
            seen["headers"].get("authorization").is_some(),
            "the token is passed on to the backend"
        );
    }

    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        sign("rsa1", Algorithm::RS256, "rsa1", &c)
    };
    cases.push(("expired", with(&|c| c["exp"] = json!(now() - 3600))));
    cases.push(("nbf in the future", with(&|c| c["nbf"] = json!(now() + 3600))));
    cases.push(("wrong iss", with(&|c| c["iss"] = json!("https://evil.example"))));
    cases.push(("wrong aud", with(&|c| c["aud"] = json!("https://other.example"))));
    cases.push(("missing exp", with(&|c| drop(c.as_object_mut().unwrap().remove("exp")))));
    cases.push((
        "alg none",
        raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims(), None),
    ));
    // HS256 "signed" with the RSA public key: the classic key-confusion attack.
    let public_pem = tokens::pem("rsa1.pub");
    let hs = jsonwebtoken::EncodingKey::from_secret(&public_pem);
    cases.push((
        "HS256 with the RSA public key",
        raw_token(
            &json!({"alg": "HS256", "kid": "rsa1"}),
            &claims(),
            Some((&hs, Algorithm::HS256)),
        ),
    ));
    cases.push((
        "unknown kid",
        sign("rsa2", Algorithm::RS256, "nobody-has-this", &claims()),
    ));
    let attacker = key("attacker_ec");
    let attacker_jwk = tokens::public_jwk("attacker_ec", Algorithm::ES256, "evil");
    for (h, v) in [
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/cert")),
        ("jwk", attacker_jwk),
    ] {
        let header = json!({"alg": "ES256", "kid": "ec1", h: v});
        cases.push((h, raw_token(&header, &claims(), Some((&attacker, Algorithm::ES256)))));
    }
    let good = sign("rsa1", Algorithm::RS256, "rsa1", &claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut payload = claims();
    payload["sub"] = json!("someone-else");
    parts[1] = tokens::b64(&payload);
    cases.push(("tampered payload", parts.join(".")));
    cases.push(("oversized", with(&|c| c["pad"] = json!("x".repeat(10_000)))));

    for (name, token) in &cases {
        let (status, headers, body) = call(&mut c, "/fhir/echo", Some(&bearer(token)), None).await;
        assert_eq!(status, 401, "{name}: {}", String::from_utf8_lossy(&body));
        assert!(headers.contains_key("www-authenticate"), "{name}: no challenge");
        assert!(
            !String::from_utf8_lossy(&body).contains(token.as_str()),
            "{name}: token echoed"
        );
    }
    let (status, headers, _) = call(&mut c, "/fhir/echo", None, None).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));

    // Two-factor route: pwd alone or two possession factors fail; pwd + otp passes.
    for (amr, expect) in [
        (json!(["pwd"]), 401),
        (json!(["otp", "sms"]), 401),
        (json!(["pwd", "otp"]), 200),
    ] {
        let t = with(&|c| c["amr"] = amr.clone());
        let (status, headers, _) = call(&mut c, "/mfa/x", Some(&bearer(&t)), None).await;
        assert_eq!(status, expect, "amr {amr}");
        if expect == 401 {
            assert!(headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("insufficient_user_authentication"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_needs_its_certificate_and_a_dpop_proof_its_url_once() {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pki = Pki::new();
    let jwks = jwks_server(tokens::default_jwks()).await;
    let gw = start(
        &pki,
        &jwks,
        &format!(
            "client_auth = \"optional\"\nclient_ca_file = \"{}\"",
            pki.path("ca.pem").display()
        ),
    )
    .await;
    let (cert, key_path) = pki.client_cert("clinic-a");
    let (other_cert, other_key) = pki.client_cert("clinic-b");
    let der = |p: &std::path::Path| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_file_iter(p)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let mut bound = claims();
    bound["cnf"] = json!({"x5t#S256": b64.encode(sha2::Sha256::digest(der(&cert)))});
    let token = sign("ec1", Algorithm::ES256, "ec1", &bound);
    let open = |cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let cfg = client_config(
            &pki.ca_pem,
            &ClientOpts {
                client_cert: cert,
                ..Default::default()
            },
        );
        Conn::open(gw.addr, cfg)
    };
    let mut right = open(Some((cert.clone(), key_path.clone()))).await.unwrap();
    assert_eq!(call(&mut right, "/bound/x", Some(&bearer(&token)), None).await.0, 200);
    let mut none = open(None).await.unwrap();
    assert_eq!(
        call(&mut none, "/bound/x", Some(&bearer(&token)), None).await.0,
        401,
        "bound token without a certificate"
    );
    let mut wrong = open(Some((other_cert, other_key))).await.unwrap();
    assert_eq!(
        call(&mut wrong, "/bound/x", Some(&bearer(&token)), None).await.0,
        401,
        "bound token with another certificate"
    );

    // DPoP: a valid proof passes once; a replay, or a proof for another URL, fails.
    let mut jwk = tokens::public_jwk("dpop_ec", Algorithm::ES256, "x");
    jwk.as_object_mut()
        .unwrap()
        .retain(|k, _| ["kty", "crv", "x", "y"].contains(&k.as_str()));
    let thumb: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let mut dc = claims();
    dc["cnf"] = json!({"jkt": thumb.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).unwrap()});
    let access = sign("rsa1", Algorithm::RS256, "rsa1", &dc);
    let ath = b64.encode(sha2::Sha256::digest(access.as_bytes()));
    let proof = |htu: &str| {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
        let c = json!({"jti": unique(), "htm": "GET", "htu": htu, "iat": now(), "ath": ath});
        raw_token(&header, &c, Some((&key("dpop_ec"), Algorithm::ES256)))
    };
    let scheme = format!("DPoP {access}");
    let p = proof("https://localhost/dpop/x");
    let (status, _, body) = call(&mut none, "/dpop/x", Some(&scheme), Some(&p)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) = call(&mut none, "/dpop/x", Some(&scheme), Some(&p)).await;
    assert_eq!(status, 401, "replayed DPoP proof");
    // RFC 9449 §7.1: the challenge (and the body) say which check failed, nothing more.
    assert_eq!(
        headers["www-authenticate"],
        "DPoP realm=\"phr-gateway\", error=\"invalid_dpop_proof\", error_description=\"invalid DPoP proof: proof replayed (jti seen before)\", algs=\"ES256 EdDSA RS256 PS256\""
    );
    assert_eq!(
        json(&body)["error"]["message"],
        "invalid DPoP proof: proof replayed (jti seen before)"
    );
    let elsewhere = proof("https://localhost/dpop/other");
    let (status, headers, _) = call(&mut none, "/dpop/x", Some(&scheme), Some(&elsewhere)).await;
    assert_eq!(status, 401, "proof for another URL");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error_description=\"invalid DPoP proof: htu does not match the request URL\""));
    // The token alone (stolen without the key) is useless.
    assert_eq!(call(&mut none, "/dpop/x", Some(&bearer(&access)), None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_mid_run_causes_no_failure() {
    let pki = Pki::new();
    let jwks = jwks_server(tokens::jwks(&[("rsa1", Algorithm::RS256, "k1")])).await;
    let gw = start(&pki, &jwks, "").await;
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    let before = jwks.fetches.load(Ordering::SeqCst);
    let mut served = 0;
    for i in 0..60 {
        if i == 20 {
            // The IdP publishes a new key and signs with it from now on.
            *jwks.body.lock().unwrap() =
                tokens::jwks(&[("rsa1", Algorithm::RS256, "k1"), ("rsa2", Algorithm::RS256, "k2")]);
        }
        if i == 40 {
            // ...and withdraws the old one.
            *jwks.body.lock().unwrap() = tokens::jwks(&[("rsa2", Algorithm::RS256, "k2")]);
        }
        let t = if i < 20 {
            sign("rsa1", Algorithm::RS256, "k1", &claims())
        } else {
            sign("rsa2", Algorithm::RS256, "k2", &claims())
        };
        let (status, _, body) = call(&mut c, "/fhir/x", Some(&bearer(&t)), None).await;
        assert_eq!(
            status,
            200,
            "request {i} failed during rotation: {}",
            String::from_utf8_lossy(&body)
        );
        served += 1;
    }
    assert_eq!(served, 60);
    assert!(
        jwks.fetches.load(Ordering::SeqCst) > before,
        "the new kid triggered a re-fetch"
    );
    // A token signed with the withdrawn key is still refused once it is gone... after the
    // next fetch; a forged kid does not make the gateway hammer the IdP.
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    for _ in 0..20 {
        let t = sign("rsa1", Algorithm::RS256, &format!("bogus-{}", unique()), &claims());
        assert_eq!(call(&mut c, "/fhir/x", Some(&bearer(&t)), None).await.0, 401);
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) <= fetches + 2,
        "unknown kids must be rate-limited"
    );
}
