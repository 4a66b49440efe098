//! FHIR `OperationOutcome` bodies for errors the gateway itself produces.
//!
//! Requirements: EX-SEG-1 (one error shape on FHIR routes, produced in one place, so no
//! backend detail leaks through ad-hoc error pages), LOG-ACC-1 (the request id in the body
//! lets a patient or clinic quote it, and the operator find the access record).
//!
//! Why the request id appears twice: `issue[0].diagnostics` is what FHIR clients show to
//! humans, the extension is what machines can read without parsing text. `id` is set too
//! when the request id happens to be a valid FHIR id (a UUID is).

use crate::error::FhirError;
use crate::normalize::is_valid_id;
use serde_json::{json, Value};

/// Extension URL carrying the gateway request id.
pub const REQUEST_ID_EXTENSION: &str = "urn:phr-gateway:fhir:extension:request-id";

/// The OperationOutcome `issue.code` for an HTTP status the gateway answers with.
pub fn issue_code_for_status(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid",
        401 => "security",
        403 => "forbidden",
        404 | 410 => "not-found",
        405 | 406 | 415 => "not-supported",
        409 | 412 => "conflict",
        413 => "too-long",
        429 => "throttled",
        502 | 503 => "transient",
        504 => "timeout",
        400..=499 => "invalid",
        _ => "exception",
    }
}

pub(crate) fn operation_outcome_value(status: u16, code: &str, diagnostics: &str, request_id: Option<&str>) -> Value {
    let severity = if status >= 500 { "fatal" } else { "error" };
    let mut issue = json!({
        "severity": severity,
        "code": code,
        "diagnostics": match request_id {
            Some(r) => format!("{diagnostics} (request id: {r})"),
            None => diagnostics.to_owned(),
        },
    });
    if status == 401 {
        // `security` is the code; the finer "login" goes in details, as R4 allows.
        issue["details"] = json!({"text": "authentication required (login)"});
    }
    let mut oo = json!({"resourceType": "OperationOutcome"});
    if let Some(r) = request_id {
        if is_valid_id(r) {
            oo["id"] = Value::String(r.to_owned());
        }
        oo["extension"] = json!([{"url": REQUEST_ID_EXTENSION, "valueString": r}]);
    }
    oo["issue"] = json!([issue]);
    oo
}

/// Builds the OperationOutcome JSON for a gateway-made error.
pub fn operation_outcome(status: u16, code: &str, diagnostics: &str, request_id: &str) -> Vec<u8> {
    let rid = (!request_id.is_empty()).then_some(request_id);
    serde_json::to_vec(&operation_outcome_value(status, code, diagnostics, rid)).expect("a Value always serialises")
}

/// Status and OperationOutcome body for an adapter error.
pub fn error_response(err: &FhirError, request_id: &str) -> (u16, Vec<u8>) {
    let status = err.status();
    (
        status,
        operation_outcome(status, err.issue_code(), &err.to_string(), request_id),
    )
}
