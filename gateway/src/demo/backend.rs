//! The demo's sample FHIR backend: a few synthetic patients and their observations,
//! served over plain HTTP on loopback (the gateway in front provides TLS). Writes
//! (`POST` of a resource, a transaction `Bundle` to the base) are acknowledged as a FHIR
//! server would (201 / 200 transaction-response) but not stored, so load tests
//! (`phr-loadtest`) can exercise the write path.
//! Synthetic data only: no real person is described here.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

const PATIENTS: [(&str, &str, &str, &str); 3] = [
    ("p1", "山田", "花子", "1985-04-12"),
    ("p2", "佐藤", "太郎", "1972-11-03"),
    ("p3", "鈴木", "一郎", "1990-07-21"),
];

/// Starts the backend on a free loopback port and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    // Read the body: a write is answered with it (not kept).
                    let body = http_body_util::BodyExt::collect(body)
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(handle(&parts.method, &parts.uri, &body))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn patient(id: &str, family: &str, given: &str, birth: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": [given]}], "birthDate": birth})
}

fn observation(patient_id: &str, n: usize) -> Value {
    json!({
        "resourceType": "Observation", "id": format!("{patient_id}-bp{n}"), "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": 110 + n * 7, "unit": "mmHg"}
    })
}

/// Acknowledges a write without storing it: 201 with the resource (given an id), as a
/// FHIR server returns it, or 200 with a transaction-response for a `Bundle` posted to
/// the base.
fn created(path: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let posted = serde_json::from_slice::<Value>(body).ok().filter(Value::is_object);
    let (status, body) = match (path, posted) {
        ("", Some(_)) => (
            StatusCode::OK,
            json!({"resourceType": "Bundle", "type": "transaction-response",
                   "entry": [{"response": {"status": "201 Created"}}]}),
        ),
        (kind, Some(mut resource)) if !kind.is_empty() && !kind.contains('/') && resource["resourceType"] == kind => {
            resource["id"] = json!("demo-created");
            (StatusCode::CREATED, resource)
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported",
                   "diagnostics": "the demo backend acknowledges a JSON resource POSTed to its type, or a Bundle to the base"}]}),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/fhir+json"),
    );
    resp
}

fn bundle(entries: Vec<Value>) -> Value {
    let total = entries.len();
    json!({"resourceType": "Bundle", "type": "searchset", "total": total,
           "entry": entries.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
}

fn handle(method: &http::Method, uri: &http::Uri, body: &[u8]) -> Response<Full<Bytes>> {
    // The first segment is the FHIR base: the demo's routes (`/fhir/`, `/fhir-dpop/`,
    // `/fhir-2fa/`) forward to this one backend without stripping their prefix.
    let path = uri
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, rest)| rest);
    let query = uri.query().unwrap_or("");
    if method == http::Method::POST {
        return created(path, body);
    }
    let patient_param = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("patient=").or_else(|| kv.strip_prefix("subject=")))
        .map(|p| p.trim_start_matches("Patient/"));
    let found = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["metadata"] => Some(
            json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"]}),
        ),
        ["Patient", id] => PATIENTS
            .iter()
            .find(|p| p.0 == *id)
            .map(|p| patient(p.0, p.1, p.2, p.3)),
        ["Patient"] => Some(bundle(
            PATIENTS
                .iter()
                .filter(|p| patient_param.is_none_or(|q| q == p.0))
                .map(|p| patient(p.0, p.1, p.2, p.3))
                .collect(),
        )),
        ["Observation"] => Some(bundle(
            PATIENTS
                .iter()
                .filter(|p| patient_param.is_none_or(|q| q == p.0))
                .flat_map(|p| (1..=2).map(|n| observation(p.0, n)))
                .collect(),
        )),
        ["Observation", id] => id
            .rsplit_once("-bp")
            .and_then(|(p, n)| Some(observation(p, n.parse().ok()?))),
        _ => None,
    };
    let (status, body) = match found {
        Some(v) => (StatusCode::OK, v),
        None => (
            StatusCode::NOT_FOUND,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/fhir+json"),
    );
    resp
}
