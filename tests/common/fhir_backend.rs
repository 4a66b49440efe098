//! A small FHIR R4 backend for the end-to-end tests: two patients ("pa", "pb"), each with
//! one resource of every type below. It does NOT confine anything itself, so any leak
//! through the gateway shows up in a test. `code=leak` on a search returns every
//! patient's resources whatever the other parameters say (a misbehaving backend).
//!
//! [`start_behind_proxy`] starts one that behaves like many real servers behind a
//! reverse proxy: it builds its URLs from `X-Forwarded-Proto`/`-Host` and ignores
//! `X-Forwarded-Prefix`, keeps what a POST creates (readable by id afterwards), and
//! records the request headers it received.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What a backend from [`start_behind_proxy`] received and created.
#[derive(Clone, Default)]
pub struct Recorder {
    /// The headers of every request, in arrival order.
    pub requests: Arc<Mutex<Vec<http::HeaderMap>>>,
    /// Resources created by POST, in order; ids `new-1`, `new-2`, ...
    pub created: Arc<Mutex<Vec<Value>>>,
}

pub const TYPES: [(&str, &str); 6] = [
    ("Observation", "subject"),
    ("Condition", "subject"),
    ("MedicationRequest", "subject"),
    ("Encounter", "subject"),
    ("DocumentReference", "subject"),
    ("AllergyIntolerance", "patient"),
];

fn short(t: &str) -> String {
    t.chars()
        .filter(|c| c.is_ascii_uppercase())
        .collect::<String>()
        .to_lowercase()
}

/// Every resource of the store.
pub fn resources() -> Vec<Value> {
    let mut all = Vec::new();
    for p in ["pa", "pb"] {
        all.push(json!({"resourceType": "Patient", "id": p, "name": [{"family": format!("Family-{p}")}]}));
        for (t, field) in TYPES {
            let mut r = json!({"resourceType": t, "id": format!("{}-{p}", short(t))});
            r[field] = json!({"reference": format!("Patient/{p}")});
            if t == "Observation" {
                r["status"] = json!("final");
                r["code"] = json!({"text": "bp"});
            }
            all.push(r);
        }
    }
    all
}

fn owner(r: &Value) -> Option<String> {
    if r["resourceType"] == "Patient" {
        return r["id"].as_str().map(str::to_string);
    }
    for f in ["subject", "patient"] {
        if let Some(s) = r[f]["reference"].as_str() {
            return s.strip_prefix("Patient/").map(str::to_string);
        }
    }
    None
}

pub async fn start() -> SocketAddr {
    serve(None).await
}

/// A backend that builds URLs from `X-Forwarded-Proto`/`-Host` (without any prefix),
/// stores what is created, and records what it received.
pub async fn start_behind_proxy() -> (SocketAddr, Recorder) {
    let rec = Recorder::default();
    (serve(Some(rec.clone())).await, rec)
}

async fn serve(rec: Option<Recorder>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let rec = rec.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(addr, rec, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn bundle(kind: &str, entries: Vec<Value>, base: &str) -> Value {
    let n = entries.len();
    json!({"resourceType": "Bundle", "type": kind, "total": n,
           "link": [{"relation": "self", "url": format!("{base}/Observation")}],
           "entry": entries.into_iter().map(|r| json!({"fullUrl": format!("{base}/{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()), "resource": r})).collect::<Vec<_>>()})
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/fhir+json".parse().unwrap());
    resp
}

fn not_found() -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_FOUND,
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}),
    )
}

fn versioned(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = resp.headers_mut();
    h.insert("etag", "W/\"1\"".parse().unwrap());
    h.insert("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT".parse().unwrap());
    resp
}

/// `proto://host` from the forwarding headers, as a server behind a proxy builds it.
fn forwarded_origin(h: &http::HeaderMap) -> String {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    format!("{}://{}", get("x-forwarded-proto"), get("x-forwarded-host"))
}

async fn handle(addr: SocketAddr, rec: Option<Recorder>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let under_fhir = req.uri().path().starts_with("/fhir");
    let base = match &rec {
        Some(rec) => {
            rec.requests.lock().unwrap().push(req.headers().clone());
            let origin = forwarded_origin(req.headers());
            if under_fhir {
                format!("{origin}/fhir")
            } else {
                origin
            }
        }
        None => format!("http://{addr}/fhir"),
    };
    // HEAD is GET without the body (hyper leaves the body out on the wire).
    let method = match req.method() {
        &http::Method::HEAD => http::Method::GET,
        m => m.clone(),
    };
    let path = req
        .uri()
        .path()
        .trim_start_matches("/fhir")
        .trim_matches('/')
        .to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%2F", "/"))
        })
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut all = resources();
    if let Some(rec) = &rec {
        all.extend(rec.created.lock().unwrap().iter().cloned());
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["metadata"]) => reply(
            StatusCode::OK,
            json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1"}),
        ),
        ("GET", ["Patient", id, "$everything"]) => {
            let mine: Vec<Value> = all.into_iter().filter(|r| owner(r).as_deref() == Some(*id)).collect();
            reply(StatusCode::OK, bundle("searchset", mine, &base))
        }
        // Read, vread (version 1 exists) and the history of one resource, with the
        // version headers a FHIR server sends (what a HEAD would leak).
        ("GET", [t, id]) | ("GET", [t, id, "_history", "1"]) => {
            match all.into_iter().find(|r| r["resourceType"] == *t && r["id"] == *id) {
                Some(r) => versioned(reply(StatusCode::OK, r)),
                None => not_found(),
            }
        }
        ("GET", [t, id, "_history"]) => match all.into_iter().find(|r| r["resourceType"] == *t && r["id"] == *id) {
            Some(r) => reply(StatusCode::OK, bundle("history", vec![r], &base)),
            None => not_found(),
        },
        ("GET", [_, _, "_history", _]) => not_found(),
        ("GET", [t]) => {
            let leak = params.iter().any(|(k, v)| k == "code" && v == "leak");
            let who: Option<String> = params
                .iter()
                .find(|(k, _)| ["patient", "subject", "_id"].contains(&k.as_str()))
                .map(|(_, v)| v.trim_start_matches("Patient/").to_string());
            let found: Vec<Value> = all
                .into_iter()
                .filter(|r| r["resourceType"] == *t)
                .filter(|r| leak || who.as_ref().is_none_or(|w| owner(r).as_deref() == Some(w.as_str())))
                .collect();
            reply(StatusCode::OK, bundle("searchset", found, &base))
        }
        ("POST", [t]) => {
            let mut r: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            r["id"] = json!("new-1");
            if let Some(rec) = &rec {
                let mut created = rec.created.lock().unwrap();
                r["id"] = json!(format!("new-{}", created.len() + 1));
                created.push(r.clone());
            }
            let id = r["id"].as_str().unwrap().to_string();
            let mut resp = reply(StatusCode::CREATED, r);
            resp.headers_mut()
                .insert("location", format!("{base}/{t}/{id}/_history/1").parse().unwrap());
            resp
        }
        ("PUT", [_, _]) => reply(StatusCode::OK, serde_json::from_slice(&body).unwrap_or(json!({}))),
        // A delete answers 204 with no body, as FHIR servers commonly do.
        ("DELETE", [_, _]) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        ("POST", []) => {
            let b: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            let kind = if b["type"] == "transaction" {
                "transaction-response"
            } else {
                "batch-response"
            };
            let n = b["entry"].as_array().map(|e| e.len()).unwrap_or(0);
            let entries: Vec<Value> = (0..n).map(|_| json!({"response": {"status": "200 OK"}})).collect();
            reply(
                StatusCode::OK,
                json!({"resourceType": "Bundle", "type": kind, "entry": entries}),
            )
        }
        _ => reply(StatusCode::BAD_REQUEST, json!({"resourceType": "OperationOutcome"})),
    }
}
