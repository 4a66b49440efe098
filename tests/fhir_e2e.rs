//! End-to-end: FHIR routes through the real binary (ACL-PHR-1, ACL-ROLE-1, EX-SEG-1).
//! Patient A's token reaches A's data and nothing of B's, whatever the URL, query or
//! body says; practitioner and system tokens get what their scopes say.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use phr_test_support::config::issuer;
use phr_test_support::tokens;
use serde_json::{json, Value};

struct Fhir {
    gw: Gateway,
    pki: Pki,
}

async fn start() -> Fhir {
    let pki = Pki::new();
    let backend = fhir_backend::start().await;
    let rest = format!("{}\n{}", issuer(pki.dir.path()), fhir_route(backend));
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    Fhir { gw, pki }
}

fn token(scope: &str, patient: Option<&str>) -> String {
    tokens::scoped(scope, patient)
}

impl Fhir {
    async fn send(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, http::HeaderMap, Value) {
        fhir_request(self.gw.addr, &self.pki.ca_pem, "localhost", token, method, path, body).await
    }
}

/// The patient ids in a Bundle's entries (or of a single resource).
fn owners(v: &Value) -> Vec<String> {
    let one = |r: &Value| -> Option<String> {
        if r["resourceType"] == "Patient" {
            return r["id"].as_str().map(str::to_string);
        }
        ["subject", "patient"]
            .iter()
            .find_map(|f| r[f]["reference"].as_str())
            .map(|s| s.trim_start_matches("Patient/").to_string())
    };
    match v["entry"].as_array() {
        Some(entries) => entries.iter().filter_map(|e| one(&e["resource"])).collect(),
        None => one(v).into_iter().collect(),
    }
}

fn assert_outcome(status: u16, v: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {v}");
    assert_eq!(v["resourceType"], "OperationOutcome", "{what}: {v}");
    assert!(v.to_string().contains("request id"), "{what}: no request id in {v}");
}

#[tokio::test]
async fn a_patient_reaches_only_their_own_data() {
    let f = start().await;
    let a = token("launch/patient openid patient/*.cruds", Some("pa"));
    let a = Some(a.as_str());

    // Own data: read, search (confined by the gateway), write.
    assert_eq!(f.send(a, "GET", "/fhir/Patient/pa", None).await.0, 200);
    for (t, _) in fhir_backend::TYPES {
        let id = format!(
            "{}-pa",
            t.chars()
                .filter(|c| c.is_ascii_uppercase())
                .collect::<String>()
                .to_lowercase()
        );
        let (status, _, v) = f.send(a, "GET", &format!("/fhir/{t}/{id}"), None).await;
        assert_eq!(status, 200, "{t}/{id}: {v}");
        let (status, _, v) = f.send(a, "GET", &format!("/fhir/{t}"), None).await;
        assert_eq!(status, 200, "{t} search: {v}");
        assert_eq!(owners(&v), vec!["pa".to_string()], "{t} search not confined: {v}");
    }
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "subject": {"reference": "Patient/pa"}});
    let (status, headers, _) = f.send(a, "POST", "/fhir/Observation", Some(obs.clone())).await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://localhost/fhir/Observation/new-1"),
        "Location not rewritten to the gateway: {location}"
    );
    // A delete of one's own resource: the backend's 204 has no body, and the response
    // check lets an empty body through (it has nothing to release).
    let (status, _, v) = f.send(a, "DELETE", "/fhir/Observation/o-pa", None).await;
    assert_eq!(status, 204, "own delete: {v}");
    let (status, _, v) = f.send(a, "GET", "/fhir/Patient/pa/$everything", None).await;
    assert_eq!(status, 200, "{v}");
    assert!(owners(&v).iter().all(|p| p == "pa") && !owners(&v).is_empty(), "{v}");

    // Every road to B's data is closed, with an OperationOutcome.
    // Reads by id answer as for a resource that does not exist (see
    // `a_patient_token_cannot_tell_foreign_from_missing`).
    for path in [
        "/fhir/Patient/pb",
        "/fhir/Observation/o-pb",
        "/fhir/Condition/c-pb",
        "/fhir/AllergyIntolerance/ai-pb",
    ] {
        let (status, _, v) = f.send(a, "GET", path, None).await;
        assert_outcome(status, &v, 404, &format!("GET {path}"));
    }
    let refused: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/fhir/Observation?patient=pb", None),
        ("GET", "/fhir/Observation?subject=Patient/pb", None),
        ("GET", "/fhir/Observation?subject:Patient=pb", None),
        ("GET", "/fhir/Patient/pb/Observation", None),
        ("GET", "/fhir/Observation?subject.name=Family-pb", None),
        ("GET", "/fhir/Patient?_has:Observation:subject:status=final", None),
        ("GET", "/fhir/Patient/pb/$everything", None),
        ("GET", "/fhir/Encounter?_include=*", None),
        ("DELETE", "/fhir/Observation/o-pb", None),
        (
            "POST",
            "/fhir/Observation",
            Some(
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/pb"}}),
            ),
        ),
        (
            "PUT",
            "/fhir/Observation/o-pb",
            Some(
                json!({"resourceType": "Observation", "id": "o-pb", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/pa"}}),
            ),
        ),
        (
            "POST",
            "/fhir/",
            Some(json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/pb"}},
             "request": {"method": "POST", "url": "Observation"}}]})),
        ),
    ];
    for (method, path, body) in refused {
        let (status, _, v) = f.send(a, method, path, body).await;
        assert_outcome(status, &v, 403, &format!("{method} {path}"));
    }
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pa"}},
        {"request": {"method": "GET", "url": "Patient/pb"}}]});
    let (status, _, v) = f.send(a, "POST", "/fhir/", Some(batch)).await;
    assert_outcome(status, &v, 404, "batch reading Patient/pb");

    // A backend that leaks (ignores the patient parameter) is filtered on the way back.
    let (status, _, v) = f.send(a, "GET", "/fhir/Observation?code=leak", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(owners(&v), vec!["pa".to_string()], "{v}");
    assert_eq!(v["total"], 1);

    // Payload and auth errors are OperationOutcomes too.
    let (status, headers, v) = f.send(None, "GET", "/fhir/Patient/pa", None).await;
    assert_outcome(status, &v, 401, "no token");
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, v) = f.send(a, "GET", "/fhir/Patient/pa?_format=xml", None).await;
    assert_outcome(status, &v, 415, "xml");
    let (status, _, v) = f.send(a, "GET", "/fhir/patient/pa", None).await;
    assert_outcome(status, &v, 400, "wrong case");
    // The CapabilityStatement is public (metadata_requires_auth = false by default;
    // both settings are tested in smart_e2e.rs).
    assert_eq!(f.send(None, "GET", "/fhir/metadata", None).await.0, 200);
    assert_eq!(f.send(a, "GET", "/fhir/metadata", None).await.0, 200);
}

#[tokio::test]
async fn practitioner_and_system_tokens_follow_their_scopes() {
    let f = start().await;
    let user = token("openid fhirUser user/*.rs", None);
    let user = Some(user.as_str());
    assert_eq!(f.send(user, "GET", "/fhir/Patient/pb", None).await.0, 200);
    let (status, _, v) = f.send(user, "GET", "/fhir/Observation", None).await;
    assert_eq!(status, 200);
    let mut seen = owners(&v);
    seen.sort();
    assert_eq!(seen, vec!["pa", "pb"], "user/ scopes are not confined to one patient");
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "subject": {"reference": "Patient/pb"}});
    let (status, _, v) = f.send(user, "POST", "/fhir/Observation", Some(obs)).await;
    assert_outcome(status, &v, 403, "user/*.rs cannot create");

    let system = token("system/Observation.rs", None);
    let system = Some(system.as_str());
    assert_eq!(f.send(system, "GET", "/fhir/Observation/o-pb", None).await.0, 200);
    let (status, _, v) = f.send(system, "GET", "/fhir/Condition/c-pa", None).await;
    assert_outcome(status, &v, 403, "system/Observation.rs cannot read Condition");

    let granular = token("patient/Observation.rs?code=leak", Some("pa"));
    let (status, _, v) = f
        .send(Some(&granular), "GET", "/fhir/Observation?code=leak", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(owners(&v), vec!["pa".to_string()]);
    let (status, _, v) = f.send(Some(&granular), "GET", "/fhir/Observation", None).await;
    assert_outcome(status, &v, 403, "granular scope without its parameter");
}

/// ACL-PHR-1: with patient A's token, a resource of patient B is answered exactly like
/// one that does not exist — same status, same headers, same body but for the id the
/// client sent and the request id — for read, vread, `_history` and HEAD of each.
#[tokio::test]
async fn a_patient_token_cannot_tell_foreign_from_missing() {
    let f = start().await;
    let a = token("launch/patient openid patient/*.rs", Some("pa"));
    let pairs = [
        ("Observation/o-pb", "Observation/none"),
        ("Observation/o-pb/_history/1", "Observation/none/_history/1"),
        ("Observation/o-pb/_history", "Observation/none/_history"),
        ("Condition/c-pb", "Condition/none"),
        ("Patient/pb", "Patient/none"),
        ("Patient/pb/_history/1", "Patient/none/_history/1"),
    ];
    for method in ["GET", "HEAD"] {
        for (foreign, missing) in pairs {
            let seen_foreign = f.raw(&a, method, &format!("/fhir/{foreign}")).await;
            let seen_missing = f.raw(&a, method, &format!("/fhir/{missing}")).await;
            assert_eq!(seen_foreign.0, 404, "{method} {foreign}");
            let foreign_shape = shape(seen_foreign, foreign);
            let missing_shape = shape(seen_missing, missing);
            assert_eq!(foreign_shape, missing_shape, "{method} {foreign} and {missing} differ");
        }
    }
    // HEAD of one's own resource: authorised as GET, answered with its headers only.
    let (status, headers, body) = f.raw(&a, "HEAD", "/fhir/Observation/o-pa").await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], "W/\"1\"");
    assert!(headers.contains_key("last-modified"));
    let (_, _, get_body) = f.raw(&a, "GET", "/fhir/Observation/o-pa").await;
    assert_eq!(headers["content-length"], get_body.len().to_string().as_str());
}

/// What a response shows a client, with the two things that must differ (the id the
/// client sent, the request id) taken out.
fn shape(seen: (u16, http::HeaderMap, Bytes), path: &str) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = seen;
    let request_id = headers["x-request-id"].to_str().unwrap().to_string();
    let headers = headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "x-request-id" | "date"))
        .map(|(k, v)| {
            let v = match k.as_str() {
                "content-length" => "(length)".to_string(),
                _ => v.to_str().unwrap().to_string(),
            };
            (k.to_string(), v)
        })
        .collect();
    let body = String::from_utf8_lossy(&body)
        .replace(path, "(path)")
        .replace(&request_id, "(request id)");
    (status, headers, body)
}

impl Fhir {
    /// One request; the status, headers and raw body bytes.
    async fn raw(&self, token: &str, method: &str, path: &str) -> (u16, http::HeaderMap, Bytes) {
        let mut c = Conn::open(self.gw.addr, client_config(&self.pki.ca_pem, &ClientOpts::default()))
            .await
            .unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        c.request(req).await.unwrap()
    }
}
