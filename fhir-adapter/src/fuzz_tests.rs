//! Property/fuzz tests of the parsers that read client and backend bytes
//! (issue 17 item 6; EX-SEG-1, ACL-PHR-1): path normalisation, query and
//! media-type parsing, request and Bundle classification, and the response
//! check. Properties: no input panics; what was checked is what is forwarded
//! (the canonical path classifies the same again); and a generated Bundle
//! never releases a resource of another patient.
//!
//! Cases per property: `PHR_FUZZ_CASES` (default [`DEFAULT_CASES`]); a longer
//! hunt is `PHR_FUZZ_CASES=20000 cargo test -p fhir-adapter fuzz`. Failing
//! inputs are saved under `fhir-adapter/proptest-regressions/` and replayed first.

use crate::authorize::{AccessContext, Decision};
use crate::classify::{classify, FhirRequest, Limits};
use crate::normalize::{check_format, media_kind, normalize_path, parse_query};
use crate::response::{check_and_rebase_response, check_existing, Bases, ResponseBody};
use crate::scopes::Scopes;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Cases per property without `PHR_FUZZ_CASES`: the set stays well under a
/// minute in a debug `cargo test`.
const DEFAULT_CASES: u32 = 96;

pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("PHR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &u32| *n > 0)
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Path segments, raw: the grammar's words, ids, and every trick normalisation refuses.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&[
            "Patient", "Observation", "Encounter", "Practitioner", "Group", "patient", "metadata",
            ".well-known", "smart-configuration", "_history", "_search", "$everything", "$export",
            "$validate", "$x-y", "*", "1", "abc-1.2", ".", "..", "%2e", "%2E%2e", "%2F", "%5c", "%25",
            "%2541", "%", "%zz", "%00", "%C3%A9", "a%3Fb", "a#b", "\\", "", "%20",
        ][..]).prop_map(str::to_owned),
        1 => "[A-Za-z0-9._$*%-]{1,12}",
        1 => any::<String>(),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (proptest::collection::vec(segment(), 0..6), any::<bool>(), any::<bool>()).prop_map(|(segs, lead, trail)| {
        let mut p = segs.join("/");
        if lead {
            p.insert(0, '/');
        }
        if trail {
            p.push('/');
        }
        p
    })
}

fn raw_query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        proptest::sample::select(
            &[
                "subject=Patient/1",
                "patient=2",
                "_id=1",
                "_format=json",
                "_format=xml",
                "_type=Observation,Patient",
                "_include=Observation:subject",
                "a=%0A",
                "a=%",
                "b=x+y",
                "&",
                "=",
                "_format=application/fhir%2Bjson",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z_:.]{1,8}=[A-Za-z0-9/%+,.-]{0,12}",
        any::<String>(),
    ];
    proptest::collection::vec(pair, 0..4).prop_map(|v| v.join("&"))
}

fn method() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", ""][..])
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(
            &[
                "application/fhir+json",
                "application/json; charset=utf-8",
                "application/json-patch+json",
                "application/x-www-form-urlencoded",
                "application/fhir+json; fhirVersion=4.0.1",
                "application/fhir+xml",
                "json; x",
                ";",
                "",
            ][..]
        )
        .prop_map(|s| Some(s.to_owned())),
        any::<String>().prop_map(Some),
    ]
}

/// Request bodies: JSON a client may send (resources, Bundles with entries,
/// patches), and arbitrary bytes.
fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let entry = (method(), raw_path(), raw_query(), any::<bool>()).prop_map(|(m, p, q, with_resource)| {
        let url = if q.is_empty() { p } else { format!("{p}?{q}") };
        let mut e = json!({"request": {"method": m, "url": url}});
        if with_resource {
            e["resource"] = json!({"resourceType": "Observation", "id": "1", "subject": {"reference": "Patient/1"}});
        }
        e
    });
    let bundle = (
        proptest::sample::select(&["batch", "transaction", "searchset", ""][..]),
        proptest::collection::vec(entry, 0..5),
    )
        .prop_map(|(t, entries)| {
            json!({"resourceType": "Bundle", "type": t, "entry": entries})
                .to_string()
                .into_bytes()
        });
    prop_oneof![
        1 => Just(None),
        3 => bundle.prop_map(Some),
        1 => Just(Some(br#"{"resourceType":"Patient","id":"1"}"#.to_vec())),
        1 => Just(Some(br#"[{"op":"replace","path":"/status","value":"final"}]"#.to_vec())),
        1 => Just(Some(b"subject=Patient/1&_format=xml".to_vec())),
        1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Some),
    ]
}

// --- response check -------------------------------------------------------

pub(crate) const OWN: &str = "own-patient-1";
/// Appears only in resources of another patient, so a released body that
/// contains it has leaked one.
pub(crate) const FOREIGN: &str = "foreign-77";

fn patient_ref() -> impl Strategy<Value = (bool, String)> {
    (any::<bool>(), 0usize..4).prop_map(|(own, form)| {
        let id = if own { OWN } else { FOREIGN };
        let r = match form {
            0 => format!("Patient/{id}"),
            1 => format!("https://backend.example/fhir/Patient/{id}"),
            2 => format!("Patient/{id}/_history/3"),
            _ => format!("http://other.example/Patient/{id}"),
        };
        (own, r)
    })
}

/// A resource and whether it belongs to [`OWN`] only (every patient it names is
/// [`OWN`]; contained resources included).
fn resource() -> impl Strategy<Value = (bool, Value)> {
    prop_oneof![
        (patient_ref(), "[a-z0-9]{1,6}").prop_map(|((own, r), id)| {
            (
                own,
                json!({"resourceType": "Observation", "id": id, "status": "final", "subject": {"reference": r}}),
            )
        }),
        (patient_ref(), patient_ref()).prop_map(|((own, r), (c_own, c))| {
            let v = json!({
                "resourceType": "Condition", "id": "c1", "subject": {"reference": r},
                "contained": [{"resourceType": "Observation", "id": "x", "subject": {"reference": c}}],
            });
            (own && c_own, v)
        }),
        any::<bool>().prop_map(|own| {
            (
                own,
                json!({"resourceType": "Patient", "id": if own { OWN } else { FOREIGN }}),
            )
        }),
        Just((true, json!({"resourceType": "Medication", "id": "m1"}))),
        Just((true, json!({"resourceType": "OperationOutcome", "issue": []}))),
        Just((
            false,
            json!({"resourceType": "Encounter", "id": "e1", "subject": {"reference": format!("Patient/{FOREIGN}")}})
        )),
        Just((false, json!({"resourceType": "Observation", "id": "no-subject"}))),
    ]
}

fn entry_of(kind: &'static str) -> impl Strategy<Value = Value> {
    (resource(), 0usize..6).prop_map(move |((_, res), shape)| match shape {
        0 => json!({"fullUrl": "https://backend.example/fhir/x", "resource": res, "search": {"mode": "include"}}),
        1 => json!({"response": {"status": "404 Not Found"}}),
        2 => json!({"response": {"status": "410 Gone"}, "resource": res}),
        3 => json!({"request": {"method": "GET", "url": "Observation"}}),
        _ if kind == "batch-response" || kind == "transaction-response" => {
            json!({"resource": res, "response": {"status": "200 OK"}})
        }
        _ => json!({"resource": res, "search": {"mode": "match"}}),
    })
}

fn bundle_of(kind: &'static str, nested: Vec<Value>, entries: Vec<Value>) -> Value {
    let mut all = entries;
    for (i, n) in nested.into_iter().enumerate() {
        let at = (i * 3) % (all.len() + 1);
        all.insert(at, json!({"resource": n}));
    }
    json!({"resourceType": "Bundle", "type": kind, "total": all.len(), "entry": all,
           "link": [{"relation": "self", "url": "https://backend.example/fhir/Observation"}]})
}

pub(crate) fn backend_body() -> impl Strategy<Value = Value> {
    let kind = proptest::sample::select(
        &[
            "searchset",
            "history",
            "batch-response",
            "transaction-response",
            "collection",
            "document",
        ][..],
    );
    // Nested Bundles: results, and a collection whose contents must be checked too.
    let inner_kind = proptest::sample::select(&["searchset", "searchset", "history", "collection"][..]);
    let inner = (inner_kind, proptest::collection::vec(entry_of("searchset"), 0..3))
        .prop_map(|(k, e)| bundle_of(k, Vec::new(), e));
    prop_oneof![
        4 => (kind, proptest::collection::vec(inner, 0..2), any::<u64>())
            .prop_flat_map(|(k, nested, _)| {
                proptest::collection::vec(entry_of(k), 0..6).prop_map(move |e| bundle_of(k, nested.clone(), e))
            }),
        1 => resource().prop_map(|(_, r)| r),
    ]
}

pub(crate) fn patient_decision() -> Decision {
    Decision {
        response_check: true,
        patient: Some(OWN.to_owned()),
        ..Decision::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn string_parsers_never_panic(s in any::<String>()) {
        let _ = normalize_path(&s);
        let _ = parse_query(&s);
        let _ = media_kind(&s);
        let _ = check_format(&s);
        let _ = crate::compartment::patient_id_of_reference(&s);
        let _ = crate::scopes::Scopes::parse_str(&s);
    }

    /// Normalising the canonical form of a path changes nothing.
    #[test]
    fn normalisation_is_idempotent(raw in raw_path()) {
        if let Ok(segs) = normalize_path(&raw) {
            let canonical = segs.join("/");
            let again = normalize_path(&canonical);
            // A decoded `%` would be decoded a second time by the backend.
            if !canonical.contains('%') {
                prop_assert_eq!(again, Ok(segs));
            }
        }
    }

    /// Classification never panics, and what was classified is what is
    /// forwarded: the canonical path holds no escape a backend would decode
    /// again, and classifies to the same interaction, type, ids and operation.
    #[test]
    fn classification_of_the_canonical_path_is_the_same(
        method in method(),
        path in raw_path(),
        query in raw_query(),
        content_type in content_type(),
        body in body(),
    ) {
        let limits = Limits::default();
        let req = FhirRequest {
            method,
            path: &path,
            query: Some(&query),
            content_type: content_type.as_deref(),
            body: body.as_deref(),
        };
        if let Ok(c) = classify(&req, &limits) {
            prop_assert!(!c.path.contains('%'), "canonical path {:?} from {path:?}", c.path);
            let again = classify(&FhirRequest { path: &c.path, ..req }, &limits);
            let again = again.map_err(|e| TestCaseError::fail(format!("{path:?} → {:?}: {e:?}", c.path)))?;
            prop_assert_eq!(again.interaction, c.interaction);
            prop_assert_eq!(again.resource_type, c.resource_type);
            prop_assert_eq!(&again.id, &c.id);
            prop_assert_eq!(&again.version_id, &c.version_id);
            prop_assert_eq!(&again.compartment, &c.compartment);
            prop_assert_eq!(&again.operation, &c.operation);
            prop_assert_eq!(&again.path, &c.path);
            for e in &c.entries {
                prop_assert!(!e.path.contains('%'), "entry path {:?}", e.path);
            }
        }
    }

    #[test]
    fn response_check_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        confined in any::<bool>(),
    ) {
        let scopes = Scopes::parse_str("launch/patient patient/*.rs");
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let d = if confined { patient_decision() } else { Decision::default() };
        let bases = Bases::new("https://backend.example/fhir", "https://gw.example/fhir");
        let _ = check_and_rebase_response(&d, &ctx, &body, Some(bases));
        let _ = check_existing(&d, &body);
    }

    /// Whatever the Bundle (type, nesting, includes, deletions, 404s), a
    /// patient's token is never sent a resource that names another patient;
    /// batch-responses keep one entry per request entry.
    #[test]
    fn response_check_never_releases_another_patients_resource(v in backend_body(), rebase in any::<bool>()) {
        let scopes = Scopes::parse_str("launch/patient patient/*.rs");
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let body = serde_json::to_vec(&v).expect("JSON");
        let bases = rebase.then_some(Bases::new("https://backend.example/fhir", "https://gw.example/fhir"));
        if let Ok(check) = check_and_rebase_response(&patient_decision(), &ctx, &body, bases) {
            let released = match &check.body {
                ResponseBody::Unchanged => body.clone(),
                ResponseBody::Rewritten(b) => b.clone(),
            };
            let text = String::from_utf8_lossy(&released);
            prop_assert!(!text.contains(FOREIGN), "released {text}");
            prop_assert!(!check.touched.contains(FOREIGN));
            let out: Value = serde_json::from_slice(&released).expect("released JSON");
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
            if kind == "batch-response" || kind == "transaction-response" {
                let n = |b: &Value| b.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
                prop_assert_eq!(n(&out), n(&v));
            }
        }
    }
}
