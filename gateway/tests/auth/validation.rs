//! Signature and claim validation with real RSA, EC and Ed25519 tokens.

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use phr_gateway::auth::AuthError;
use serde_json::json;

#[tokio::test]
async fn valid_tokens_pass_for_every_algorithm() {
    let e = env().await;
    for (name, alg) in [
        ("rsa1", Algorithm::RS256),
        ("rsa1", Algorithm::PS256),
        ("ec1", Algorithm::ES256),
        ("ed1", Algorithm::EdDSA),
    ] {
        let t = sign(name, alg, name, &claims());
        let id = e.check(&t).await.unwrap_or_else(|err| panic!("{alg:?}: {err}"));
        assert_eq!(id.subject, "user-1");
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.client_id.as_deref(), Some("phr-app"));
        assert_eq!(id.token_hash.len(), 64);
    }
    assert_eq!(e.auth.stats().signature_verifications, 4);
}

#[tokio::test]
async fn expired_and_not_yet_valid() {
    let e = env().await;
    let mut c = claims();
    c["exp"] = json!(now() - 120); // beyond the 60 s skew
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err.code(), "token_expired");
    assert_eq!(err.status(), 401);
    assert!(err.www_authenticate().unwrap().contains("error=\"invalid_token\""));

    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err.code(), "token_not_yet_valid");

    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err, AuthError::MissingClaim("exp".into()));
}

#[tokio::test]
async fn max_token_age_needs_recent_iat() {
    let mut cfg = config();
    cfg.issuers[0].max_token_age = Some(std::time::Duration::from_secs(300));
    let e = env_with(cfg, MockFetcher::new(default_jwks())).await;
    let mut c = claims();
    c["iat"] = json!(now() - 3600);
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err.code(), "bad_iat");
    c.as_object_mut().unwrap().remove("iat");
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err, AuthError::MissingClaim("iat".into()));
    assert!(e.check(&sign("ec1", Algorithm::ES256, "ec1", &claims())).await.is_ok());
}

#[tokio::test]
async fn cached_token_ages_out_of_max_token_age() {
    let mut cfg = config();
    cfg.issuers[0].max_token_age = Some(std::time::Duration::from_secs(1));
    cfg.issuers[0].clock_skew = std::time::Duration::ZERO;
    let e = env_with(cfg, MockFetcher::new(default_jwks())).await;
    let t = sign("ec1", Algorithm::ES256, "ec1", &claims());
    assert!(e.check(&t).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(e.check(&t).await.unwrap_err().code(), "bad_iat");
    assert_eq!(
        e.auth.stats().cache_hits,
        1,
        "refused on the cache hit, not re-verified"
    );
}

#[tokio::test]
async fn only_the_exact_issuer_and_a_listed_audience_are_accepted() {
    let e = env().await;
    let mut c = claims();
    c["iss"] = json!("https://idp.example.jp/"); // exact match only
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownIssuer);

    let mut c = claims();
    c["aud"] = json!(["https://other.example.jp", "x"]);
    let err = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap_err();
    assert_eq!(err.code(), "bad_audience");

    let mut c = claims();
    c["aud"] = json!(["https://other.example.jp", AUD]);
    assert!(e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.is_ok());
}

#[tokio::test]
async fn alg_none_is_refused() {
    let e = env().await;
    for alg in ["none", "None"] {
        let t = raw_token(&json!({"alg": alg, "typ": "JWT", "kid": "rsa1"}), &claims(), None);
        let err = e.check(&t).await.unwrap_err();
        assert_eq!(err, AuthError::AlgNone, "{alg}");
        assert_eq!(err.code(), "alg_none");
    }
}

#[tokio::test]
async fn hs256_with_rsa_public_key_as_secret_fails() {
    let e = env().await;
    let secret = EncodingKey::from_secret(&pem("rsa1.pub"));
    let t = raw_token(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}),
        &claims(),
        Some((&secret, Algorithm::HS256)),
    );
    let err = e.check(&t).await.unwrap_err();
    assert_eq!(err.code(), "alg_not_allowed");
    // Even if an operator listed HS256, config validation refuses the mix.
    let mut cfg = config();
    cfg.issuers[0].algorithms.push("HS256".into());
    let errs = match phr_gateway::auth::Authenticator::new(
        cfg,
        MockFetcher::new(default_jwks()),
        std::sync::Arc::new(phr_gateway::auth::NoRevocations),
    ) {
        Err(errs) => errs,
        Ok(_) => panic!("HS256 mixed with a JWKS issuer must be a config error"),
    };
    assert!(errs.iter().any(|e| e.key == "auth.issuers[0].algorithms"), "{errs:?}");
}

#[tokio::test]
async fn key_material_in_header_is_refused() {
    let e = env().await;
    let attacker = key("attacker_ec");
    let attacker_jwk = public_jwk("attacker_ec", Algorithm::ES256, "ec1");
    for (member, value) in [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", attacker_jwk.clone()),
        ("x5c", json!(["MIIBattacker"])),
    ] {
        let mut h = json!({"alg": "ES256", "typ": "JWT", "kid": "ec1"});
        h[member] = value;
        let t = raw_token(&h, &claims(), Some((&attacker, Algorithm::ES256)));
        let err = e.check(&t).await.unwrap_err();
        assert_eq!(err.code(), "key_in_header", "{member}");
    }
    // Without the header trick the attacker's signature does not verify under kid ec1.
    let t = sign("attacker_ec", Algorithm::ES256, "ec1", &claims());
    assert_eq!(e.check(&t).await.unwrap_err(), AuthError::BadSignature);
}

#[tokio::test]
async fn crit_header_is_refused() {
    let e = env().await;
    let k = key("ec1");
    let t = raw_token(
        &json!({"alg": "ES256", "kid": "ec1", "crit": ["exp"], "exp": 1}),
        &claims(),
        Some((&k, Algorithm::ES256)),
    );
    assert_eq!(e.check(&t).await.unwrap_err(), AuthError::CritHeader);
}

#[tokio::test]
async fn tampered_payload_fails_signature() {
    let e = env().await;
    for (name, alg) in [
        ("rsa1", Algorithm::RS256),
        ("ec1", Algorithm::ES256),
        ("ed1", Algorithm::EdDSA),
    ] {
        let t = sign(name, alg, name, &claims());
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("admin");
        let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(e.check(&forged).await.unwrap_err(), AuthError::BadSignature, "{alg:?}");
    }
}

#[tokio::test]
async fn key_type_must_match_alg() {
    let e = env().await;
    // RS256 header pointing at the EC key's kid.
    let t = sign("rsa1", Algorithm::RS256, "ec1", &claims());
    assert_eq!(e.check(&t).await.unwrap_err().code(), "key_type_mismatch");
    // ES384 is not in the allow-list at all.
    let t = raw_token(&json!({"alg": "ES384", "kid": "ec1"}), &claims(), None);
    assert_eq!(e.check(&t).await.unwrap_err().code(), "alg_not_allowed");
}

#[tokio::test]
async fn jwk_alg_pins_the_algorithm() {
    let body = serde_json::to_vec(&json!({"keys": [pinned_jwk("rsa1", Algorithm::RS256, "rsa1")]})).unwrap();
    let e = env_with(config(), MockFetcher::new(body.into())).await;
    assert!(e
        .check(&sign("rsa1", Algorithm::RS256, "rsa1", &claims()))
        .await
        .is_ok());
    let err = e
        .check(&sign("rsa1", Algorithm::PS256, "rsa1", &claims()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "key_type_mismatch");
}

#[tokio::test]
async fn oversized_token_is_refused_before_parsing() {
    let e = env().await;
    let mut c = claims();
    c["padding"] = json!("x".repeat(9000));
    let t = sign("ec1", Algorithm::ES256, "ec1", &c);
    let err = e.check(&t).await.unwrap_err();
    assert!(matches!(err, AuthError::TokenTooLarge { limit: 8192, .. }), "{err:?}");
    // Garbage of that size is refused the same way, without a parse error.
    let err = e.check(&"a".repeat(10_000)).await.unwrap_err();
    assert_eq!(err.code(), "token_too_large");
    assert_eq!(e.auth.stats().signature_verifications, 0);
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_is_refused_unless_the_route_allows_none() {
    let e = env().await;
    let policy = phr_gateway::auth::RoutePolicy::default();
    let h = http::HeaderMap::new();
    let err = e.auth.authenticate(&request(&h, &policy)).await.unwrap_err();
    assert_eq!(err, AuthError::MissingToken);
    assert_eq!(e.auth.challenge(&err).unwrap(), "Bearer realm=\"phr-gateway\"");
    // Optional route without a token: anonymous; none route: not even looked at.
    let optional = phr_gateway::auth::RoutePolicy {
        mode: phr_gateway::auth::AuthMode::Optional,
        ..Default::default()
    };
    assert_eq!(e.auth.authenticate_route(&request(&h, &optional)).await, Ok(None));
    let garbage = bearer("not-a-jwt");
    assert!(e.auth.authenticate_route(&request(&garbage, &optional)).await.is_err());
    let none = phr_gateway::auth::RoutePolicy {
        mode: phr_gateway::auth::AuthMode::None,
        ..Default::default()
    };
    assert_eq!(e.auth.authenticate_route(&request(&garbage, &none)).await, Ok(None));

    let mut two = bearer(&sign("ec1", Algorithm::ES256, "ec1", &claims()));
    two.append("authorization", http::HeaderValue::from_static("Bearer x.y.z"));
    let err = e.auth.authenticate(&request(&two, &policy)).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (400, "malformed_authorization"));
}

#[tokio::test]
async fn error_messages_never_echo_the_token() {
    let e = env().await;
    let mut c = claims();
    c["exp"] = json!(now() - 1000);
    let t = sign("rsa1", Algorithm::RS256, "rsa1", &c);
    let err = e.check(&t).await.unwrap_err();
    let sig = t.rsplit('.').next().unwrap();
    for s in [
        err.to_string(),
        err.client_message().to_string(),
        err.www_authenticate().unwrap(),
        format!("{err:?}"),
    ] {
        assert!(!s.contains(sig) && !s.contains(&t[..20]), "{s}");
    }
}

#[tokio::test]
async fn hmac_only_issuer_with_shared_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let mut hs = phr_gateway::auth::IssuerConfig::new("https://legacy.example.jp", "https://unused", &[AUD]);
    hs.jwks_url = None;
    hs.algorithms = vec!["HS256".into()];
    hs.shared_secret = Some(secret.into());
    let mut cfg = config();
    cfg.issuers.push(hs);
    let e = env_with(cfg, MockFetcher::new(default_jwks())).await;
    let mut c = claims();
    c["iss"] = json!("https://legacy.example.jp");
    let good = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert!(e.check(&good).await.is_ok());
    let bad = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    assert_eq!(e.check(&bad).await.unwrap_err(), AuthError::BadSignature);
    // A public-key token claiming that issuer is refused by the allow-list.
    let rs = sign("rsa1", Algorithm::RS256, "rsa1", &c);
    assert_eq!(e.check(&rs).await.unwrap_err().code(), "alg_not_allowed");
}

#[tokio::test]
async fn keys_from_a_jwks_file_need_no_fetch() {
    let dir = std::env::temp_dir().join(format!("auth-jwks-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, default_jwks()).unwrap();
    let mut cfg = config();
    cfg.issuers[0].jwks_url = None;
    cfg.issuers[0].jwks_file = Some(path);
    let e = env_with(cfg, MockFetcher::new(bytes::Bytes::new())).await;
    assert!(e.check(&sign("ec1", Algorithm::ES256, "ec1", &claims())).await.is_ok());
    assert_eq!(e.fetcher.calls(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}
