//! Table of request cases: method, URL, body, scopes, patient → decision or status.
//!
//! Requirements: EX-SEG-1 (path tricks, media types, sizes), ACL-ROLE-1 / ACL-PHR-1 (SMART
//! scopes and the patient compartment). Every row asserts one exact outcome, so a change
//! in any rule makes a row fail.

use fhir_adapter::{
    authorize, classify, AccessContext, AllowedOperation, Decision, FhirRequest, Perms, Policy, Scopes,
};

#[derive(Debug, Clone, Copy)]
enum E {
    /// Allowed as is: no rewrite, no response check, no pre-read.
    A(&'static str),
    /// Allowed with this rewritten query.
    Rw(&'static str, &'static str),
    /// Allowed with this rewritten query and a response check.
    RwChk(&'static str, &'static str),
    /// Allowed with a response check, no rewrite.
    Chk(&'static str),
    /// Allowed after a pre-read of the target.
    Pre(&'static str),
    /// Allowed with a rewritten body containing this text.
    RwBody(&'static str, &'static str),
    /// Refused with this status.
    St(u16),
}
use E::*;

#[derive(Debug, Clone, Copy)]
struct Case {
    m: &'static str,
    u: &'static str,
    b: Option<&'static str>,
    ct: Option<&'static str>,
    s: &'static str,
    p: Option<&'static str>,
    e: E,
}

const PAT: &str = "openid fhirUser launch/patient offline_access patient/*.cruds";
const PAT_RS: &str = "launch/patient patient/*.rs";
const PAT_OBS: &str = "patient/Observation.rs";
const PAT_LAB: &str = "patient/Observation.rs?category=laboratory";
const USER: &str = "openid user/*.cruds";
const SYS_RS: &str = "system/*.rs";
const D: Case = Case {
    m: "GET",
    u: "",
    b: None,
    ct: None,
    s: PAT,
    p: Some("123"),
    e: St(0),
};

const OBS_OWN: &str =
    r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/123"}}"#;
const OBS_ABS_OWN: &str =
    r#"{"resourceType":"Observation","subject":{"reference":"https://ehr.example/fhir/Patient/123"}}"#;
const OBS_OTHER: &str = r#"{"resourceType":"Observation","subject":{"reference":"Patient/456"}}"#;
const OBS_NONE: &str = r#"{"resourceType":"Observation","status":"final"}"#;
const OBS_OWN_PERF_OTHER: &str = r#"{"resourceType":"Observation","subject":{"reference":"Patient/123"},"performer":[{"reference":"Practitioner/9"},{"reference":"Patient/456"}]}"#;
const OBS_ABC_OWN: &str = r#"{"resourceType":"Observation","id":"abc","subject":{"reference":"Patient/123"}}"#;
const OBS_ABC_OTHER: &str = r#"{"resourceType":"Observation","id":"abc","subject":{"reference":"Patient/456"}}"#;
const OBS_LOGICAL: &str = r#"{"resourceType":"Observation","subject":{"type":"Patient","identifier":{"value":"x"}}}"#;
const COND_OWN: &str = r#"{"resourceType":"Condition","subject":{"reference":"Patient/123"}}"#;
const PAT_123: &str = r#"{"resourceType":"Patient","id":"123"}"#;
const PAT_456: &str = r#"{"resourceType":"Patient","id":"456"}"#;
const PAT_NOID: &str = r#"{"resourceType":"Patient"}"#;
const PAT_LINK_OTHER: &str =
    r#"{"resourceType":"Patient","id":"123","link":[{"other":{"reference":"Patient/456"},"type":"seealso"}]}"#;
const MED: &str = r#"{"resourceType":"Medication","code":{"text":"aspirin"}}"#;
const JP_STATUS: &str = r#"[{"op":"replace","path":"/status","value":"amended"}]"#;
const JP_SUBJECT: &str = r#"[{"op":"replace","path":"/subject/reference","value":"Patient/456"}]"#;
const FP_SUBJECT: &str = r#"{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Observation.subject"},{"name":"value","valueReference":{"reference":"Patient/456"}}]}]}"#;
const FP_STATUS: &str = r#"{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Observation.status"},{"name":"value","valueCode":"amended"}]}]}"#;
const JP_WHOLE: &str =
    r#"[{"op":"replace","path":"","value":{"resourceType":"Observation","subject":{"reference":"Patient/456"}}}]"#;
const FP_ADD_PERFORMER: &str = r#"{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Observation"},{"name":"name","valueString":"performer"},{"name":"value","valueReference":{"reference":"Patient/456"}}]}]}"#;
const FP_ODD_PATH: &str = r#"{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"subject"},{"name":"value","valueReference":{"reference":"Patient/456"}}]}]}"#;
const PARAMS: &str = r#"{"resourceType":"Parameters"}"#;
const BATCH_SEARCH: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?code=x"}},{"request":{"method":"GET","url":"Patient/123"}}]}"#;
const BATCH_READS: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation/abc"}},{"request":{"method":"GET","url":"Patient/123"}}]}"#;
const TX_OWN: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/123"}},"request":{"method":"POST","url":"Observation"}},{"resource":{"resourceType":"Observation","id":"abc","subject":{"reference":"Patient/123"}},"request":{"method":"PUT","url":"Observation/abc"}}]}"#;
const TX_BAD: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/123"}},"request":{"method":"POST","url":"Observation"}},{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/456"}},"request":{"method":"POST","url":"Observation"}}]}"#;
const TX_OTHER_READ: &str =
    r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/456"}}]}"#;
const TX_COLLECTION: &str = r#"{"resourceType":"Bundle","type":"collection","entry":[]}"#;
const TX_ABS: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"https://evil.example/fhir/Patient/123"}}]}"#;
const TX_DOTS: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation/../Patient/456"}}]}"#;
const TX_NESTED: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Bundle","type":"batch"},"request":{"method":"POST","url":""}}]}"#;
const TX_PATIENT_CREATE: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}"#;
const TX_WRONG_TYPE: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Condition","subject":{"reference":"Patient/123"}},"request":{"method":"POST","url":"Observation"}}]}"#;
const TX_COND_DELETE: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Observation?code=x"}}]}"#;

// One row per case reads better than rustfmt's one-field-per-line layout.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let f = Some("application/x-www-form-urlencoded");
    let jp = Some("application/json-patch+json");
    vec![
        // --- public pass-through -----------------------------------------------------------
        Case { u: "metadata", s: "", p: None, e: A("capabilities"), ..D },
        Case { u: ".well-known/smart-configuration", s: "", p: None, e: A("smart-configuration"), ..D },
        Case { m: "POST", u: "metadata", b: Some(PARAMS), e: St(405), ..D },
        Case { m: "DELETE", u: ".well-known/smart-configuration", e: St(405), ..D },
        // --- path normalisation and tricks ------------------------------------------------
        Case { u: "Patient/123", e: A("read"), ..D },
        Case { u: "Patient/123/", e: A("read"), ..D },
        Case { u: "/Patient/123", e: A("read"), ..D },
        Case { m: "HEAD", u: "Patient/123", e: A("read"), ..D },
        Case { u: "Patient/../Patient/123", e: St(400), ..D },
        Case { u: "Patient/%2e%2e/123", e: St(400), ..D },
        Case { u: "Patient/%2E/123", e: St(400), ..D },
        Case { u: "Patient/./123", e: St(400), ..D },
        Case { u: "Patient%2F123", e: St(400), ..D },
        Case { u: "Patient%2f456", e: St(400), ..D },
        Case { u: "Patient/123%2F..%2F456", e: St(400), ..D },
        Case { u: "Patient//123", e: St(400), ..D },
        Case { u: "Patient\\456", e: St(400), ..D },
        Case { u: "Patient/%5C456", e: St(400), ..D },
        Case { u: "patient/123", e: St(400), ..D },
        Case { u: "PATIENT/123", e: St(400), ..D },
        Case { u: "observation?code=x", e: St(400), ..D },
        Case { u: "Foo/1", e: St(400), ..D },
        Case { u: "Patient/123%00", e: St(400), ..D },
        Case { u: "Patient/12%0A3", e: St(400), ..D },
        Case { u: "Patient/1%zz", e: St(400), ..D },
        Case { u: "Patient/a_b", e: St(400), ..D },
        Case { u: "Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", e: St(400), ..D },
        // `%2E` decodes to a legal id character: `123.` is another patient.
        Case { u: "Patient/123%2E", e: St(404), ..D },
        Case { u: "Patient/12%33", e: A("read"), ..D },
        Case { u: "Patient/123/foo/bar/baz", e: St(400), ..D },
        Case { u: "Patient/123/Foo", e: St(400), ..D },
        Case { m: "DELETE", u: "", e: St(405), ..D },
        Case { m: "POST", u: "Patient/123", b: Some(PAT_123), e: St(405), ..D },
        Case { u: "Observation/$bad!name", e: St(400), ..D },
        Case { u: "Observation?code=%G1", e: St(400), ..D },
        Case { u: "Observation?code=%00", e: St(400), ..D },
        // --- Patient resource under patient/ scopes --------------------------------------
        Case { u: "Patient/123/_history/2", e: A("vread"), ..D },
        Case { u: "Patient/123/_history", e: A("history-instance"), ..D },
        Case { u: "Patient/456", e: St(404), ..D },
        Case { u: "Patient/456/_history", e: St(404), ..D },
        Case { u: "Patient/456/_history/1", e: St(404), ..D },
        // --- reads of compartment resources by id need the response check ---------------
        Case { u: "Observation/abc", e: Chk("read"), ..D },
        Case { u: "Observation/abc/_history/1", e: Chk("vread"), ..D },
        Case { u: "Observation/abc/_history", e: Chk("history-instance"), ..D },
        Case { u: "Observation/_history", e: Chk("history-type"), ..D },
        Case { u: "_history", e: St(403), ..D },
        Case { u: "_history", s: USER, e: A("history-system"), ..D },
        Case { u: "?_type=Observation", e: St(403), ..D },
        Case { u: "?_type=Observation", s: USER, e: A("search-system"), ..D },
        // --- search confinement ------------------------------------------------------------
        Case { u: "Observation", e: Rw("search-type", "subject=Patient/123"), ..D },
        Case { u: "Observation?code=1234-5", e: Rw("search-type", "code=1234-5&subject=Patient/123"), ..D },
        Case { u: "Observation?code=a%26b", e: Rw("search-type", "code=a%26b&subject=Patient/123"), ..D },
        Case { u: "Observation?subject=Patient/123", e: A("search-type"), ..D },
        Case { u: "Observation?patient=123", e: A("search-type"), ..D },
        Case { u: "Observation?patient=Patient/123", e: A("search-type"), ..D },
        Case { u: "Observation?subject:Patient=123", e: A("search-type"), ..D },
        Case { u: "Observation?subject=https://ehr.example/fhir/Patient/123", e: A("search-type"), ..D },
        Case { u: "Observation?performer=Patient/123", e: A("search-type"), ..D },
        Case { u: "Observation?patient=456", e: St(403), ..D },
        Case { u: "Observation?subject=Patient/456", e: St(403), ..D },
        Case { u: "Observation?subject:Patient=456", e: St(403), ..D },
        Case { u: "Observation?patient:Patient.identifier=urn:sys|1", e: St(403), ..D },
        Case { u: "Observation?subject.name=smith", e: St(403), ..D },
        Case { u: "Observation?patient.identifier=x", e: St(403), ..D },
        Case { u: "Observation?patient:identifier=x", e: St(403), ..D },
        Case { u: "Observation?subject:not=Patient/123", e: St(403), ..D },
        Case { u: "Observation?subject=Patient/123,Patient/456", e: St(403), ..D },
        Case { u: "Observation?subject=456", e: St(403), ..D },
        Case { u: "Observation?performer=Patient/456", e: St(403), ..D },
        Case { u: "Observation?subject=Patient/123&subject=Patient/456", e: St(403), ..D },
        Case { u: "Patient?_has:Observation:patient:code=1234", e: St(403), ..D },
        Case { u: "Observation?_has:Provenance:target:agent=x", e: St(403), ..D },
        Case { u: "Observation?_filter=subject%20eq%20Patient/456", e: St(403), ..D },
        Case { u: "Observation?_query=everything", e: St(403), ..D },
        Case { u: "Observation?_include=Observation:performer", e: RwChk("search-type", "_include=Observation:performer&subject=Patient/123"), ..D },
        Case { u: "Observation?_revinclude=Provenance:target", e: RwChk("search-type", "_revinclude=Provenance:target&subject=Patient/123"), ..D },
        Case { u: "Observation?_include=*", e: St(403), ..D },
        Case { u: "Observation?_include:iterate=Observation:has-member", e: St(403), ..D },
        Case { u: "Observation?performer=Practitioner/9", e: Rw("search-type", "performer=Practitioner/9&subject=Patient/123"), ..D },
        Case { u: "Observation?subject:missing=true", e: Rw("search-type", "subject:missing=true&subject=Patient/123"), ..D },
        Case { u: "Observation?subject:Group=g1", e: Rw("search-type", "subject:Group=g1&subject=Patient/123"), ..D },
        Case { u: "Observation?_id=abc", e: Rw("search-type", "_id=abc&subject=Patient/123"), ..D },
        Case { u: "Observation?encounter.status=finished", e: Rw("search-type", "encounter.status=finished&subject=Patient/123"), ..D },
        Case { u: "Condition", e: Rw("search-type", "patient=Patient/123"), ..D },
        Case { u: "MedicationRequest?status=active", e: Rw("search-type", "status=active&subject=Patient/123"), ..D },
        Case { u: "Encounter", e: Rw("search-type", "patient=Patient/123"), ..D },
        Case { u: "AllergyIntolerance", e: Rw("search-type", "patient=Patient/123"), ..D },
        Case { u: "DocumentReference", e: Rw("search-type", "subject=Patient/123"), ..D },
        Case { u: "Group", e: Rw("search-type", "member=Patient/123"), ..D },
        Case { u: "Coverage", e: Rw("search-type", "beneficiary=Patient/123"), ..D },
        Case { u: "Appointment?date=2024", e: Rw("search-type", "date=2024&actor=Patient/123"), ..D },
        Case { u: "Patient", e: Rw("search-type", "_id=123"), ..D },
        Case { u: "Patient?_id=123", e: A("search-type"), ..D },
        Case { u: "Patient?_id=456", e: St(403), ..D },
        Case { u: "Patient?_id=123,456", e: St(403), ..D },
        Case { u: "Patient?_id:not=123", e: St(403), ..D },
        Case { u: "Patient?_id:missing=false", e: St(403), ..D },
        Case { u: "Patient?name=taro", e: Rw("search-type", "name=taro&_id=123"), ..D },
        Case { u: "Patient?link=Patient/456", e: St(403), ..D },
        // --- non-compartment types -----------------------------------------------------------
        Case { u: "Medication?code=x", e: A("search-type"), ..D },
        Case { u: "Practitioner", e: A("search-type"), ..D },
        Case { u: "Organization/1", e: A("read"), ..D },
        Case { u: "Practitioner?_revinclude=Observation:performer", e: Chk("search-type"), ..D },
        Case { u: "Device?patient=456", e: St(403), ..D },
        Case { u: "Practitioner?_has:Observation:performer:subject=Patient/456", e: St(403), ..D },
        // --- compartment searches ------------------------------------------------------------
        Case { u: "Patient/123/Observation", e: A("search-compartment"), ..D },
        Case { u: "Patient/123/Observation?code=x", e: A("search-compartment"), ..D },
        Case { u: "Patient/456/Observation", e: St(403), ..D },
        Case { u: "Patient/123/Observation?subject=Patient/456", e: St(403), ..D },
        Case { u: "Patient/123/*", e: Chk("search-compartment"), ..D },
        Case { u: "Encounter/1/Observation", e: St(403), ..D },
        Case { u: "Encounter/1/Observation", s: USER, e: A("search-compartment"), ..D },
        Case { m: "POST", u: "Patient/123/Observation/_search", b: Some("code=x"), ct: f, e: A("search-compartment"), ..D },
        // --- POST _search ------------------------------------------------------------------
        Case { m: "POST", u: "Observation/_search", b: Some("code=x"), ct: f, e: RwBody("search-type", "code=x&subject=Patient/123"), ..D },
        Case { m: "POST", u: "Observation/_search", b: Some("subject=Patient%2F123"), ct: f, e: A("search-type"), ..D },
        Case { m: "POST", u: "Observation/_search", b: Some("subject=Patient%2F456"), ct: f, e: St(403), ..D },
        Case { m: "POST", u: "Observation/_search", b: Some("_format=xml"), ct: f, e: St(415), ..D },
        Case { m: "POST", u: "Observation/_search", b: Some(r#"{"code":"x"}"#), ct: Some("application/json"), e: St(415), ..D },
        Case { m: "GET", u: "Observation/_search", e: St(405), ..D },
        // --- payload rules -------------------------------------------------------------------
        Case { u: "Observation?_format=xml", e: St(415), ..D },
        Case { u: "Observation?_format=application/fhir%2Bxml", e: St(415), ..D },
        Case { u: "Observation?_format=text/xml", e: St(415), ..D },
        Case { u: "Patient/123?_format=json", e: A("read"), ..D },
        Case { u: "Patient/123?_format=application/fhir%2Bjson", e: A("read"), ..D },
        Case { m: "POST", u: "Observation", b: Some("<Observation/>"), ct: Some("application/fhir+xml"), e: St(415), ..D },
        Case { m: "POST", u: "Observation", b: Some("<Observation/>"), ct: Some("text/xml"), e: St(415), ..D },
        Case { m: "POST", u: "Observation", b: Some("<Observation/>"), ct: Some("application/xml"), e: St(415), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), ct: Some(""), e: St(415), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), ct: Some("application/fhir+json; charset=utf-8"), e: A("create"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), ct: Some("application/json; fhirVersion=4.0"), e: A("create"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), ct: Some("application/fhir+json; fhirVersion=3.0"), e: St(415), ..D },
        Case { m: "POST", u: "Observation", b: Some("{not json"), e: St(400), ..D },
        Case { m: "POST", u: "Observation", b: Some(COND_OWN), e: St(400), ..D },
        Case { m: "POST", u: "Observation", b: Some(r#"{"status":"final"}"#), e: St(400), ..D },
        Case { m: "POST", u: "Observation", e: St(400), ..D },
        // --- writes under patient/ scopes ---------------------------------------------------
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), e: A("create"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_ABS_OWN), e: A("create"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OTHER), e: St(403), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_NONE), e: St(403), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN_PERF_OTHER), e: St(403), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_LOGICAL), e: St(403), ..D },
        Case { m: "POST", u: "Condition", b: Some(COND_OWN), e: A("create"), ..D },
        Case { m: "POST", u: "Medication", b: Some(MED), e: A("create"), ..D },
        Case { m: "POST", u: "Patient", b: Some(PAT_NOID), e: St(403), ..D },
        Case { m: "POST", u: "Patient", b: Some(PAT_NOID), s: USER, e: A("create"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OTHER), s: USER, e: A("create"), ..D },
        Case { m: "PUT", u: "Patient/123", b: Some(PAT_123), e: A("update"), ..D },
        Case { m: "PUT", u: "Patient/123", b: Some(PAT_456), e: St(400), ..D },
        Case { m: "PUT", u: "Patient/123", b: Some(PAT_NOID), e: St(400), ..D },
        Case { m: "PUT", u: "Patient/456", b: Some(PAT_456), e: St(403), ..D },
        Case { m: "PUT", u: "Patient/123", b: Some(PAT_LINK_OTHER), e: St(403), ..D },
        Case { m: "PUT", u: "Observation/abc", b: Some(OBS_ABC_OWN), e: Pre("update"), ..D },
        Case { m: "PUT", u: "Observation/abc", b: Some(OBS_ABC_OTHER), e: St(403), ..D },
        Case { m: "PUT", u: "Observation/xyz", b: Some(OBS_ABC_OWN), e: St(400), ..D },
        Case { m: "PUT", u: "Observation?identifier=x", b: Some(OBS_OWN), e: St(403), ..D },
        Case { m: "PUT", u: "Observation?identifier=x", b: Some(OBS_OWN), s: USER, e: A("update"), ..D },
        Case { m: "PUT", u: "Observation", b: Some(OBS_OWN), e: St(400), ..D },
        Case { m: "DELETE", u: "Observation/abc", e: Pre("delete"), ..D },
        Case { m: "DELETE", u: "Observation/abc", s: PAT_RS, e: St(403), ..D },
        Case { m: "DELETE", u: "Observation?code=x", e: St(403), ..D },
        Case { m: "DELETE", u: "Medication/1", e: A("delete"), ..D },
        Case { m: "DELETE", u: "Medication?code=x", e: A("delete"), ..D },
        Case { m: "DELETE", u: "Medication/1", s: PAT_RS, e: St(403), ..D },
        Case { m: "PUT", u: "Patient?identifier=x", b: Some(PAT_123), e: St(403), ..D },
        Case { m: "DELETE", u: "Patient/123", e: A("delete"), ..D },
        Case { m: "DELETE", u: "Patient/456", e: St(403), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(JP_STATUS), ct: jp, e: Pre("patch"), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(JP_SUBJECT), ct: jp, e: St(403), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(FP_STATUS), e: Pre("patch"), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(FP_SUBJECT), e: St(403), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(JP_WHOLE), ct: jp, e: St(403), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(FP_ADD_PERFORMER), e: St(403), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(FP_ODD_PATH), e: St(403), ..D },
        Case { m: "PATCH", u: "Medication/1", b: Some(JP_WHOLE), ct: jp, e: A("patch"), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(OBS_ABC_OWN), e: St(400), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(OBS_ABC_OWN), ct: jp, e: St(400), ..D },
        Case { m: "PATCH", u: "Observation/abc", b: Some(JP_SUBJECT), ct: jp, s: USER, e: A("patch"), ..D },
        // --- operations ----------------------------------------------------------------------
        Case { u: "Patient/123/$everything", e: Chk("operation"), ..D },
        Case { u: "Patient/456/$everything", e: St(403), ..D },
        Case { u: "Patient/$everything", e: St(403), ..D },
        Case { u: "Patient/123/$everything", s: PAT_OBS, e: St(403), ..D },
        Case { u: "Patient/456/$everything", s: USER, e: A("operation"), ..D },
        Case { u: "$export", s: SYS_RS, p: None, e: A("operation"), ..D },
        Case { u: "$export", e: St(403), ..D },
        Case { u: "Patient/$export", s: USER, e: A("operation"), ..D },
        Case { u: "Group/g1/$export?_type=Observation", s: "system/Observation.rs", p: None, e: A("operation"), ..D },
        Case { u: "Group/g1/$export?_type=Observation,Condition", s: "system/Observation.rs", p: None, e: St(403), ..D },
        Case { m: "POST", u: "Observation/$validate", b: Some(OBS_OTHER), e: A("operation"), ..D },
        Case { u: "Observation/abc/$validate", e: Pre("operation"), ..D },
        Case { m: "POST", u: "$frobnicate", b: Some(PARAMS), s: USER, e: St(403), ..D },
        Case { u: "Observation/$lastn?code=x", e: Chk("operation"), ..D },
        Case { u: "Patient/456/$lastn", e: St(403), ..D },
        Case { m: "DELETE", u: "Patient/123/$everything", e: St(405), ..D },
        // --- granular and v1 scopes ------------------------------------------------------------
        Case { u: "Observation?category=laboratory", s: PAT_LAB, e: Rw("search-type", "category=laboratory&subject=Patient/123"), ..D },
        Case { u: "Observation?category=vital-signs", s: PAT_LAB, e: St(403), ..D },
        Case { u: "Observation?category=laboratory,vital-signs", s: PAT_LAB, e: St(403), ..D },
        Case { u: "Observation?code=x", s: PAT_LAB, e: St(403), ..D },
        Case { u: "Observation/abc", s: PAT_LAB, e: St(403), ..D },
        Case { u: "Observation/abc", s: "patient/*.read", e: Chk("read"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), s: "patient/*.read", e: St(403), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), s: "patient/Observation.write", e: A("create"), ..D },
        Case { m: "DELETE", u: "Observation/abc", s: "patient/*.*", e: Pre("delete"), ..D },
        Case { u: "Observation", s: "patient/Observation.sr", e: St(403), ..D },
        Case { u: "Observation", s: "patient/Condition.rs", e: St(403), ..D },
        Case { u: "Observation", s: "openid fhirUser", e: St(403), ..D },
        Case { u: "Observation", p: None, e: St(403), ..D },
        Case { u: "Observation?patient=456", s: USER, e: A("search-type"), ..D },
        Case { u: "Observation/abc", s: SYS_RS, p: None, e: A("read"), ..D },
        Case { m: "POST", u: "Observation", b: Some(OBS_OWN), s: SYS_RS, p: None, e: St(403), ..D },
        // --- batch / transaction -----------------------------------------------------------------
        Case { m: "POST", u: "", b: Some(BATCH_SEARCH), e: RwBody("batch", "Observation?code=x&subject=Patient/123"), ..D },
        Case { m: "POST", u: "", b: Some(BATCH_READS), e: Chk("batch"), ..D },
        Case { m: "POST", u: "", b: Some(TX_OWN), e: Pre("transaction"), ..D },
        Case { m: "POST", u: "", b: Some(TX_BAD), e: St(403), ..D },
        Case { m: "POST", u: "", b: Some(TX_OTHER_READ), e: St(404), ..D },
        Case { m: "POST", u: "", b: Some(TX_PATIENT_CREATE), e: St(403), ..D },
        Case { m: "POST", u: "", b: Some(TX_COND_DELETE), e: St(403), ..D },
        Case { m: "POST", u: "", b: Some(TX_COLLECTION), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(TX_ABS), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(TX_DOTS), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(TX_NESTED), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(TX_WRONG_TYPE), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(OBS_OWN), e: St(400), ..D },
        Case { m: "POST", u: "", b: Some(TX_BAD), s: USER, e: A("transaction"), ..D },
    ]
}

fn policy() -> Policy {
    Policy {
        allowed_operations: vec![AllowedOperation {
            name: "lastn".into(),
            permission: Perms::S,
        }],
        ..Policy::default()
    }
}

fn run(case: &Case) -> Result<(String, Decision), u16> {
    let (path, query) = match case.u.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (case.u, None),
    };
    let ct = match (case.ct, case.b) {
        (Some(""), _) => None,
        (Some(ct), _) => Some(ct),
        (None, Some(_)) => Some("application/fhir+json"),
        (None, None) => None,
    };
    let req = FhirRequest {
        method: case.m,
        path,
        query,
        content_type: ct,
        body: case.b.map(str::as_bytes),
    };
    let policy = policy();
    let c = classify(&req, &policy.limits).map_err(|e| e.status())?;
    let scopes = Scopes::parse_str(case.s);
    let ctx = AccessContext {
        scopes: &scopes,
        patient: case.p,
    };
    let d = authorize(&c, &ctx, &policy).map_err(|e| e.status())?;
    Ok((c.interaction.as_str().to_owned(), d))
}

fn check(case: &Case) -> Result<(), String> {
    let got = run(case);
    let fail = |why: &str| Err(format!("{} {} [{}]: {why}; got {got:?}", case.m, case.u, case.s));
    match (case.e, &got) {
        (St(want), Err(status)) if want == *status => Ok(()),
        (St(_), _) => fail("wrong status"),
        (_, Err(_)) => fail("expected allow"),
        (e, Ok((interaction, d))) => {
            let (want_i, rw, chk, pre, body) = match e {
                A(i) => (i, None, false, false, None),
                Rw(i, q) => (i, Some(q), false, false, None),
                RwChk(i, q) => (i, Some(q), true, false, None),
                Chk(i) => (i, None, true, false, None),
                Pre(i) => (i, None, false, true, None),
                RwBody(i, b) => (i, None, false, false, Some(b)),
                St(_) => unreachable!(),
            };
            if interaction != want_i {
                return fail("wrong interaction");
            }
            if body.is_none() && d.rewritten_query.as_deref() != rw {
                return fail("wrong rewritten query");
            }
            if d.response_check != chk {
                return fail("wrong response_check");
            }
            if d.pre_reads.is_empty() == pre {
                return fail("wrong pre_reads");
            }
            match (body, &d.rewritten_body) {
                (None, None) => {}
                (Some(want), Some(b)) if String::from_utf8_lossy(b).contains(want) => {}
                _ => return fail("wrong rewritten body"),
            }
            Ok(())
        }
    }
}

#[test]
fn every_case_in_the_request_table_is_classified_as_expected() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn table_size_is_reported() {
    // The table is one test; this keeps its size visible in CI output.
    println!("request cases: {}", cases().len());
    assert!(cases().len() >= 100);
}
