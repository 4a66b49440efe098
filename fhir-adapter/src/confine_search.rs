//! Confinement of searches to the patient of a `patient/` token.
//!
//! Requirements: ACL-PHR-1 / ACL-ROLE-1 (a patient-scoped search returns only that
//! patient's records), EX-SEG-1 (parameters whose reach cannot be bounded are refused
//! before the backend evaluates them).
//!
//! Why rewrite rather than only filter responses: a search confined by its own parameter
//! is answered correctly by the backend (paging, `total`, `_count` all stay right), while
//! filtering pages afterwards leaves short pages and leaks counts. Filtering remains as the
//! second line for `_include` / `_revinclude`, which can pull in anything.
//!
//! Decisions: `_has`, `_filter`, `_query`, chains, `:identifier`, `:not`, `:above`/`:below`
//! on a patient parameter are refused (403); a bare id on a polymorphic parameter
//! (`subject=456`) is refused unless it is the patient's own id, because the adapter cannot
//! tell `Patient/456` from `Group/456`; comma lists count as confining only when every
//! value is the patient.

use crate::authorize::{other, Decision};
use crate::classify::Classified;
use crate::compartment::{confining_param, is_patient_param, patient_id_of_reference};
use crate::error::FhirError;
use crate::normalize::{encode_query_component, is_valid_id};

/// Search-parameter rules under a `patient/` grant. With `add`, appends the confining
/// parameter when the query does not already restrict the search to the patient.
pub(crate) fn confine_search(c: &Classified, rt: &str, p: &str, add: bool, d: &mut Decision) -> Result<(), FhirError> {
    let forbid = |param: &str, reason: &'static str| FhirError::ForbiddenSearchParameter {
        param: param.to_owned(),
        reason,
    };
    let mut confined = false;
    for (name, value) in &c.params {
        let cut = name.find([':', '.']).unwrap_or(name.len());
        let (base, suffix) = name.split_at(cut);
        match base {
            "_has" => {
                return Err(forbid(
                    name,
                    "reverse chaining selects by other resources' data, which may belong to other patients",
                ))
            }
            "_filter" | "_query" => {
                return Err(forbid(
                    name,
                    "its criteria cannot be checked against the patient compartment",
                ))
            }
            "_include" | "_revinclude" => {
                if value == "*" || value.ends_with(":*") || suffix.contains("iterate") || suffix.contains("recurse") {
                    return Err(forbid(
                        name,
                        "wildcard or iterated includes can pull in other patients' resources",
                    ));
                }
                d.response_check = true;
            }
            "_id" if rt == "Patient" => {
                if !suffix.is_empty() {
                    // `_id:not=123` would select every other patient.
                    return Err(forbid(name, "modifiers on _id of Patient can select other patients"));
                }
                for v in value.split(',') {
                    if v != p {
                        return Err(other(Some(v)));
                    }
                }
                confined = true;
            }
            _ if is_patient_param(rt, base) => {
                let typed =
                    match suffix {
                        "" => base == "patient",
                        ":Patient" => true,
                        ":missing" => continue,
                        s if s.starts_with(':')
                            && !s.contains('.')
                            && s[1..].starts_with(|ch: char| ch.is_ascii_uppercase()) =>
                        {
                            continue; // type modifier for a non-Patient target
                        }
                        _ => return Err(forbid(
                            name,
                            "chained, identifier or negated searches on a patient reference can reach another patient",
                        )),
                    };
                let mut all_own = true;
                for v in value.split(',') {
                    let id = match patient_id_of_reference(v) {
                        Some(id) => Some(id),
                        None if typed && is_valid_id(v) => Some(v),
                        None if !v.contains('/') && !v.contains(':') => {
                            if v != p {
                                return Err(forbid(
                                    name,
                                    "a bare id on a parameter that can reference a Patient is ambiguous; write Type/id",
                                ));
                            }
                            None
                        }
                        None => None, // Group/1, Practitioner/2: not a patient
                    };
                    match id {
                        Some(id) if id == p => {}
                        Some(id) => return Err(other(Some(id))),
                        None => all_own = false,
                    }
                }
                confined |= all_own;
            }
            _ => {}
        }
    }
    if add && !confined {
        if let Some(param) = confining_param(rt) {
            let value = if param == "_id" {
                p.to_owned()
            } else {
                format!("Patient/{p}")
            };
            let mut params = c.params.clone();
            params.push((param.to_owned(), value));
            let encoded = encode_params(&params);
            if c.search_via_post {
                d.rewritten_query = Some(String::new());
                d.rewritten_body = Some(encoded.into_bytes());
            } else {
                d.rewritten_query = Some(encoded);
            }
        }
    }
    Ok(())
}

fn encode_params(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode_query_component(k));
        out.push('=');
        out.push_str(&encode_query_component(v));
    }
    out
}
