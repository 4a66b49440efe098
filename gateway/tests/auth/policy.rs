//! Per-request checks: revocation, two-factor, certificate binding, scopes,
//! and the verified-token cache.

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use phr_gateway::auth::{AuthError, Binding, FactorCategory, RoutePolicy};
use serde_json::json;

fn es(c: &serde_json::Value) -> String {
    sign("ec1", Algorithm::ES256, "ec1", c)
}

#[tokio::test]
async fn revoked_jti_and_revoked_subject() {
    let e = env().await;
    let c = claims();
    let t = es(&c);
    assert!(e.check(&t).await.is_ok());
    e.revocations.revoke_jti(ISS, c["jti"].as_str().unwrap());
    let err = e.check(&t).await.unwrap_err();
    assert_eq!((err.code(), err.status()), ("revoked", 401));

    let mut c2 = claims();
    c2["sub"] = json!("leaver");
    let t2 = es(&c2);
    let mut no_iat = claims();
    no_iat["sub"] = json!("leaver");
    no_iat.as_object_mut().unwrap().remove("iat");
    let t3 = es(&no_iat);
    assert!(e.check(&t2).await.is_ok());
    assert!(e.check(&t3).await.is_ok());
    e.revocations.revoke_subject(ISS, "leaver", now() as u64);
    assert_eq!(e.check(&t2).await.unwrap_err(), AuthError::Revoked);
    assert_eq!(
        e.check(&t3).await.unwrap_err(),
        AuthError::Revoked,
        "no iat: cannot prove it is newer"
    );
    let mut fresh = claims();
    fresh["sub"] = json!("leaver");
    fresh["iat"] = json!(now() + 5);
    assert!(
        e.check(&es(&fresh)).await.is_ok(),
        "tokens issued after re-enabling work"
    );
}

#[tokio::test]
async fn cache_hit_skips_signature_but_sees_later_revocation() {
    let e = env().await;
    let c = claims();
    let t = sign("rsa1", Algorithm::PS256, "rsa1", &c);
    for _ in 0..5 {
        e.check(&t).await.unwrap();
    }
    let s = e.auth.stats();
    assert_eq!((s.signature_verifications, s.cache_hits), (1, 4));
    e.revocations.revoke_subject(ISS, "user-1", now() as u64 + 1);
    assert_eq!(e.check(&t).await.unwrap_err(), AuthError::Revoked);
    assert_eq!(
        e.auth.stats().signature_verifications,
        1,
        "revocation seen on a cache hit"
    );
}

fn two_factor_route() -> RoutePolicy {
    RoutePolicy {
        two_factor: true,
        ..Default::default()
    }
}

async fn with_amr(
    e: &Env,
    amr: serde_json::Value,
    acr: Option<&str>,
    p: &RoutePolicy,
) -> Result<phr_gateway::auth::Identity, AuthError> {
    let mut c = claims();
    c["amr"] = amr;
    if let Some(a) = acr {
        c["acr"] = json!(a);
    }
    e.check_policy(&es(&c), p).await
}

#[tokio::test]
async fn two_factor_requires_two_categories() {
    let e = env().await;
    let p = two_factor_route();
    let err = with_amr(&e, json!(["pwd"]), None, &p).await.unwrap_err();
    assert_eq!(err.code(), "insufficient_user_authentication");
    assert_eq!(err.status(), 401);
    assert!(e
        .auth
        .challenge(&err)
        .unwrap()
        .starts_with("Bearer realm=\"phr-gateway\", error=\"insufficient_user_authentication\", error_description="));
    // Two steps of the same category are not two factors (AUTH-2FA-2).
    assert!(with_amr(&e, json!(["otp", "sms"]), None, &p).await.is_err());
    assert!(with_amr(&e, json!(["otp", "otp"]), None, &p).await.is_err());
    assert!(
        with_amr(&e, json!(["mfa"]), None, &p).await.is_err(),
        "mfa untrusted by default"
    );
    let id = with_amr(&e, json!(["pwd", "otp"]), None, &p).await.unwrap();
    assert_eq!(
        id.factors.into_iter().collect::<Vec<_>>(),
        [FactorCategory::Knowledge, FactorCategory::Possession]
    );
    assert!(with_amr(&e, json!(["face", "hwk"]), None, &p).await.is_ok());
    // No amr at all on a plain route is fine.
    assert!(e.check(&es(&claims())).await.is_ok());
}

#[tokio::test]
async fn a_route_listing_acr_values_refuses_another_acr_and_names_them() {
    let e = env().await;
    let p = RoutePolicy {
        acr_values: vec!["urn:example:aal2".into()],
        ..Default::default()
    };
    let err = with_amr(&e, json!(["pwd", "otp"]), Some("urn:example:aal1"), &p)
        .await
        .unwrap_err();
    assert!(e
        .auth
        .challenge(&err)
        .unwrap()
        .contains("acr_values=\"urn:example:aal2\""));
    assert!(with_amr(&e, json!(["pwd"]), Some("urn:example:aal2"), &p).await.is_ok());
    // two_factor + acr_values: either satisfies.
    let both = RoutePolicy { two_factor: true, ..p };
    assert!(with_amr(&e, json!(["pwd"]), Some("urn:example:aal2"), &both)
        .await
        .is_ok());
    assert!(with_amr(&e, json!(["pwd", "fpt"]), None, &both).await.is_ok());
    assert!(with_amr(&e, json!(["pwd"]), None, &both).await.is_err());
}

#[tokio::test]
async fn max_auth_age_forces_fresh_login() {
    let e = env().await;
    let p = RoutePolicy {
        max_auth_age: Some(std::time::Duration::from_secs(900)),
        ..Default::default()
    };
    let mut c = claims();
    c["auth_time"] = json!(now() - 3600);
    let err = e.check_policy(&es(&c), &p).await.unwrap_err();
    assert!(err.www_authenticate().unwrap().contains("max_age=900"));
    c["auth_time"] = json!(now() - 60);
    assert!(e.check_policy(&es(&c), &p).await.is_ok());
}

fn cert_bound_claims(cert_hash: [u8; 32]) -> serde_json::Value {
    let mut c = claims();
    c["cnf"] = json!({ "x5t#S256": URL_SAFE_NO_PAD.encode(cert_hash) });
    c
}

#[tokio::test]
async fn a_certificate_bound_token_needs_the_matching_client_certificate() {
    let e = env().await;
    let cert = [0x42u8; 32];
    let t = es(&cert_bound_claims(cert));
    let h = bearer(&t);
    let p = RoutePolicy::default();
    let mut r = request(&h, &p);
    // Bound token without a client certificate: refused even on a route that does not ask.
    let err = e.auth.authenticate(&r).await.unwrap_err();
    assert_eq!((err.code(), err.status()), ("cert_missing", 401));
    assert!(err.www_authenticate().unwrap().contains("error=\"invalid_token\""));
    r.client_cert_sha256 = Some([0x43; 32]);
    assert_eq!(
        e.auth.authenticate(&r).await.unwrap_err(),
        AuthError::CertBindingMismatch
    );
    r.client_cert_sha256 = Some(cert);
    let id = e.auth.authenticate(&r).await.unwrap();
    assert_eq!(id.binding, Binding::Certificate);

    // A route requiring binding refuses plain bearer tokens.
    let strict = RoutePolicy {
        require_cert_bound: true,
        ..Default::default()
    };
    let plain = bearer(&es(&claims()));
    let mut r = request(&plain, &strict);
    r.client_cert_sha256 = Some(cert);
    assert_eq!(
        e.auth.authenticate(&r).await.unwrap_err(),
        AuthError::CertBindingRequired
    );
}

#[tokio::test]
async fn scopes_normalised_and_required() {
    let e = env().await;
    let mut c = claims();
    c["scope"] = json!("openid  patient/Observation.rs");
    c["scp"] = json!(["patient/Patient.r", "openid"]);
    let t = es(&c);
    let id = e.check(&t).await.unwrap();
    assert_eq!(
        id.scopes.iter().collect::<Vec<_>>(),
        ["openid", "patient/Observation.rs", "patient/Patient.r"]
    );
    let mut c2 = claims();
    c2.as_object_mut().unwrap().remove("scope");
    c2["scp"] = json!("a b");
    assert_eq!(e.check(&es(&c2)).await.unwrap().scopes.len(), 2);

    let p = RoutePolicy {
        required_scopes: vec!["patient/Patient.r".into(), "system/*.cruds".into()],
        ..Default::default()
    };
    let err = e.check_policy(&t, &p).await.unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(err, AuthError::InsufficientScope(vec!["system/*.cruds".into()]));
    assert!(err.www_authenticate().unwrap().contains("scope=\"system/*.cruds\""));
}

#[tokio::test]
async fn identity_carries_smart_context_and_headers() {
    let e = env().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("client_id");
    c["azp"] = json!("smart-app");
    c["patient"] = json!("Patient/123");
    c["fhirUser"] = json!("Practitioner/9");
    c["amr"] = json!(["pwd", "otp"]);
    c["acr"] = json!("urn:example:aal2");
    c["auth_time"] = json!(now() - 10);
    let id = e.check(&es(&c)).await.unwrap();
    assert_eq!(id.client_id.as_deref(), Some("smart-app"));
    assert_eq!(id.patient.as_deref(), Some("Patient/123"));
    assert_eq!(id.fhir_user.as_deref(), Some("Practitioner/9"));
    assert_eq!(id.binding, Binding::Bearer);
    let names = phr_gateway::auth::HeaderNames::default();
    let hs = phr_gateway::auth::identity_headers(&id, &names);
    let get = |n: &http::HeaderName| {
        hs.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    };
    assert_eq!(get(&names.subject).as_deref(), Some("user-1"));
    assert_eq!(get(&names.patient).as_deref(), Some("Patient/123"));
    assert_eq!(get(&names.amr).as_deref(), Some("pwd otp"));
    assert_eq!(get(&names.token_hash), Some(id.token_hash.clone()));
}
