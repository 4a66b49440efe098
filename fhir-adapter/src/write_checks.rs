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
                        err.get_or_insert(FhirError::OtherPatient { patient: id.to_owned() });
                    }
                    // A logical (identifier-only) Patient reference cannot be verified.
                    None if reference.is_none() && r.get("type").and_then(Value::as_str) == Some("Patient") => {
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
    // An empty element means "the whole resource" (JSON Patch path "" or "/"), which can
    // replace the compartment fields as well.
    let touches = |element: &str| element.is_empty() || protected.contains(&element);
    let first = |s: &str| -> String { s.split(['.', '[', '(', '/']).next().unwrap_or("").to_owned() };
    let mut hit = false;
    match format {
        Some(PatchFormat::JsonPatch) if body.is_array() => {
            for op in body.as_array().into_iter().flatten() {
                for key in ["path", "from"] {
                    if let Some(path) = op.get(key).and_then(Value::as_str) {
                        hit |= touches(&first(path.strip_prefix('/').unwrap_or(path)));
                    }
                }
            }
        }
        Some(PatchFormat::FhirPath) => {
            let ops = body.get("parameter").and_then(Value::as_array).into_iter().flatten();
            for op in ops {
                let part = |name: &str| {
                    op.get("part")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                        .and_then(|p| p.get("valueString"))
                        .and_then(Value::as_str)
                };
                let path = part("path").unwrap_or("");
                // Only `Type.element...` paths are understood; anything else is refused.
                let element = match path.strip_prefix(rt) {
                    Some("") => String::new(),
                    Some(rest) if rest.starts_with('.') => first(&rest[1..]),
                    _ => {
                        hit = true;
                        continue;
                    }
                };
                match part("name") {
                    // `add`/`insert` into the resource root: the new element is `name`.
                    Some(name) if element.is_empty() => hit |= touches(name),
                    Some(name) => hit |= touches(&element) || touches(name),
                    None => hit |= touches(&element),
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
