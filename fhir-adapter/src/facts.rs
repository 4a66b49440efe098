//! Access-record facts for one FHIR request.
//!
//! Requirement: LOG-ACC-1 / LOG-ACC-2 (the access log must identify the medical
//! information operated on, and the patient). The adapter knows the interaction and the
//! patients; the gateway adds who, when and the outcome.

use crate::authorize::Decision;
use crate::classify::Classified;
use crate::response::ResponseCheck;
use std::collections::BTreeSet;

/// What the access record says about a FHIR request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFacts<'a> {
    /// Stable lowercase interaction name (`read`, `search-type`, `transaction`, ...).
    pub interaction: &'static str,
    /// Resource type, if the request has one.
    pub resource_type: Option<&'static str>,
    /// Logical id, if the request has one.
    pub resource_id: Option<&'a str>,
    /// Operation name without `$`.
    pub operation: Option<&'a str>,
    /// Patient ids named by the request and present in the released response.
    pub patients: BTreeSet<String>,
}

/// Gathers the facts; `decision` and `response` are whatever stages were reached.
pub fn access_facts<'a>(
    c: &'a Classified,
    decision: Option<&Decision>,
    response: Option<&ResponseCheck>,
) -> AccessFacts<'a> {
    let mut patients = BTreeSet::new();
    if let Some(d) = decision {
        patients.extend(d.touched.iter().cloned());
    }
    if let Some(r) = response {
        patients.extend(r.touched.iter().cloned());
    }
    AccessFacts {
        interaction: c.interaction.as_str(),
        resource_type: c.resource_type,
        resource_id: c.id.as_deref(),
        operation: c.operation.as_deref(),
        patients,
    }
}
