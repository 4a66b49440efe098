//! The one error type of the adapter.
//!
//! Requirements: EX-SEG-1 (every refusal of the L7 filter is explicit and typed, so the
//! gateway never "falls back to allow"), ACL-ROLE-1 / ACL-PHR-1 (scope and compartment
//! refusals say which permission or patient was the problem), LOG-ACC-1 (the variant is
//! what the access record stores as the reason for a refusal).
//!
//! Why an enum with data rather than strings: the gateway's single "rescue" function maps
//! each variant to a status and an OperationOutcome issue code without parsing text, and
//! tests can assert the exact reason. The `Display` text is meant for the client: it says
//! what was wrong and how to fix it, and never echoes data of another patient beyond the id
//! the client itself sent.

use std::fmt;

/// Where a control character or bad escape was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The request path.
    Path,
    /// The query string or form body.
    Query,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Path => "path",
            Part::Query => "query",
        })
    }
}

/// Everything the adapter can refuse. Each variant maps to one HTTP status
/// ([`FhirError::status`]) and one OperationOutcome issue code ([`FhirError::issue_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // variant fields are named for what they hold
pub enum FhirError {
    // ---- 400: the request is malformed or ambiguous -------------------------------------
    /// `%` not followed by two hex digits.
    BadPercentEncoding { part: Part },
    /// NUL or another control character, raw or percent-encoded.
    ControlCharacter { part: Part },
    /// `%2F` / `%5C` or a raw backslash inside a segment: would split differently upstream.
    EncodedSeparator,
    /// `.` or `..` (raw or percent-encoded) as a path segment.
    DotSegment,
    /// `//` inside the path.
    EmptySegment,
    /// A segment where a resource type belongs is not an R4 resource type.
    UnknownResourceType { name: String },
    /// The type exists but with other capitalisation (`patient`).
    WrongCaseResourceType { given: String, expected: &'static str },
    /// Not a valid FHIR logical id (`[A-Za-z0-9-.]{1,64}`).
    InvalidId { id: String },
    /// Not a valid operation name after `$`.
    InvalidOperationName { name: String },
    /// The path has no FHIR REST meaning (`Patient/1/foo/bar`).
    UnsupportedPath { path: String },
    /// Conditional update/patch/delete on a type without search parameters.
    ConditionalWithoutCriteria { method: String },
    /// The interaction needs a body and none was sent.
    MissingBody,
    /// Body is not valid JSON.
    InvalidJson { detail: String },
    /// Body JSON has no string `resourceType`.
    NotAResource,
    /// `resourceType` in the body differs from the type in the URL.
    ResourceTypeMismatch { expected: &'static str, found: String },
    /// Update: body `id` missing or different from the id in the URL.
    IdMismatch { url_id: String, body_id: Option<String> },
    /// A Bundle posted to the base is not a batch or transaction, or is malformed.
    InvalidBundle { detail: String },
    /// A malformed patch document.
    InvalidPatch { detail: String },
    // ---- 404 -----------------------------------------------------------------------------
    /// A read (read, vread, HEAD, `_history`) under a `patient/` scope of a resource that
    /// does not exist **or** lies outside the token's compartment: the two are answered
    /// alike, so a patient's token learns nothing about other patients' resources
    /// (ACL-PHR-1). `resource` is the path the client itself sent (`Observation/abc`).
    NotFound { resource: String },
    // ---- 405 -----------------------------------------------------------------------------
    /// The method is not defined for this path.
    MethodNotAllowed { method: String, path: String },
    // ---- 413 -----------------------------------------------------------------------------
    /// Body larger than the configured limit.
    BodyTooLarge { limit: usize, actual: usize },
    /// More Bundle entries than the configured limit.
    TooManyEntries { limit: usize, actual: usize },
    // ---- 415 -----------------------------------------------------------------------------
    /// Content type other than FHIR JSON (XML included).
    UnsupportedMediaType { content_type: String },
    /// `_format` asks for something other than JSON.
    UnsupportedFormat { format: String },
    // ---- 403: well-formed but not permitted ------------------------------------------------
    /// No scope grants `permission` (one of `c r u d s`) on `resource_type`; `family` is
    /// the token's scope family ([`crate::Scopes::family`]), named in the hint.
    ScopeMissing {
        permission: char,
        resource_type: String,
        family: crate::scopes::Level,
    },
    /// Only a granular scope (`...rs?category=x`) could grant this, and the request does
    /// not carry its parameters (or is not a search); `family` is that scope's.
    ScopeConstraintUnmet {
        permission: char,
        family: crate::scopes::Level,
        resource_type: String,
        constraint: String,
    },
    /// A `patient/` scope is in force but the token has no `patient` launch context.
    NoPatientContext,
    /// The request names a patient other than the token's patient.
    OtherPatient { patient: String },
    /// A write body does not reference the token's patient (or references another one).
    WriteNotForPatient { resource_type: &'static str },
    /// Creating a `Patient` under a `patient/` scope.
    PatientCreateForbidden,
    /// A search parameter that could reach beyond the patient compartment.
    ForbiddenSearchParameter { param: String, reason: &'static str },
    /// The interaction cannot be confined to a patient (system history, system search,
    /// conditional writes, other compartments, bulk export).
    NotAllowedForPatientScope { interaction: &'static str },
    /// An `$operation` not on the allow list.
    OperationNotAllowed { name: String },
    /// An entry of a batch/transaction was refused; the whole Bundle is refused.
    BundleEntry { index: usize, error: Box<FhirError> },
    /// A resource in the backend's answer belongs to another patient.
    ResponseOtherPatient { resource_type: String },
    // ---- 502 -----------------------------------------------------------------------------
    /// The backend's answer could not be checked (not JSON, not a resource).
    InvalidUpstreamResponse { detail: String },
}

impl FhirError {
    /// HTTP status the gateway answers with.
    pub fn status(&self) -> u16 {
        use FhirError::*;
        match self {
            BadPercentEncoding { .. }
            | ControlCharacter { .. }
            | EncodedSeparator
            | DotSegment
            | EmptySegment
            | UnknownResourceType { .. }
            | WrongCaseResourceType { .. }
            | InvalidId { .. }
            | InvalidOperationName { .. }
            | UnsupportedPath { .. }
            | ConditionalWithoutCriteria { .. }
            | MissingBody
            | InvalidJson { .. }
            | NotAResource
            | ResourceTypeMismatch { .. }
            | IdMismatch { .. }
            | InvalidBundle { .. }
            | InvalidPatch { .. } => 400,
            NotFound { .. } => 404,
            MethodNotAllowed { .. } => 405,
            BodyTooLarge { .. } | TooManyEntries { .. } => 413,
            UnsupportedMediaType { .. } | UnsupportedFormat { .. } => 415,
            ScopeMissing { .. }
            | ScopeConstraintUnmet { .. }
            | NoPatientContext
            | OtherPatient { .. }
            | WriteNotForPatient { .. }
            | PatientCreateForbidden
            | ForbiddenSearchParameter { .. }
            | NotAllowedForPatientScope { .. }
            | OperationNotAllowed { .. }
            | ResponseOtherPatient { .. } => 403,
            BundleEntry { error, .. } => error.status(),
            InvalidUpstreamResponse { .. } => 502,
        }
    }

    /// OperationOutcome `issue.code` for this refusal (a more precise child of the status'
    /// default code where one exists).
    pub fn issue_code(&self) -> &'static str {
        use FhirError::*;
        match self {
            InvalidJson { .. } | NotAResource | InvalidBundle { .. } | InvalidPatch { .. } => "structure",
            ResourceTypeMismatch { .. } | IdMismatch { .. } | InvalidId { .. } => "value",
            BundleEntry { error, .. } => error.issue_code(),
            other => crate::outcome::issue_code_for_status(other.status()),
        }
    }

    /// For a refusal for want of a scope: the scope that would allow the request, in the
    /// token's own scope family (`user/Observation.r`), for the RFC 6750 §3.1
    /// `insufficient_scope` challenge's `scope` parameter. `None` for other refusals.
    pub fn insufficient_scope_hint(&self) -> Option<String> {
        match self {
            FhirError::ScopeMissing {
                permission,
                resource_type,
                family,
            }
            | FhirError::ScopeConstraintUnmet {
                permission,
                resource_type,
                family,
                ..
            } => Some(format!("{}/{resource_type}.{permission}", family.prefix())),
            FhirError::BundleEntry { error, .. } => error.insufficient_scope_hint(),
            _ => None,
        }
    }
}

impl fmt::Display for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FhirError::*;
        match self {
            BadPercentEncoding { part } => write!(
                f,
                "malformed percent-encoding in the {part}: every '%' must be followed by two hex digits"
            ),
            ControlCharacter { part } => write!(
                f,
                "control character (NUL, CR, LF, ...) in the {part}; remove it"
            ),
            EncodedSeparator => f.write_str(
                "encoded '/' (%2F) or backslash in the path is refused; send plain path segments",
            ),
            DotSegment => f.write_str(
                "'.' and '..' path segments (also percent-encoded) are refused; send the canonical path",
            ),
            EmptySegment => f.write_str("empty path segment ('//') is refused; remove the extra '/'"),
            UnknownResourceType { name } => write!(
                f,
                "'{name}' is not a FHIR R4 resource type; check the spelling"
            ),
            WrongCaseResourceType { given, expected } => write!(
                f,
                "resource type '{given}' has the wrong case; FHIR types are case-sensitive, use '{expected}'"
            ),
            InvalidId { id } => write!(
                f,
                "'{id}' is not a valid FHIR id (1-64 characters of A-Z, a-z, 0-9, '-', '.')"
            ),
            InvalidOperationName { name } => write!(
                f,
                "'${name}' is not a valid operation name (letters, digits, '-' and '_')"
            ),
            UnsupportedPath { path } => write!(
                f,
                "'{path}' is not a FHIR R4 REST path; see https://hl7.org/fhir/R4/http.html"
            ),
            ConditionalWithoutCriteria { method } => write!(
                f,
                "{method} on a resource type needs search criteria in the query (conditional {method}) or an id in the path"
            ),
            MissingBody => f.write_str("this interaction needs a FHIR JSON body"),
            InvalidJson { detail } => write!(f, "body is not valid JSON: {detail}"),
            NotAResource => f.write_str("body is not a FHIR resource: 'resourceType' is missing"),
            ResourceTypeMismatch { expected, found } => write!(
                f,
                "body resourceType '{found}' does not match the URL type '{expected}'"
            ),
            IdMismatch { url_id, body_id: Some(b) } => write!(
                f,
                "body id '{b}' does not match the id '{url_id}' in the URL; an update must carry the same id"
            ),
            IdMismatch { url_id, body_id: None } => write!(
                f,
                "body has no id; an update of '{url_id}' must carry \"id\": \"{url_id}\""
            ),
            InvalidBundle { detail } => write!(f, "invalid Bundle: {detail}"),
            InvalidPatch { detail } => write!(f, "invalid patch document: {detail}"),
            NotFound { resource } => write!(
                f,
                "{resource} was not found; check the id, or that it is in the compartment of this token's patient"
            ),
            MethodNotAllowed { method, path } => {
                write!(f, "method {method} is not allowed on '{path}'")
            }
            BodyTooLarge { limit, actual } => write!(
                f,
                "body of {actual} bytes exceeds the limit of {limit} bytes; split the request"
            ),
            TooManyEntries { limit, actual } => write!(
                f,
                "Bundle has {actual} entries, more than the limit of {limit}; split it"
            ),
            UnsupportedMediaType { content_type } => write!(
                f,
                "content type '{content_type}' is not supported; send application/fhir+json (XML is not accepted)"
            ),
            UnsupportedFormat { format } => write!(
                f,
                "_format={format} is not supported; only JSON (application/fhir+json) is served"
            ),
            ScopeMissing {
                permission,
                resource_type,
                family,
            } => write!(
                f,
                "no granted scope allows '{permission}' on {resource_type}; request a scope such as {}/{resource_type}.{permission}",
                family.prefix()
            ),
            ScopeConstraintUnmet {
                resource_type,
                constraint,
                ..
            } => write!(
                f,
                "the only scope for {resource_type} is limited to searches with '{constraint}'; add that parameter to a search"
            ),
            NoPatientContext => f.write_str(
                "a patient/ scope was granted but the token has no patient launch context; launch with launch/patient",
            ),
            OtherPatient { patient } => write!(
                f,
                "the request names patient '{patient}', which is not the patient of this token"
            ),
            WriteNotForPatient { resource_type } => write!(
                f,
                "the {resource_type} in the body must reference the token's patient (Patient/<id>) and no other patient"
            ),
            PatientCreateForbidden => {
                f.write_str("a patient/ scope cannot create Patient resources")
            }
            ForbiddenSearchParameter { param, reason } => {
                write!(f, "search parameter '{param}' is refused: {reason}")
            }
            NotAllowedForPatientScope { interaction } => write!(
                f,
                "'{interaction}' cannot be confined to one patient and is refused for patient/ scopes; use a search on a resource type"
            ),
            OperationNotAllowed { name } => write!(
                f,
                "operation ${name} is not enabled on this gateway"
            ),
            BundleEntry { index, error } => write!(f, "Bundle entry {index}: {error}"),
            ResponseOtherPatient { resource_type } => write!(
                f,
                "the {resource_type} returned belongs to another patient"
            ),
            InvalidUpstreamResponse { detail } => {
                write!(f, "the FHIR backend's response could not be checked: {detail}")
            }
        }
    }
}

impl std::error::Error for FhirError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_pairs() {
        assert_eq!(FhirError::DotSegment.status(), 400);
        assert_eq!(FhirError::DotSegment.issue_code(), "invalid");
        assert_eq!(FhirError::NotAResource.issue_code(), "structure");
        let e = FhirError::BodyTooLarge { limit: 1, actual: 2 };
        assert_eq!((e.status(), e.issue_code()), (413, "too-long"));
        let e = FhirError::UnsupportedFormat { format: "xml".into() };
        assert_eq!((e.status(), e.issue_code()), (415, "not-supported"));
        let e = FhirError::OtherPatient { patient: "9".into() };
        assert_eq!((e.status(), e.issue_code()), (403, "forbidden"));
        let e = FhirError::NotFound {
            resource: "Observation/x".into(),
        };
        assert_eq!((e.status(), e.issue_code()), (404, "not-found"));
        let e = FhirError::BundleEntry {
            index: 3,
            error: Box::new(FhirError::NotAResource),
        };
        assert_eq!((e.status(), e.issue_code()), (400, "structure"));
        assert!(e.to_string().starts_with("Bundle entry 3: "));
        let e = FhirError::InvalidUpstreamResponse { detail: "x".into() };
        assert_eq!((e.status(), e.issue_code()), (502, "transient"));
    }

    #[test]
    fn scope_hints_name_the_tokens_scope_family() {
        use crate::Scopes;
        for (scopes, hint) in [
            ("patient/Patient.rs", "patient/Observation.r"),
            ("openid launch/patient", "patient/Observation.r"),
            ("user/Patient.rs patient/Patient.rs", "user/Observation.r"),
            ("system/Patient.rs", "system/Observation.r"),
        ] {
            let e = Scopes::parse_str(scopes)
                .check("Observation", crate::Perms::R, &[])
                .unwrap_err();
            assert_eq!(e.insufficient_scope_hint().as_deref(), Some(hint), "{scopes}");
            assert!(e.to_string().contains(&format!("such as {hint}")), "{e}");
        }
        let e = Scopes::parse_str("user/Condition.rs?clinical-status=active")
            .check("Condition", crate::Perms::R, &[])
            .unwrap_err();
        assert_eq!(e.insufficient_scope_hint().as_deref(), Some("user/Condition.r"));
        assert_eq!(FhirError::DotSegment.insufficient_scope_hint(), None);
    }
}
