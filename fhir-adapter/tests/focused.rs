//! Focused tests: response checks, pre-reads, OperationOutcome shape, base-URL rewriting,
//! scope parsing, access facts, limits and Bundle diagnostics.
//!
//! Requirements: ACL-PHR-1 (response confinement), EX-SEG-1 (limits, base URL hiding),
//! LOG-ACC-1 (facts, request id in OperationOutcome).

use fhir_adapter::*;
use serde_json::{json, Value};

fn classify_ok(method: &str, url: &str, body: Option<&str>) -> Classified {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    classify(
        &FhirRequest {
            method,
            path,
            query,
            content_type: body.map(|_| "application/fhir+json"),
            body: body.map(str::as_bytes),
        },
        &Limits::default(),
    )
    .expect("classifies")
}

fn decide(c: &Classified, scopes: &Scopes, patient: Option<&str>) -> Result<Decision, FhirError> {
    authorize(c, &AccessContext { scopes, patient }, &Policy::default())
}

/// The context of a request by patient 123's token with `scopes`.
fn patient_123(scopes: &Scopes) -> AccessContext<'_> {
    AccessContext {
        scopes,
        patient: Some("123"),
    }
}

fn obs(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "subject": {"reference": format!("Patient/{patient}")}})
}

fn rewritten(r: &ResponseCheck) -> Value {
    match &r.body {
        ResponseBody::Rewritten(b) => serde_json::from_slice(b).unwrap(),
        ResponseBody::Unchanged => panic!("expected a rewritten body"),
    }
}

// ---- response checks -----------------------------------------------------------------------

#[test]
fn single_resource_of_another_patient_is_refused() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Observation/abc", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert!(d.response_check);
    let body = serde_json::to_vec(&obs("abc", "456")).unwrap();
    let err = check_response(&d, &ctx, &body).unwrap_err();
    assert_eq!(
        err,
        FhirError::ResponseOtherPatient {
            resource_type: "Observation".into()
        }
    );
    assert_eq!(err.status(), 403);

    let own = serde_json::to_vec(&obs("abc", "123")).unwrap();
    let ok = check_response(&d, &ctx, &own).unwrap();
    assert_eq!(ok.body, ResponseBody::Unchanged);
    assert_eq!(ok.touched.iter().collect::<Vec<_>>(), ["123"]);
}

#[test]
fn absolute_and_nested_references_count_as_own() {
    let ap = json!({"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "Practitioner/1"}},
        {"actor": {"reference": "https://ehr.example/fhir/Patient/123/_history/3"}}
    ]});
    assert!(belongs_to(&ap, "123"));
    assert!(!belongs_to(&ap, "456"));
    let cp = json!({"resourceType": "CarePlan", "subject": {"reference": "Group/1"},
        "activity": [{"detail": {"performer": [{"reference": "Patient/123"}]}}]});
    assert!(belongs_to(&cp, "123"));
    // A contained Patient is not the server's Patient/123.
    let contained = json!({"resourceType": "Observation", "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p"}]});
    assert!(!belongs_to(&contained, "123"));
    // A contained resource about another patient poisons the container.
    let leaky = json!({"resourceType": "MedicationRequest", "subject": {"reference": "Patient/123"},
        "contained": [{"resourceType": "Observation", "subject": {"reference": "Patient/456"}}]});
    assert!(!belongs_to(&leaky, "123"));
    assert!(belongs_to(&json!({"resourceType": "Medication"}), "123"));
    assert!(!belongs_to(&json!({"resourceType": "Patient", "id": "456"}), "123"));
}

#[test]
fn searchset_with_mixed_patients_is_filtered_and_total_fixed() {
    let scopes = Scopes::parse_str("patient/Observation.rs patient/Patient.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Observation?_include=Observation:subject", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert!(d.response_check);
    let bundle = json!({
        "resourceType": "Bundle", "type": "searchset", "total": 3,
        "entry": [
            {"resource": obs("a", "123"), "search": {"mode": "match"}},
            {"resource": obs("b", "456"), "search": {"mode": "match"}},
            {"resource": obs("c", "123"), "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "456"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "Patient", "id": "123"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "Practitioner", "id": "9"}, "search": {"mode": "include"}}
        ]
    });
    let r = check_response(&d, &ctx, &serde_json::to_vec(&bundle).unwrap()).unwrap();
    let v = rewritten(&r);
    let ids: Vec<&str> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    // Practitioner is removed too: no scope lets this client read Practitioner.
    assert_eq!(ids, ["a", "c", "123"]);
    assert_eq!(v["total"], 2);
    assert_eq!(r.removed, 3);
    assert_eq!(r.touched.iter().collect::<Vec<_>>(), ["123"]);
}

#[test]
fn granular_scope_search_keeps_matches_and_drops_unscoped_includes() {
    let scopes = Scopes::parse_str("patient/Observation.rs?category=laboratory");
    let ctx = patient_123(&scopes);
    let c = classify_ok(
        "GET",
        "Observation?category=laboratory&_include=Observation:performer",
        None,
    );
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert!(d.response_check);
    assert_eq!(d.touched.iter().collect::<Vec<_>>(), ["123"]);
    let bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": obs("a", "123"), "search": {"mode": "match"}},
        {"resource": {"resourceType": "Practitioner", "id": "9"}, "search": {"mode": "include"}}]});
    let r = check_response(&d, &ctx, &serde_json::to_vec(&bundle).unwrap()).unwrap();
    let v = rewritten(&r);
    assert_eq!(v["entry"].as_array().unwrap().len(), 1);
    assert_eq!(v["entry"][0]["resource"]["id"], "a");
    assert_eq!(r.removed, 1);
}

/// The check and the base-URL rewrite share one parse: a foreign entry is removed *and*
/// the kept entries' URLs point at the gateway; a clean page with internal URLs is
/// rewritten only for the URLs; an empty body (204) passes as it is.
#[test]
fn check_and_rebase_filters_and_rewrites_in_one_pass() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let bases = Bases::new("http://backend.internal/fhir", "https://phr.example.jp/fhir");
    let c = classify_ok("GET", "Observation", None);
    let mut d = decide(&c, &scopes, Some("123")).unwrap();
    // As the gateway does for every patient-confined request: the backend may ignore
    // the added `subject=`, so its answer is checked too.
    d.response_check = true;
    let entry = |id: &str, patient: &str| {
        json!({"fullUrl": format!("http://backend.internal/fhir/Observation/{id}"),
               "resource": obs(id, patient), "search": {"mode": "match"}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "link": [{"relation": "self", "url": "http://backend.internal/fhir/Observation"}],
        "entry": [entry("a", "123"), entry("b", "456")]});
    let r = check_and_rebase_response(&d, &ctx, &serde_json::to_vec(&bundle).unwrap(), Some(bases)).unwrap();
    let v = rewritten(&r);
    assert_eq!(r.removed, 1);
    assert_eq!(v["entry"].as_array().unwrap().len(), 1);
    assert_eq!(v["entry"][0]["fullUrl"], "https://phr.example.jp/fhir/Observation/a");
    assert_eq!(v["link"][0]["url"], "https://phr.example.jp/fhir/Observation");

    let clean = json!({"resourceType": "Bundle", "type": "searchset", "entry": [entry("a", "123")]});
    let r = check_and_rebase_response(&d, &ctx, &serde_json::to_vec(&clean).unwrap(), Some(bases)).unwrap();
    assert_eq!(r.removed, 0);
    assert_eq!(
        rewritten(&r)["entry"][0]["fullUrl"],
        "https://phr.example.jp/fhir/Observation/a"
    );
    // Without bases it is the plain check: nothing to remove, nothing rewritten.
    let r = check_and_rebase_response(&d, &ctx, &serde_json::to_vec(&clean).unwrap(), None).unwrap();
    assert_eq!(r.body, ResponseBody::Unchanged);

    let r = check_and_rebase_response(&d, &ctx, b"", Some(bases)).unwrap();
    assert_eq!(r.body, ResponseBody::Unchanged);
    // A single resource of another patient is still refused.
    let c = classify_ok("GET", "Observation/b", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    let foreign = serde_json::to_vec(&obs("b", "456")).unwrap();
    assert!(check_and_rebase_response(&d, &ctx, &foreign, Some(bases)).is_err());
}

/// A top-level Bundle is checked one entry at a time: an entry that needs no change is
/// written back as the backend's own bytes (here recognisable by its spacing), while
/// the Bundle around it is still filtered and its `total` corrected.
#[test]
fn kept_entries_keep_the_backends_bytes() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Observation", None);
    let mut d = decide(&c, &scopes, Some("123")).unwrap();
    d.response_check = true;
    let own = r#"{ "resource" : { "resourceType" : "Observation", "id" : "a", "subject" : { "reference" : "Patient/123" } } }"#;
    let other = serde_json::to_string(&json!({"resource": obs("b", "456")})).unwrap();
    let body = format!(r#"{{"resourceType":"Bundle","type":"searchset","total":2,"entry":[{own},{other}]}}"#);
    let r = check_response(&d, &ctx, body.as_bytes()).unwrap();
    let ResponseBody::Rewritten(out) = &r.body else {
        panic!("a foreign entry must be removed")
    };
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains(own), "kept entry re-encoded: {text}");
    assert!(!text.contains("456"), "{text}");
    assert_eq!(rewritten(&r)["total"], 1);
    // An entry list that is not a list is refused, not passed through unchecked.
    let bad = br#"{"resourceType":"Bundle","type":"searchset","entry":{"resource":{}}}"#;
    assert_eq!(check_response(&d, &ctx, bad).unwrap_err().status(), 502);
}

/// A Bundle that is not a result list (a document, a collection) is not in the patient
/// compartment itself, but what it carries is: one foreign resource inside, at any
/// depth, refuses the whole Bundle; the patient's own passes and is reported.
#[test]
fn other_bundles_are_refused_when_they_carry_another_patients_resource() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Bundle/doc-1", None);
    let mut d = decide(&c, &scopes, Some("123")).unwrap();
    d.response_check = true;
    let own = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs("a", "123")}]});
    let r = check_response(&d, &ctx, &serde_json::to_vec(&own).unwrap()).unwrap();
    assert_eq!(r.body, ResponseBody::Unchanged);
    assert_eq!(r.touched.iter().collect::<Vec<_>>(), ["123"]);
    let nested = json!({"resourceType": "Bundle", "type": "document", "entry": [
        {"resource": obs("a", "123")},
        {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs("b", "456")}]}}]});
    let err = check_response(&d, &ctx, &serde_json::to_vec(&nested).unwrap()).unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
}

#[test]
fn searchset_without_foreign_entries_is_unchanged() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Observation/_history", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "history", "entry": [{"resource": obs("a", "123")}]});
    let r = check_response(&d, &ctx, &serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert_eq!(r.body, ResponseBody::Unchanged);
    assert_eq!(r.removed, 0);
    // A deleted version in a history bundle cannot be verified and is dropped.
    let bundle = json!({"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": obs("a", "123")}, {"request": {"method": "DELETE", "url": "Observation/b"}}]});
    let r = check_response(&d, &ctx, &serde_json::to_vec(&bundle).unwrap()).unwrap();
    assert_eq!(rewritten(&r)["entry"].as_array().unwrap().len(), 1);
}

#[test]
fn batch_response_entries_are_replaced_in_place() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let req = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Observation/a"}},
        {"request":{"method":"GET","url":"Observation/b"}},
        {"request":{"method":"GET","url":"Observation?code=x"}}]}"#;
    let c = classify_ok("POST", "", Some(req));
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert_eq!(d.entry_checks, [true, true, false]);
    let resp = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": obs("a", "123"), "response": {"status": "200 OK"}},
        {"resource": obs("b", "456"), "response": {"status": "200 OK"}},
        {"resource": {"resourceType": "Bundle", "type": "searchset", "total": 1,
            "entry": [{"resource": obs("c", "123")}]}, "response": {"status": "200 OK"}}
    ]});
    let r = check_response(&d, &ctx, &serde_json::to_vec(&resp).unwrap()).unwrap();
    let v = rewritten(&r);
    let entries = v["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "positions are kept");
    assert_eq!(entries[0]["resource"]["id"], "a");
    assert_eq!(entries[1]["response"]["status"], "404 Not Found");
    assert_eq!(entries[1]["response"]["outcome"]["issue"][0]["code"], "not-found");
    assert!(entries[1].get("resource").is_none());
    assert_eq!(entries[2]["resource"]["entry"][0]["resource"]["id"], "c");
    assert_eq!(r.removed, 1);

    // The backend's own "not found" for a checked entry becomes the very same entry, so
    // a foreign resource and a missing one cannot be told apart (ACL-PHR-1).
    let absent = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": obs("a", "123"), "response": {"status": "200 OK"}},
        {"response": {"status": "404 Not Found", "outcome": {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": "backend words"}]}}},
        {"resource": {"resourceType": "Bundle", "type": "searchset", "total": 0}, "response": {"status": "200 OK"}}
    ]});
    let r2 = check_response(&d, &ctx, &serde_json::to_vec(&absent).unwrap()).unwrap();
    assert_eq!(
        rewritten(&r2)["entry"][1],
        entries[1],
        "a missing resource answers like a foreign one"
    );
}

#[test]
fn unconfined_responses_only_report_patients() {
    let scopes = Scopes::parse_str("user/*.rs");
    let ctx = AccessContext {
        scopes: &scopes,
        patient: None,
    };
    let c = classify_ok("GET", "Observation/abc", None);
    let d = decide(&c, &scopes, None).unwrap();
    assert!(!d.response_check);
    let r = check_response(&d, &ctx, &serde_json::to_vec(&obs("abc", "456")).unwrap()).unwrap();
    assert_eq!(r.body, ResponseBody::Unchanged);
    assert_eq!(r.touched.iter().collect::<Vec<_>>(), ["456"]);
    let facts = access_facts(&c, Some(&d), Some(&r));
    assert_eq!(facts.interaction, "read");
    assert_eq!(facts.resource_type, Some("Observation"));
    assert_eq!(facts.resource_id, Some("abc"));
    assert_eq!(facts.patients.iter().collect::<Vec<_>>(), ["456"]);
}

#[test]
fn bad_upstream_body_is_502_and_empty_body_passes() {
    let scopes = Scopes::parse_str("patient/*.rs");
    let ctx = patient_123(&scopes);
    let c = classify_ok("GET", "Observation/abc", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert_eq!(check_response(&d, &ctx, b"<html>").unwrap_err().status(), 502);
    assert_eq!(check_response(&d, &ctx, b"").unwrap().body, ResponseBody::Unchanged);
    let oo = operation_outcome(404, "not-found", "gone", "r1");
    assert_eq!(check_response(&d, &ctx, &oo).unwrap().body, ResponseBody::Unchanged);
}

#[test]
fn pre_read_decides_writes_by_id() {
    let scopes = Scopes::parse_str("patient/*.cruds");
    let c = classify_ok("DELETE", "Observation/abc", None);
    let d = decide(&c, &scopes, Some("123")).unwrap();
    assert_eq!(d.pre_reads, ["Observation/abc"]);
    let mine = serde_json::to_vec(&obs("abc", "123")).unwrap();
    let theirs = serde_json::to_vec(&obs("abc", "456")).unwrap();
    assert_eq!(check_existing(&d, &mine), Ok(()));
    assert_eq!(check_existing(&d, &theirs).unwrap_err().status(), 403);
}

// ---- request-side details ------------------------------------------------------------------

#[test]
fn bundle_error_names_the_entry() {
    let scopes = Scopes::parse_str("patient/*.cruds");
    let tx = r#"{"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/123"}},"request":{"method":"POST","url":"Observation"}},
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/456"}},"request":{"method":"POST","url":"Observation"}}]}"#;
    let c = classify_ok("POST", "", Some(tx));
    assert_eq!(c.interaction, Interaction::Transaction);
    assert_eq!(c.entries.len(), 2);
    let err = decide(&c, &scopes, Some("123")).unwrap_err();
    assert_eq!(err.status(), 403);
    assert!(matches!(&err, FhirError::BundleEntry { index: 1, .. }), "{err:?}");
    assert!(err.to_string().starts_with("Bundle entry 1: "), "{err}");
}

#[test]
fn bodies_and_bundles_over_the_limits_are_refused() {
    let limits = Limits {
        max_body_bytes: 64,
        max_bundle_entries: 2,
    };
    let big = format!(r#"{{"resourceType":"Observation","note":"{}"}}"#, "x".repeat(100));
    let req = FhirRequest {
        method: "POST",
        path: "Observation",
        query: None,
        content_type: Some("application/fhir+json"),
        body: Some(big.as_bytes()),
    };
    assert_eq!(
        classify(&req, &limits).unwrap_err(),
        FhirError::BodyTooLarge {
            limit: 64,
            actual: big.len()
        }
    );
    let limits = Limits {
        max_body_bytes: 10_000,
        max_bundle_entries: 2,
    };
    let entry = r#"{"request":{"method":"GET","url":"Patient/1"}}"#;
    let tx = format!(r#"{{"resourceType":"Bundle","type":"batch","entry":[{entry},{entry},{entry}]}}"#);
    let req = FhirRequest {
        body: Some(tx.as_bytes()),
        path: "",
        ..req
    };
    let err = classify(&req, &limits).unwrap_err();
    assert_eq!(err, FhirError::TooManyEntries { limit: 2, actual: 3 });
    assert_eq!(err.status(), 413);
}

#[test]
fn classification_yields_ids_versions_canonical_paths_and_compartments() {
    let c = classify_ok("GET", "Patient/123/_history/7", None);
    assert_eq!(
        (c.interaction, c.resource_type, c.id.as_deref(), c.version_id.as_deref()),
        (Interaction::Vread, Some("Patient"), Some("123"), Some("7"))
    );
    assert_eq!(c.path, "Patient/123/_history/7");
    let c = classify_ok("GET", "Patient/12%33/", None);
    assert_eq!(c.path, "Patient/123", "forwarded path is the canonical one");
    let c = classify_ok("GET", "Patient/123/Observation", None);
    assert_eq!(c.compartment, Some(("Patient", "123".to_string())));
    assert_eq!(c.resource_type, Some("Observation"));
    let c = classify_ok(
        "POST",
        "Patient/123/$everything",
        Some(r#"{"resourceType":"Parameters"}"#),
    );
    assert_eq!(c.operation.as_deref(), Some("everything"));
    let err = classify(
        &FhirRequest {
            method: "GET",
            path: "patient/1",
            ..Default::default()
        },
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        FhirError::WrongCaseResourceType {
            given: "patient".into(),
            expected: "Patient"
        }
    );
    assert!(err.to_string().contains("use 'Patient'"));
}

#[test]
fn touched_patients_from_request() {
    let scopes = Scopes::parse_str("user/*.cruds");
    let c = classify_ok("GET", "Observation?subject=Patient/7,Patient/8&patient=9", None);
    let d = decide(&c, &scopes, None).unwrap();
    assert_eq!(d.touched.iter().collect::<Vec<_>>(), ["7", "8", "9"]);
    let c = classify_ok(
        "POST",
        "Condition",
        Some(
            r#"{"resourceType":"Condition","subject":{"reference":"Patient/5"},"asserter":{"reference":"Patient/6"}}"#,
        ),
    );
    let d = decide(&c, &scopes, None).unwrap();
    assert_eq!(d.touched.iter().collect::<Vec<_>>(), ["5", "6"]);
    let c = classify_ok("GET", "Patient/3/Observation", None);
    let d = decide(&c, &scopes, None).unwrap();
    let f = access_facts(&c, Some(&d), None);
    assert_eq!(f.interaction, "search-compartment");
    assert_eq!(f.patients.iter().collect::<Vec<_>>(), ["3"]);
}

// ---- OperationOutcome ------------------------------------------------------------------------

#[test]
fn operation_outcome_carries_the_code_diagnostics_and_request_id() {
    let b = operation_outcome(403, "forbidden", "no scope", "req-42");
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(v["id"], "req-42");
    assert_eq!(v["issue"][0]["severity"], "error");
    assert_eq!(v["issue"][0]["code"], "forbidden");
    assert_eq!(v["issue"][0]["diagnostics"], "no scope (request id: req-42)");
    assert_eq!(v["extension"][0]["url"], REQUEST_ID_EXTENSION);
    assert_eq!(v["extension"][0]["valueString"], "req-42");
    // A request id that is not a valid FHIR id is not used as `id`.
    let v: Value = serde_json::from_slice(&operation_outcome(504, "timeout", "slow", "a b/c")).unwrap();
    assert!(v.get("id").is_none());
    assert_eq!(v["issue"][0]["severity"], "fatal");
    assert_eq!(v["extension"][0]["valueString"], "a b/c");
}

#[test]
fn every_status_maps_to_its_operation_outcome_issue_code() {
    for (status, code) in [
        (400, "invalid"),
        (401, "security"),
        (403, "forbidden"),
        (404, "not-found"),
        (413, "too-long"),
        (415, "not-supported"),
        (429, "throttled"),
        (502, "transient"),
        (503, "transient"),
        (504, "timeout"),
        (500, "exception"),
    ] {
        assert_eq!(issue_code_for_status(status), code, "status {status}");
    }
    let (status, body) = error_response(&FhirError::UnsupportedFormat { format: "xml".into() }, "r");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 415);
    assert_eq!(v["issue"][0]["code"], "not-supported");
    assert!(v["issue"][0]["diagnostics"].as_str().unwrap().contains("_format=xml"));
}

// ---- base URL rewriting ------------------------------------------------------------------------

#[test]
fn backend_base_urls_are_rewritten_to_the_public_base() {
    let b = "http://fhir-backend.internal:8080/fhir/";
    let p = "https://phr.example.jp/fhir";
    assert_eq!(
        rewrite_base_url("http://fhir-backend.internal:8080/fhir/Observation/1/_history/2", b, p).as_deref(),
        Some("https://phr.example.jp/fhir/Observation/1/_history/2")
    );
    assert_eq!(
        rewrite_base_url("http://fhir-backend.internal:8080/fhir", b, p).as_deref(),
        Some("https://phr.example.jp/fhir")
    );
    assert_eq!(
        rewrite_base_url("http://fhir-backend.internal:8080/fhir?_getpages=x", b, p).as_deref(),
        Some("https://phr.example.jp/fhir?_getpages=x")
    );
    assert_eq!(
        rewrite_base_url("http://fhir-backend.internal:8080/fhir2/Patient/1", b, p),
        None
    );
    assert_eq!(rewrite_base_url("https://other.example/fhir/Patient/1", b, p), None);

    let bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "link": [{"relation": "next", "url": "http://fhir-backend.internal:8080/fhir?_getpages=abc"}],
        "entry": [{"fullUrl": "http://fhir-backend.internal:8080/fhir/Patient/1", "resource": {"resourceType": "Patient", "id": "1"}},
                  {"fullUrl": "urn:uuid:1", "response": {"status": "201", "location": "http://fhir-backend.internal:8080/fhir/Observation/2/_history/1"}}]});
    let out = rewrite_body_base_urls(&serde_json::to_vec(&bundle).unwrap(), b, p)
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["link"][0]["url"], "https://phr.example.jp/fhir?_getpages=abc");
    assert_eq!(v["entry"][0]["fullUrl"], "https://phr.example.jp/fhir/Patient/1");
    assert_eq!(v["entry"][1]["fullUrl"], "urn:uuid:1");
    assert_eq!(
        v["entry"][1]["response"]["location"],
        "https://phr.example.jp/fhir/Observation/2/_history/1"
    );
    let untouched = json!({"resourceType": "Patient", "id": "1"});
    assert_eq!(
        rewrite_body_base_urls(&serde_json::to_vec(&untouched).unwrap(), b, p).unwrap(),
        None
    );
}

// ---- scope parsing ---------------------------------------------------------------------------

#[test]
fn scope_parsing_v1_v2_granular() {
    let s = Scopes::parse_str(
        "openid fhirUser launch/patient offline_access patient/Observation.rs \
         user/*.cruds system/Patient.read patient/Condition.write patient/Encounter.* \
         patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory \
         patient/Observation.sr patient/Nope.rs patient/Observation.rx user/Patient",
    );
    let rs = s.resource_scopes();
    assert_eq!(rs.len(), 6);
    assert_eq!(
        (rs[0].level, rs[0].resource_type.as_str(), rs[0].perms.letters()),
        (Level::Patient, "Observation", "rs".to_string())
    );
    assert_eq!(
        (rs[1].level, rs[1].resource_type.as_str(), rs[1].perms.letters()),
        (Level::User, "*", "cruds".to_string())
    );
    assert_eq!((rs[2].level, rs[2].perms.letters()), (Level::System, "rs".to_string()));
    assert_eq!(rs[3].perms.letters(), "cud");
    assert_eq!(rs[4].perms.letters(), "cruds");
    assert_eq!(
        rs[5].constraints,
        [(
            "category".to_string(),
            "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_string()
        )]
    );
    assert_eq!(s.ignored(), ["openid", "fhirUser", "launch/patient", "offline_access"]);
    assert_eq!(
        s.invalid(),
        [
            "patient/Observation.sr",
            "patient/Nope.rs",
            "patient/Observation.rx",
            "user/Patient"
        ]
    );
}

#[test]
fn scopes_grant_patient_or_unconfined_access_and_name_what_is_missing() {
    let s = Scopes::parse_str("patient/Observation.rs user/Practitioner.r patient/Condition.rs?clinical-status=active");
    assert_eq!(s.check("Observation", Perms::R, &[]), Ok(Grant::Patient));
    assert_eq!(s.check("Practitioner", Perms::R, &[]), Ok(Grant::Unconfined));
    assert_eq!(
        s.check("Observation", Perms::C, &[]),
        Err(FhirError::ScopeMissing {
            permission: 'c',
            resource_type: "Observation".into(),
            family: fhir_adapter::Level::User,
        })
    );
    let active = [("clinical-status".to_string(), "active".to_string())];
    assert_eq!(s.check("Condition", Perms::S, &active), Ok(Grant::Patient));
    assert!(matches!(
        s.check("Condition", Perms::S, &[]),
        Err(FhirError::ScopeConstraintUnmet { .. })
    ));
    assert!(matches!(
        s.check("Condition", Perms::R, &active),
        Err(FhirError::ScopeConstraintUnmet { .. })
    ));
    assert!(!s.grants_unconfined("Observation", Perms::R));
}

/// A route that strips its prefix, in front of a backend that builds URLs from
/// `X-Forwarded-Host`/`-Proto` and ignores `X-Forwarded-Prefix`: its URLs on the public
/// host move under the prefix; URLs already under it (a backend that does honour the
/// header) and the backend's own base are handled without doubling anything.
#[test]
fn urls_on_the_unprefixed_public_host_move_under_the_prefix_once() {
    let bases = Bases {
        backend: "http://10.0.0.5:8080",
        public: "https://gw.example.jp/api/fhir",
        unprefixed: Some("https://gw.example.jp"),
    };
    let cases = [
        (
            "https://gw.example.jp/Patient/1",
            Some("https://gw.example.jp/api/fhir/Patient/1"),
        ),
        (
            "https://gw.example.jp?_getpages=x",
            Some("https://gw.example.jp/api/fhir?_getpages=x"),
        ),
        (
            "http://10.0.0.5:8080/Patient/1",
            Some("https://gw.example.jp/api/fhir/Patient/1"),
        ),
        ("https://gw.example.jp/api/fhir/Patient/1", None),
        ("https://gw.example.jp/api/fhir", None),
        ("https://other.example.jp/Patient/1", None),
        ("urn:uuid:1", None),
    ];
    for (url, want) in cases {
        assert_eq!(bases.rewrite(url).as_deref(), want, "{url}");
    }
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "link": [{"relation": "self", "url": "https://gw.example.jp/Observation?patient=1"}],
        "entry": [{"fullUrl": "https://gw.example.jp/Observation/1", "resource": {"resourceType": "Observation", "id": "1"}},
                  {"fullUrl": "https://gw.example.jp/api/fhir/Observation/2", "resource": {"resourceType": "Observation", "id": "2"}}]});
    assert!(rebase_value(&mut bundle, &bases));
    assert_eq!(
        bundle["link"][0]["url"],
        "https://gw.example.jp/api/fhir/Observation?patient=1"
    );
    assert_eq!(
        bundle["entry"][0]["fullUrl"],
        "https://gw.example.jp/api/fhir/Observation/1"
    );
    assert_eq!(
        bundle["entry"][1]["fullUrl"],
        "https://gw.example.jp/api/fhir/Observation/2"
    );
}

/// With a `public_base_url` on another host than the one the client used, a URL the
/// backend built on the client's host moves to the public base, prefix once.
#[test]
fn urls_on_the_forwarded_host_move_to_another_public_base_without_doubling() {
    let bases = Bases {
        backend: "http://10.0.0.5:8080",
        public: "https://phr.example.jp/api/fhir",
        unprefixed: Some("https://gw-1.internal.example.jp"),
    };
    let cases = [
        (
            "https://gw-1.internal.example.jp/Patient/1",
            "https://phr.example.jp/api/fhir/Patient/1",
        ),
        (
            "https://gw-1.internal.example.jp/api/fhir/Patient/1",
            "https://phr.example.jp/api/fhir/Patient/1",
        ),
    ];
    for (url, want) in cases {
        assert_eq!(bases.rewrite(url).as_deref(), Some(want), "{url}");
    }
}
