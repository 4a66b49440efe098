//! FHIR R4 adapter for phr-gateway: classification, SMART scopes, patient compartment,
//! response checks and OperationOutcome, as plain functions over plain values (no HTTP
//! server code; the gateway calls these at its `authorise` and `response_filter` stages).
//!
//! Requirements served: EX-SEG-1 (deny-by-default L7 filtering of FHIR paths, methods,
//! media types and sizes), ACL-ROLE-1 and ACL-PHR-1 (scope- and compartment-based access),
//! PHR-1 (deletion/export as explicit permissions), LOG-ACC-1 (access-record facts).
//!
//! Call order for one request:
//! 1. [`classify`] the request (errors → [`error_response`]);
//! 2. [`authorize`] it for the token ([`Scopes`] parsed once per token);
//! 3. for each [`Decision::pre_reads`] path, GET it upstream and [`check_existing`];
//! 4. forward, using [`Classified::path`] and any rewritten query/body;
//! 5. if [`Decision::response_check`], [`check_and_rebase_response`] (the check and the
//!    base-URL rewrite in one pass over the body; [`check_and_edit_response`] gives the
//!    result as splices of the body's own bytes);
//! 6. write the access record from [`access_facts`].
//!
//! ```
//! use fhir_adapter::*;
//! let policy = Policy::default();
//! let scopes = Scopes::parse_str("launch/patient patient/Observation.rs");
//! let ctx = AccessContext { scopes: &scopes, patient: Some("123") };
//! let req = FhirRequest { method: "GET", path: "Observation", query: Some("code=8867-4"), ..Default::default() };
//! let c = classify(&req, &policy.limits).unwrap();
//! let d = authorize(&c, &ctx, &policy).unwrap();
//! assert_eq!(d.rewritten_query.as_deref(), Some("code=8867-4&subject=Patient/123"));
//!
//! // No scope grants Patient reads (another patient's record would be a 404, as if
//! // it did not exist).
//! let other = FhirRequest { method: "GET", path: "Patient/456", ..Default::default() };
//! let err = authorize(&classify(&other, &policy.limits).unwrap(), &ctx, &policy).unwrap_err();
//! let (status, _outcome) = error_response(&err, "req-1");
//! assert_eq!(status, 403);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authorize;
mod body;
mod classify;
pub mod compartment;
mod confine_search;
mod edits;
mod error;
mod facts;
mod normalize;
mod one_pass;
mod outcome;
mod references;
mod response;
#[cfg(test)]
mod response_oracle;
mod scan;
mod scopes;
mod tokens;
mod write_checks;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod one_pass_tests;

pub use authorize::{authorize, not_found, AccessContext, AllowedOperation, Decision, Policy};
pub use classify::{classify, Classified, FhirRequest, Interaction, Limits, PatchFormat};
pub use edits::Edits;
pub use error::{FhirError, Part};
pub use facts::{access_facts, AccessFacts};
pub use normalize::is_valid_id;
pub use one_pass::{check_and_edit_response, EditedCheck};
pub use outcome::{error_response, issue_code_for_status, operation_outcome, REQUEST_ID_EXTENSION};
pub use response::{
    belongs_to, check_and_rebase_response, check_existing, check_response, rebase_value, rewrite_base_url,
    rewrite_base_urls_in_value, rewrite_body_base_urls, Bases, ResponseBody, ResponseCheck,
};
pub use scopes::{Grant, Level, Perms, ResourceScope, Scopes};
