//! Checks on write bodies (create, update, patch) under a `patient/` grant.
//!
//! Requirements: ACL-PHR-1 (a patient may only write records about themself), ACL-ROLE-1.
//!
//! Why every compartment field and not just `subject`: a record is in a patient's
//! compartment through any of them (`Observation.performer` included), so a write that puts
//! another patient in any of them would plant data in that patient's compartment.
//! Identifier-only (logical) Patient references cannot be verified and are refused.

use crate::classify::PatchFormat;
use crate::compartment::{patient_id_of_reference, patient_links};
use crate::error::FhirError;
use crate::references::for_each_reference;
use serde_json::Value;

/// A write body must reference the token's patient in its compartment fields
/// (`require_own`) and must not reference any other patient there.
pub(crate) fn check_write_body(
    rt: &'static str,
    body: Option<&Value>,
    p: &str,
    require_own: bool,
) -> Result<(), FhirError> {
    let body = body.ok_or(FhirError::MissingBody)?;
    let mut own = false;
    let mut err = None;
    for link in patient_links(rt).unwrap_or(&[]) {
        for path in link.paths {
            for_each_reference(body, path, &mut |r| {
                let reference = r.get("reference").and_then(Value::as_str);
                match reference.and_then(patient_id_of_reference) {
                    Some(id) if id == p => own = true,
                    Some(id) => {
                        err.get_or_insert(FhirError::OtherPatient {
                            patient: id.to_owned(),
                        });
                    }
                    // A logical (identifier-only) Patient reference cannot be verified.
                    None if reference.is_none()
                        && r.get("type").and_then(Value::as_str) == Some("Patient") =>
                    {
                        err.get_or_insert(FhirError::WriteNotForPatient { resource_type: rt });
                    }
                    None => {}
                }
            });
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    if require_own && !own {
        return Err(FhirError::WriteNotForPatient { resource_type: rt });
    }
    Ok(())
}

/// A patch under a `patient/` grant must not touch the compartment fields: the pre-read
/// proves the resource is the patient's, and the patch must keep it so.
pub(crate) fn check_patch(
    rt: &'static str,
    format: Option<PatchFormat>,
    body: Option<&Value>,
) -> Result<(), FhirError> {
    let body = body.ok_or(FhirError::MissingBody)?;
    let protected: Vec<&str> = patient_links(rt)
        .unwrap_or(&[])
        .iter()
        .flat_map(|l| l.paths.iter())
        .map(|p| p.split('.').next().unwrap_or(p))
        .collect();
    let touches = |element: &str| protected.contains(&element);
    let first = |s: &str| -> String {
        s.split(['.', '[', '(', '/'])
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let mut hit = false;
    match format {
        Some(PatchFormat::JsonPatch) if body.is_array() => {
            for op in body.as_array().into_iter().flatten() {
                for key in ["path", "from"] {
                    if let Some(path) = op.get(key).and_then(Value::as_str) {
                        hit |= touches(&first(path.trim_start_matches('/')));
                    }
                }
            }
        }
        Some(PatchFormat::FhirPath) => {
            let parts = body
                .get("parameter")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|op| {
                    op.get("part")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                });
            for part in parts {
                let value = part
                    .get("valueString")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match part.get("name").and_then(Value::as_str) {
                    Some("path") => {
                        let rest = value
                            .strip_prefix(rt)
                            .map_or(value, |r| r.trim_start_matches('.'));
                        hit |= touches(&first(rest));
                    }
                    Some("name") => hit |= touches(value),
                    _ => {}
                }
            }
        }
        _ => {
            return Err(FhirError::NotAllowedForPatientScope {
                interaction: "patch with a Binary JSON Patch",
            })
        }
    }
    if hit {
        return Err(FhirError::WriteNotForPatient { resource_type: rt });
    }
    Ok(())
}
