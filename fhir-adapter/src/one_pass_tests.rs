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
use proptest::test_runner::Config as ProptestConfig;
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

/// How [`write`] lays a generated document out: the same JSON value, in the forms a
/// backend may send.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// `resourceType` and `type` before the other members (as servers write them, and
    /// what lets the check decide a result Bundle's entries while it reads them), or
    /// the members sorted (`entry` before `type`: the whole list is recorded first).
    type_first: bool,
    /// Whitespace between tokens.
    pretty: bool,
    /// Escape `/` as `\/` and every `n`th letter as `\u00XX`, in names and values.
    escape_every: Option<usize>,
    /// Write the first member of the `n`th object (counting in document order, objects
    /// under `request` left out) twice.
    duplicate: Option<usize>,
}

struct Writer {
    layout: Layout,
    out: String,
    letters: usize,
    objects: usize,
    duplicated: bool,
}

/// `v` as JSON text laid out as `layout` says.
fn write(v: &Value, layout: Layout) -> (Vec<u8>, bool) {
    let mut w = Writer {
        layout,
        out: String::new(),
        letters: 0,
        objects: 0,
        duplicated: false,
    };
    w.value(v, false);
    (w.out.into_bytes(), w.duplicated)
}

impl Writer {
    fn space(&mut self) {
        if self.layout.pretty {
            self.out.push_str("\n  ");
        }
    }

    fn string(&mut self, s: &str) {
        let Some(n) = self.layout.escape_every else {
            self.out.push_str(&serde_json::to_string(s).expect("a string"));
            return;
        };
        let plain = serde_json::to_string(s).expect("a string");
        let inner = &plain[1..plain.len() - 1];
        self.out.push('"');
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    // An escape serde_json wrote: keep it whole.
                    self.out.push(c);
                    self.out.extend(chars.next());
                }
                '/' => self.out.push_str("\\/"),
                c if c.is_ascii_alphabetic() => {
                    self.letters += 1;
                    if self.letters.is_multiple_of(n) {
                        self.out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        self.out.push(c);
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &Value, under_request: bool) {
        match v {
            Value::Object(m) => {
                let mut names: Vec<&String> = m.keys().collect();
                if self.layout.type_first {
                    names.sort_by_key(|k| !matches!(k.as_str(), "resourceType" | "type"));
                }
                let dup = !under_request && Some(self.objects) == self.layout.duplicate && !names.is_empty();
                if !under_request {
                    self.objects += 1;
                }
                if dup {
                    self.duplicated = true;
                    names.insert(0, names[0]);
                }
                self.out.push('{');
                for (i, k) in names.into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.string(k);
                    self.out.push_str(if self.layout.pretty { " : " } else { ":" });
                    self.value(&m[k], under_request || k == "request");
                }
                self.space();
                self.out.push('}');
            }
            Value::Array(a) => {
                self.out.push('[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.value(item, under_request);
                }
                self.space();
                self.out.push(']');
            }
            Value::String(s) => self.string(s),
            other => self.out.push_str(&other.to_string()),
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    (any::<bool>(), any::<bool>(), proptest::option::of(1usize..5)).prop_map(|(type_first, pretty, escape_every)| {
        Layout {
            type_first,
            pretty,
            escape_every,
            duplicate: None,
        }
    })
}

/// More cases than the other properties: each is cheap, and these compare the check
/// that guards every FHIR response with the implementation it replaced.
fn more_cases() -> ProptestConfig {
    let base = config();
    ProptestConfig {
        cases: base.cases * 4,
        // A nested collection in a result Bundle (a decision the old check did not
        // make) is set aside; about one case in fifteen.
        max_global_rejects: base.cases * 4,
        ..base
    }
}

proptest! {
    #![proptest_config(more_cases())]

    /// Generated Bundles and resources, laid out as a backend may (member order,
    /// whitespace so that splices meet it, escapes in names and values), confined or
    /// not, with per-entry checks, several scopes and bases.
    #[test]
    fn one_pass_decides_as_the_old_check(
        v in backend_body(),
        layout in layout(),
        confined in any::<bool>(),
        scopes in proptest::sample::select(SCOPES),
        bases in proptest::option::of(proptest::sample::select(BASES)),
        checks in proptest::collection::vec(any::<bool>(), 0..8),
    ) {
        let (body, _) = write(&v, layout);
        let scopes = Scopes::parse_str(scopes);
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let mut d = if confined { patient_decision() } else { Decision::default() };
        d.entry_checks = checks;
        agree(&d, &ctx, &body, bases)?;
    }

    /// Generated Bundles cut short or with a byte changed: both refuse alike or pass
    /// alike.
    #[test]
    fn one_pass_refuses_as_the_old_check(
        v in backend_body(),
        layout in layout(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let scopes = Scopes::parse_str(SCOPES[0]);
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let (mut body, _) = write(&v, layout);
        let at = cut.index(body.len());
        let mut changed = body.clone();
        changed[at] = byte;
        agree(&patient_decision(), &ctx, &changed, Some(BASES[0]))?;
        body.truncate(at);
        agree(&patient_decision(), &ctx, &body, Some(BASES[0]))?;
    }
}

proptest! {
    #![proptest_config(more_cases())]

    /// Any object the check reads that names a member twice is refused (502), in any
    /// layout, confined or not; the old check kept the last one.
    #[test]
    fn a_member_named_twice_is_refused(v in backend_body(), layout in layout(), which in any::<prop::sample::Index>(), confined in any::<bool>()) {
        let objects = {
            let mut w = Writer { layout, out: String::new(), letters: 0, objects: 0, duplicated: false };
            w.value(&v, false);
            w.objects
        };
        let layout = Layout { duplicate: Some(which.index(objects)), ..layout };
        let (body, duplicated) = write(&v, layout);
        prop_assume!(duplicated);
        let scopes = Scopes::parse_str(SCOPES[0]);
        let ctx = AccessContext { scopes: &scopes, patient: Some(OWN) };
        let d = if confined { patient_decision() } else { Decision::default() };
        let err = check_and_edit_response(&d, &ctx, &body, Some(BASES[0])).map(|_| ()).unwrap_err();
        prop_assert_eq!(err.status(), 502, "{}", String::from_utf8_lossy(&body));
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

/// Not a test: a fixed workload for counting the check's instructions (issue 23, target
/// 2) under callgrind, without a gateway around it. `PHR_CHECK_BODY` names a result
/// Bundle of patient `p1` with its URLs on `https://backend.example/fhir` (as
/// `bench/pipeline/make_fhir.py /tmp/docs https://backend.example 0` writes to
/// `/tmp/docs/fhir/Observation`); `PHR_CHECK_RUNS` checks are run (100 by default).
#[test]
#[ignore = "a measurement, run by hand under callgrind"]
fn searchset_check_workload() {
    let Ok(path) = std::env::var("PHR_CHECK_BODY") else {
        eprintln!("PHR_CHECK_BODY is not set: nothing to measure");
        return;
    };
    let body = std::fs::read(path).expect("PHR_CHECK_BODY");
    let runs: usize = std::env::var("PHR_CHECK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let scopes = Scopes::parse_str("launch/patient patient/*.rs");
    let ctx = AccessContext {
        scopes: &scopes,
        patient: Some("p1"),
    };
    let d = Decision {
        response_check: true,
        patient: Some("p1".to_owned()),
        ..Decision::default()
    };
    let bases = Bases {
        backend: "https://backend.example/fhir",
        public: "https://gw.example/fhir",
        unprefixed: None,
    };
    let mut edits = 0;
    for _ in 0..runs {
        let r = check_and_edit_response(&d, &ctx, std::hint::black_box(&body), Some(bases)).unwrap();
        assert_eq!(r.removed, 0);
        edits += r.edits.len();
    }
    assert!(edits > 0, "the URLs were on the backend's base");
}
