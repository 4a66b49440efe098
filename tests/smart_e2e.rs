//! End-to-end: what a SMART App Launch client sees on a FHIR base through the real binary
//! (AUTH-ID-1, ACL-ROLE-1, EX-SEG-1): the discovery document and the CapabilityStatement
//! without a token, every refusal as an OperationOutcome, and RFC 6750 challenges that
//! say what would have been accepted.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use phr_test_support::config::{issuer, FHIR_ROUTE};
use phr_test_support::tokens;
use serde_json::{json, Value};

const SMART: &str = r#"
[routes.smart]
issuer = "https://auth.example.jp"
authorization_endpoint = "https://auth.example.jp/authorize"
token_endpoint = "https://auth.example.jp/token"
scopes_supported = ["openid", "launch/patient", "patient/*.rs"]
capabilities = ["launch-standalone", "client-public", "permission-v2", "sso-openid-connect"]
"#;

struct Smart {
    gw: Gateway,
    pki: Pki,
}

/// Routes: `/fhir/` (FHIR, with `[routes.smart]`, `route_extra` added), `/bare/` (FHIR,
/// no SMART document) and `/api/` (plain, no FHIR).
async fn start(route_extra: &str) -> Smart {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let rest = format!(
        "{}\n{}\n{}\n{}",
        issuer(pki.dir.path()),
        route_with(
            "fhir",
            "/fhir/",
            &[fhir],
            "",
            &format!("{route_extra}\n{FHIR_ROUTE}{SMART}")
        ),
        route_with("bare", "/bare/", &[fhir], "", FHIR_ROUTE),
        plain_route("api", "/api/", &[plain], ""),
    );
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    Smart { gw, pki }
}

fn token(scope: &str, patient: Option<&str>) -> String {
    tokens::scoped(scope, patient)
}

impl Smart {
    /// One request on a fresh connection, with the given `Authorization` header values.
    async fn send(&self, method: &str, path: &str, authorization: &[&str]) -> (u16, http::HeaderMap, Bytes) {
        let mut c = Conn::open(self.gw.addr, client(&self.pki)).await.unwrap();
        let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
        for a in authorization {
            req = req.header("authorization", *a);
        }
        c.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap()
    }
}

/// The body as an OperationOutcome: its first issue's code and diagnostics.
fn outcome(headers: &http::HeaderMap, body: &[u8]) -> (String, String) {
    assert_eq!(headers["content-type"], "application/fhir+json");
    let v: Value = json(body);
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issue = &v["issue"][0];
    (
        issue["code"].as_str().unwrap().to_string(),
        issue["diagnostics"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn smart_configuration_is_served_without_a_token() {
    let s = start("").await;
    let (status, headers, body) = s.send("GET", "/fhir/.well-known/smart-configuration", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(
        json(&body),
        json!({
            "issuer": "https://auth.example.jp",
            "authorization_endpoint": "https://auth.example.jp/authorize",
            "token_endpoint": "https://auth.example.jp/token",
            "scopes_supported": ["openid", "launch/patient", "patient/*.rs"],
            "response_types_supported": ["code"],
            "capabilities": ["launch-standalone", "client-public", "permission-v2", "sso-openid-connect"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
        })
    );
    // Only GET; a FHIR base without [routes.smart] has none (not forwarded).
    let (status, headers, body) = s.send("POST", "/fhir/.well-known/smart-configuration", &[]).await;
    assert_eq!(status, 405);
    assert_eq!(outcome(&headers, &body).0, "not-supported");
    let (status, headers, body) = s.send("GET", "/bare/.well-known/smart-configuration", &[]).await;
    assert_eq!(status, 404);
    let (code, diagnostics) = outcome(&headers, &body);
    assert_eq!(code, "not-found");
    assert!(
        diagnostics.contains("publishes no SMART configuration"),
        "{diagnostics}"
    );
    // The CapabilityStatement is public by default; everything else still needs a token.
    let (status, _, body) = s.send("GET", "/fhir/metadata", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["resourceType"], "CapabilityStatement");
    let (status, headers, _) = s.send("GET", "/fhir/Patient/pa", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"phr-gateway\"");
    assert_eq!(
        s.send("GET", "/fhir//metadata", &[]).await.0,
        401,
        "not the metadata path"
    );
}

#[tokio::test]
async fn metadata_needs_a_token_when_the_route_says_so() {
    let s = start("metadata_requires_auth = true").await;
    let (status, headers, body) = s.send("GET", "/fhir/metadata", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"phr-gateway\"");
    assert_eq!(outcome(&headers, &body).0, "security");
    // Any valid token will do: no scope is needed for the CapabilityStatement.
    let t = format!("Bearer {}", token("openid", None));
    let (status, _, body) = s.send("GET", "/fhir/metadata", &[&t]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["resourceType"], "CapabilityStatement");
    // SMART discovery stays public either way.
    assert_eq!(s.send("GET", "/fhir/.well-known/smart-configuration", &[]).await.0, 200);
}

#[tokio::test]
async fn path_refusals_on_a_fhir_route_are_operation_outcomes() {
    let s = start("").await;
    let cases = [
        ("a/../Patient", "dot segments ('.' or '..') are not allowed"),
        ("./Patient", "dot segments ('.' or '..') are not allowed"),
        (
            "Patient%2Fpa",
            "encoded '/', '\\', '.' or NUL in the path is not allowed",
        ),
        (
            "Patient%5cpa",
            "encoded '/', '\\', '.' or NUL in the path is not allowed",
        ),
        (
            "%2E%2E/Patient",
            "encoded '/', '\\', '.' or NUL in the path is not allowed",
        ),
        (
            "Patient/pa%00",
            "encoded '/', '\\', '.' or NUL in the path is not allowed",
        ),
    ];
    for (rest, why) in cases {
        let (status, headers, body) = s.send("GET", &format!("/fhir/{rest}"), &[]).await;
        assert_eq!(status, 400, "{rest}");
        let (code, diagnostics) = outcome(&headers, &body);
        assert_eq!(code, "invalid", "{rest}");
        assert!(
            diagnostics.starts_with(&format!("the request path is not acceptable: {why} (request id: ")),
            "{rest}: {diagnostics}"
        );
        // Elsewhere the same refusal is the gateway's JSON error.
        let (status, headers, body) = s.send("GET", &format!("/api/{rest}"), &[]).await;
        assert_eq!(status, 400, "{rest}");
        assert_eq!(headers["content-type"], "application/json");
        let e = json(&body);
        assert_eq!(e["error"]["code"], "bad_path", "{rest}");
        assert_eq!(
            e["error"]["message"],
            format!("the request path is not acceptable: {why}")
        );
    }
}

#[tokio::test]
async fn refusals_carry_rfc6750_challenges_naming_the_tokens_scope_family() {
    let s = start("").await;
    // A search of Observation with tokens that have no Observation scope: the hint is
    // in the family of the token's own scopes.
    for (scopes, patient, hint) in [
        ("openid fhirUser user/Patient.rs", None, "user/Observation.s"),
        ("system/Patient.rs", None, "system/Observation.s"),
        (
            "openid launch/patient patient/Patient.rs",
            Some("pa"),
            "patient/Observation.s",
        ),
    ] {
        let t = format!("Bearer {}", token(scopes, patient));
        let (status, headers, body) = s.send("GET", "/fhir/Observation", &[&t]).await;
        assert_eq!(status, 403, "{scopes}: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            headers["www-authenticate"],
            format!(
                "Bearer realm=\"phr-gateway\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"{hint}\""
            )
            .as_str(),
            "{scopes}"
        );
        let (code, diagnostics) = outcome(&headers, &body);
        assert_eq!(code, "forbidden");
        assert!(
            diagnostics.contains(&format!("request a scope such as {hint}")),
            "{diagnostics}"
        );
    }
    // A malformed Authorization header is a 400 invalid_request (RFC 6750 §3.1), with the
    // same description in the OperationOutcome.
    let t = format!("Bearer {}", token("user/*.rs", None));
    for (headers_sent, why) in [
        (vec!["Bearer"], "expected `Bearer <token>`"),
        (vec!["Bearer a b"], "expected `Bearer <token>`"),
        (vec![t.as_str(), t.as_str()], "more than one Authorization header"),
    ] {
        let (status, headers, body) = s.send("GET", "/fhir/Patient/pa", &headers_sent).await;
        assert_eq!(status, 400, "{headers_sent:?}");
        let description = format!("malformed Authorization header: {why}");
        assert_eq!(
            headers["www-authenticate"],
            format!("Bearer realm=\"phr-gateway\", error=\"invalid_request\", error_description=\"{description}\"")
                .as_str()
        );
        let (code, diagnostics) = outcome(&headers, &body);
        assert_eq!(code, "invalid");
        assert!(diagnostics.starts_with(&description), "{diagnostics}");
    }
    // Another scheme is no credentials at all: 401 with a bare challenge (RFC 6750 §3).
    let (status, headers, _) = s.send("GET", "/fhir/Patient/pa", &["Basic dXNlcjpwdw=="]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"phr-gateway\"");
}
