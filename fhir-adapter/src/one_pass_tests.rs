//! The one-pass response check ([`crate::one_pass`]) against the implementation it
//! replaced ([`crate::response_oracle`]) on generated backend bodies (ACL-PHR-1,
//! EX-SEG-1, LOG-ACC-1): the same refusals, the same entries removed, the same patients
//! reported, and the same released document.
//!
//! "The same document" is compared as parsed JSON, not as bytes: the old check
//! re-encoded a changed Bundle (members sorted, whitespace dropped) where the new one
//! splices the backend's bytes. Where the old check released the backend's bytes
//! unchanged, the new one must too (no edits at all).

use crate::authorize::{AccessContext, Decision};
use crate::fuzz_tests::{backend_body, config, patient_decision, OWN};
use crate::one_pass::check_and_edit_response;
use crate::response::{Bases, ResponseBody};
use crate::response_oracle;
use crate::scopes::Scopes;
use crate::FhirError;
use proptest::prelude::*;
use serde_json::{json, Value};

const SCOPES: &[&str] = &[
    "launch/patient patient/*.rs",
    "launch/patient patient/Observation.rs",
    "launch/patient patient/Observation.rs patient/Condition.rs patient/Encounter.rs",
];

const BASES: &[Bases<'static>] = &[
    Bases {
        backend: "https://backend.example/fhir",
        public: "https://gw.example/fhir",
        unprefixed: None,
    },
    Bases {
        backend: "https://other.example/x",
        public: "https://gw.example/api/fhir",
        unprefixed: Some("https://backend.example"),
    },
    Bases {
        backend: "https://backend.example/fhir/",
        public: "https://backend.example/fhir",
        unprefixed: None,
    },
];

/// Whether `v` holds what the one-pass check refuses on purpose where the old one
/// passed (see [`what_the_one_pass_check_refuses_that_the_old_one_passed`]): a Bundle
/// that is not a result list inside a result Bundle's entry, or an `entry` that is not
/// a list. (A changed byte can make either.)
fn holds_a_new_refusal(v: &Value, in_results: bool) -> bool {
    let is_result = |b: &Value| {
        matches!(
            b.get("type").and_then(Value::as_str),
            Some("searchset" | "history" | "batch-response" | "transaction-response")
        )
    };
    let Some(entry) = v.get("entry") else { return false };
    let Some(entries) = entry.as_array() else { return true };
    let results = in_results || is_result(v);
    entries.iter().filter_map(|e| e.get("resource")).any(|r| {
        let bundle = r.get("resourceType").and_then(Value::as_str) == Some("Bundle");
        (bundle && results && !is_result(r)) || holds_a_new_refusal(r, results && bundle)
    })
}

/// The two implementations agree on `body` (Ok or Err alike, see the module doc).
fn agree(d: &Decision, ctx: &AccessContext<'_>, body: &[u8], bases: Option<Bases<'_>>) -> Result<(), TestCaseError> {
    let old = response_oracle::check_and_rebase_response(d, ctx, body, bases);
    let new = check_and_edit_response(d, ctx, body, bases);
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        prop_assume!(!holds_a_new_refusal(&v, false), "a refusal the old check did not make");
    }
    if let Err(FhirError::InvalidUpstreamResponse { detail }) = &new {
        prop_assume!(!detail.contains("twice"), "a member named twice");
    }
    match (old, new) {
        (Err(o), Err(n)) => match (&o, &n) {
            (FhirError::InvalidUpstreamResponse { .. }, FhirError::InvalidUpstreamResponse { .. }) => {}
            _ => prop_assert_eq!(o, n, "{}", text),
        },
        (Ok(o), Ok(n)) => {
            prop_assert_eq!(o.removed, n.removed, "removed, {}", text);
            prop_assert_eq!(&o.touched, &n.touched, "touched, {}", text);
            match &o.body {
                ResponseBody::Unchanged => prop_assert!(n.edits.is_empty(), "edited {}", text),
                ResponseBody::Rewritten(want) => {
                    prop_assert!(!n.edits.is_empty(), "not edited {}", text);
                    let got = n.edits.apply(body);
                    let want: Value = serde_json::from_slice(want).expect("old output is JSON");
                    let got: Value = serde_json::from_slice(&got).map_err(|e| {
                        TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&n.edits.apply(body))))
                    })?;
                    prop_assert_eq!(want, got, "{}", text);
                    let mut in_place = body.to_vec();
                    n.edits.apply_in_place(&mut in_place);
                    prop_assert_eq!(in_place, n.edits.apply(body));
                }
            }
        }
        (o, n) => prop_assert!(false, "old {o:?}, new {n:?} on {text}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Generated Bundles and resources, compact or pretty-printed (so splices meet
    /// whitespace), confined or not, with per-entry checks, several scopes and bases.
    #[test]
    fn one_pass_decides_as_the_old_check(
        v in backend_body(),
        pretty in any::<bool>(),
        confined in any::<bool>(),
        scopes in proptest::sample::select(SCOPES),
        bases in proptest::option::of(proptest::sample::select(BASES)),
        checks in proptest::collection::vec(any::<bool>(), 0..8),
    ) {
        let body = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.expect("JSON");
        let scopes = Scopes::parse_str(scopes);
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let mut d = if confined { patient_decision() } else { Decision::default() };
        d.entry_checks = checks;
        agree(&d, &ctx, &body, bases)?;
    }

    /// Arbitrary bytes, and generated Bundles cut short or with a byte changed: both
    /// refuse alike or pass alike.
    #[test]
    fn one_pass_refuses_as_the_old_check(v in backend_body(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let scopes = Scopes::parse_str(SCOPES[0]);
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let mut body = serde_json::to_vec(&v).expect("JSON");
        let at = cut.index(body.len());
        let mut changed = body.clone();
        changed[at] = byte;
        agree(&patient_decision(), &ctx, &changed, Some(BASES[0]))?;
        body.truncate(at);
        agree(&patient_decision(), &ctx, &body, Some(BASES[0]))?;
    }
}

fn bundle_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

/// The refusals the one-pass check adds (see [`crate::one_pass`]); the old check passed
/// each of these.
#[test]
fn what_the_one_pass_check_refuses_that_the_old_one_passed() {
    let scopes = Scopes::parse_str(SCOPES[0]);
    let ctx = AccessContext {
        scopes: &scopes,
        patient: Some(OWN),
    };
    let d = patient_decision();
    let foreign = json!({"resourceType": "Observation", "subject": {"reference": "Patient/foreign-77"}});
    let twice = br#"{"resourceType":"Observation","subject":{"reference":"Patient/foreign-77"},"subject":{"reference":"Patient/own-patient-1"}}"#;
    let not_a_list = bundle_body(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": foreign}}}]}));
    let collection_in_searchset = bundle_body(
        &json!({"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
        {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": foreign}]}}]}),
    );
    for body in [&twice[..], &not_a_list] {
        assert!(response_oracle::check_and_rebase_response(&d, &ctx, body, None).is_ok());
        let err = check_and_edit_response(&d, &ctx, body, None).unwrap_err();
        assert_eq!(err.status(), 502, "{err}");
    }
    let old = response_oracle::check_and_rebase_response(&d, &ctx, &collection_in_searchset, None).unwrap();
    assert_eq!(old.body, ResponseBody::Unchanged, "the old check released it");
    let new = check_and_edit_response(&d, &ctx, &collection_in_searchset, None).unwrap();
    let out: Value = serde_json::from_slice(&new.edits.apply(&collection_in_searchset)).unwrap();
    assert_eq!(out["entry"], json!([]));
    assert_eq!(out["total"], 0);
    assert_eq!(new.removed, 1);
}

/// The bench's Bundle shape: every entry kept, only the URLs spliced, the rest of the
/// bytes as the backend sent them.
#[test]
fn a_clean_searchset_is_only_spliced() {
    let scopes = Scopes::parse_str(SCOPES[0]);
    let ctx = AccessContext {
        scopes: &scopes,
        patient: Some(OWN),
    };
    let entry = |i: u32| {
        json!({"fullUrl": format!("https://backend.example/fhir/Observation/o{i}"),
               "resource": {"resourceType": "Observation", "id": format!("o{i}"), "subject": {"reference": "Patient/own-patient-1"}}})
    };
    let v = json!({"resourceType": "Bundle", "type": "searchset", "total": 3,
        "link": [{"relation": "self", "url": "https://backend.example/fhir/Observation"}],
        "entry": [entry(1), entry(2), entry(3)]});
    let body = serde_json::to_string_pretty(&v).unwrap();
    let r = check_and_edit_response(&patient_decision(), &ctx, body.as_bytes(), Some(BASES[0])).unwrap();
    assert_eq!(r.edits.len(), 4, "three fullUrls and the self link");
    let out = String::from_utf8(r.edits.apply(body.as_bytes())).unwrap();
    assert_eq!(out, body.replace("https://backend.example/", "https://gw.example/"));
}
