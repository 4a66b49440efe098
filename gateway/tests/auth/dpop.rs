//! DPoP-bound tokens (RFC 9449).

use crate::common::*;
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::Algorithm;
use phr_gateway::auth::{AuthError, Binding, DpopError, RoutePolicy};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Client DPoP key as a bare public JWK (no kid/use/alg, as clients send it).
fn client_jwk(name: &str, alg: Algorithm) -> Value {
    let mut v = public_jwk(name, alg, "x");
    let o = v.as_object_mut().unwrap();
    o.remove("kid");
    o.remove("use");
    v
}

/// Thumbprint computed by jsonwebtoken, independent of the code under test.
fn jkt(jwk: &Value) -> String {
    let j: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    j.thumbprint(ThumbprintHash::SHA256).unwrap()
}

fn ath(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn dpop_token(jkt: &str) -> String {
    let mut c = claims();
    c["cnf"] = json!({ "jkt": jkt });
    sign("rsa1", Algorithm::RS256, "rsa1", &c)
}

struct Proof<'a> {
    key: &'a str,
    alg: Algorithm,
    htm: &'a str,
    htu: &'a str,
    iat: i64,
    jti: String,
    ath: String,
    jwk: Value,
    typ: &'a str,
}

impl<'a> Proof<'a> {
    fn new(token: &str) -> Self {
        Proof {
            key: "dpop_ec",
            alg: Algorithm::ES256,
            htm: "GET",
            htu: URL,
            iat: now(),
            jti: unique(),
            ath: ath(token),
            jwk: client_jwk("dpop_ec", Algorithm::ES256),
            typ: "dpop+jwt",
        }
    }
    fn sign(&self) -> String {
        let header = json!({"typ": self.typ, "alg": format!("{:?}", self.alg), "jwk": self.jwk});
        let claims = json!({"jti": self.jti, "htm": self.htm, "htu": self.htu, "iat": self.iat, "ath": self.ath});
        raw_token(&header, &claims, Some((&key(self.key), self.alg)))
    }
}

fn headers(scheme: &str, token: &str, proof: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("{scheme} {token}")).unwrap(),
    );
    if let Some(p) = proof {
        h.insert("dpop", HeaderValue::from_str(p).unwrap());
    }
    h
}

async fn run(e: &Env, h: &HeaderMap, method: &Method, url: &str) -> Result<phr_gateway::auth::Identity, AuthError> {
    let p = RoutePolicy {
        require_dpop: true,
        ..Default::default()
    };
    let mut r = request(h, &p);
    r.method = method;
    r.url = url;
    e.auth.authenticate(&r).await
}

fn dpop_err(r: Result<phr_gateway::auth::Identity, AuthError>) -> DpopError {
    match r {
        Err(AuthError::Dpop(d)) => d,
        other => panic!("expected a DPoP error, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_proof_passes_and_replay_fails() {
    let e = env().await;
    let thumb = jkt(&client_jwk("dpop_ec", Algorithm::ES256));
    assert_eq!(
        phr_gateway::auth::dpop::jwk_thumbprint(client_jwk("dpop_ec", Algorithm::ES256).as_object().unwrap()).unwrap(),
        thumb
    );
    let t = dpop_token(&thumb);
    let proof = Proof::new(&t).sign();
    let h = headers("DPoP", &t, Some(&proof));
    let id = run(&e, &h, &Method::GET, URL).await.unwrap();
    assert_eq!(id.binding, Binding::Dpop);
    // Same proof again: replay.
    let err = run(&e, &h, &Method::GET, URL).await.unwrap_err();
    assert_eq!(err.code(), "dpop_replay");
    assert_eq!(err.status(), 401);
    assert!(e
        .auth
        .challenge(&err)
        .unwrap()
        .starts_with("DPoP realm=\"phr-gateway\", error=\"invalid_dpop_proof\""));
    // A fresh proof for the (now cached) token passes.
    let h2 = headers("DPoP", &t, Some(&Proof::new(&t).sign()));
    assert!(run(&e, &h2, &Method::GET, URL).await.is_ok());
    // htu is compared normalised: query and default port do not matter.
    let h3 = headers("DPoP", &t, Some(&Proof::new(&t).sign()));
    assert!(run(
        &e,
        &h3,
        &Method::GET,
        "https://API.example.jp:443/fhir/Patient/123?_format=json"
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn eddsa_proof_key_works() {
    let e = env().await;
    let jwk = client_jwk("ed1", Algorithm::EdDSA);
    let t = dpop_token(&jkt(&jwk));
    let mut p = Proof::new(&t);
    (p.key, p.alg, p.jwk) = ("ed1", Algorithm::EdDSA, jwk);
    let h = headers("DPoP", &t, Some(&p.sign()));
    assert!(run(&e, &h, &Method::GET, URL).await.is_ok());
}

#[tokio::test]
async fn proof_for_another_request_fails() {
    let e = env().await;
    let t = dpop_token(&jkt(&client_jwk("dpop_ec", Algorithm::ES256)));
    let other_url = Proof {
        htu: "https://api.example.jp/fhir/Patient/999",
        ..Proof::new(&t)
    };
    let h = headers("DPoP", &t, Some(&other_url.sign()));
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::HtuMismatch);

    let h = headers("DPoP", &t, Some(&Proof::new(&t).sign()));
    assert_eq!(
        dpop_err(run(&e, &h, &Method::DELETE, URL).await),
        DpopError::HtmMismatch
    );

    let wrong_ath = Proof {
        ath: ath("some-other-token"),
        ..Proof::new(&t)
    };
    let h = headers("DPoP", &t, Some(&wrong_ath.sign()));
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::AthMismatch);

    let stale = Proof {
        iat: now() - 600,
        ..Proof::new(&t)
    };
    let h = headers("DPoP", &t, Some(&stale.sign()));
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await).code(), "dpop_iat_window");
}

#[tokio::test]
async fn proof_key_must_match_token_binding() {
    let e = env().await;
    let t = dpop_token(&jkt(&client_jwk("dpop_ec", Algorithm::ES256)));
    // The thief signs a proof with their own key.
    let thief = Proof {
        key: "attacker_ec",
        jwk: client_jwk("attacker_ec", Algorithm::ES256),
        ..Proof::new(&t)
    };
    let h = headers("DPoP", &t, Some(&thief.sign()));
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::JktMismatch);
    // Claiming the victim's public key but signing with another: bad signature.
    let forged = Proof {
        key: "attacker_ec",
        ..Proof::new(&t)
    };
    let h = headers("DPoP", &t, Some(&forged.sign()));
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::BadSignature);
}

#[tokio::test]
async fn malformed_proofs_and_downgraded_schemes_are_refused_with_their_reason() {
    let e = env().await;
    let t = dpop_token(&jkt(&client_jwk("dpop_ec", Algorithm::ES256)));
    // DPoP-bound token presented as Bearer (downgrade).
    let h = headers("Bearer", &t, Some(&Proof::new(&t).sign()));
    assert_eq!(
        run(&e, &h, &Method::GET, URL).await.unwrap_err().code(),
        "dpop_bound_as_bearer"
    );
    // No proof.
    let h = headers("DPoP", &t, None);
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::Missing);
    // Wrong typ.
    let h = headers(
        "DPoP",
        &t,
        Some(
            &Proof {
                typ: "JWT",
                ..Proof::new(&t)
            }
            .sign(),
        ),
    );
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::BadTyp);
    // Private key material in the proof's jwk.
    let mut leaky = client_jwk("dpop_ec", Algorithm::ES256);
    leaky["d"] = json!("AAAA");
    let h = headers(
        "DPoP",
        &t,
        Some(
            &Proof {
                jwk: leaky,
                ..Proof::new(&t)
            }
            .sign(),
        ),
    );
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await).code(), "dpop_bad_jwk");
    // Symmetric alg in the proof.
    let hs = raw_token(
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        &json!({"jti": unique(), "htm": "GET", "htu": URL, "iat": now(), "ath": ath(&t)}),
        Some((&jsonwebtoken::EncodingKey::from_secret(b"secret"), Algorithm::HS256)),
    );
    let h = headers("DPoP", &t, Some(&hs));
    assert_eq!(
        dpop_err(run(&e, &h, &Method::GET, URL).await).code(),
        "dpop_alg_not_allowed"
    );
    // Route requires DPoP but the token is a plain bearer token.
    let plain = sign("rsa1", Algorithm::RS256, "rsa1", &claims());
    let h = headers("Bearer", &plain, None);
    assert_eq!(dpop_err(run(&e, &h, &Method::GET, URL).await), DpopError::TokenNotBound);
}

/// RFC 9449 §7.1: each refused proof's challenge names the check that failed, through
/// the real verifier, and never carries the proof's `jti`, the token or key material.
#[tokio::test]
async fn each_refused_proof_says_which_check_failed() {
    let e = env().await;
    let t = dpop_token(&jkt(&client_jwk("dpop_ec", Algorithm::ES256)));
    let challenge = |err: &AuthError| e.auth.challenge(err).unwrap();
    let expect = |header: String, what: &str, jti: &str| {
        assert_eq!(
            header,
            format!(
                "DPoP realm=\"phr-gateway\", error=\"invalid_dpop_proof\", error_description=\"invalid DPoP proof: {what}\", algs=\"ES256 EdDSA RS256 PS256\""
            )
        );
        assert!(!header.contains(jti) && !header.contains(&t[..20]), "{header}");
    };
    let cases: Vec<(Proof, Method, &str)> = vec![
        (
            Proof {
                htu: "https://api.example.jp/fhir/Patient/999",
                ..Proof::new(&t)
            },
            Method::GET,
            "htu does not match the request URL",
        ),
        (Proof::new(&t), Method::DELETE, "htm does not match the request method"),
        (
            Proof {
                ath: ath("some-other-token"),
                ..Proof::new(&t)
            },
            Method::GET,
            "ath does not match the access token",
        ),
        (
            Proof {
                iat: now() - 600,
                ..Proof::new(&t)
            },
            Method::GET,
            "iat outside the allowed window (check the client clock)",
        ),
        (
            Proof {
                key: "attacker_ec",
                jwk: client_jwk("attacker_ec", Algorithm::ES256),
                ..Proof::new(&t)
            },
            Method::GET,
            "proof key does not match the token's cnf.jkt",
        ),
        (
            Proof {
                key: "attacker_ec",
                ..Proof::new(&t)
            },
            Method::GET,
            "proof signature invalid",
        ),
        (
            Proof {
                typ: "jwt",
                ..Proof::new(&t)
            },
            Method::GET,
            "proof typ is not dpop+jwt",
        ),
    ];
    for (proof, method, what) in cases {
        let h = headers("DPoP", &t, Some(&proof.sign()));
        let err = run(&e, &h, &method, URL).await.unwrap_err();
        expect(challenge(&err), what, &proof.jti);
    }
    // Replay: the same proof twice.
    let p = Proof::new(&t);
    let h = headers("DPoP", &t, Some(&p.sign()));
    run(&e, &h, &Method::GET, URL).await.unwrap();
    let err = run(&e, &h, &Method::GET, URL).await.unwrap_err();
    expect(challenge(&err), "proof replayed (jti seen before)", &p.jti);
    // No proof at all.
    let err = run(&e, &headers("DPoP", &t, None), &Method::GET, URL)
        .await
        .unwrap_err();
    expect(
        challenge(&err),
        "no DPoP header; a DPoP-bound token needs a proof with every request",
        "(no proof, so no jti)",
    );
}
