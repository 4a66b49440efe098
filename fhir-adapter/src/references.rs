//! Walking FHIR JSON for patient references.
//!
//! Requirements: ACL-PHR-1 (compartment membership is decided by these references),
//! LOG-ACC-1 (the patients a request or response touched are read from them).
//!
//! Why element paths and not a FHIRPath engine: the compartment parameters of R4 resolve to
//! plain element paths (see [`crate::compartment`]); `where(resolve() is Patient)` is
//! approximated by only counting references that point at `Patient/…`, which is exact for
//! the purpose of "does this touch patient X".

use crate::classify::{Classified, Interaction};
use crate::compartment::{is_patient_param, patient_id_of_reference, patient_links};
use crate::normalize::is_valid_id;
use serde_json::Value;
use std::collections::BTreeSet;

/// Calls `f` with every Reference object found at `path` (dotted, arrays traversed).
pub(crate) fn for_each_reference<'v>(v: &'v Value, path: &str, f: &mut dyn FnMut(&'v Value)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| for_each_reference(i, path, f)),
        Value::Object(map) => match path.split_once('.') {
            None => {
                if let Some(r) = map.get(path) {
                    match r {
                        Value::Array(items) => items.iter().for_each(&mut *f),
                        other => f(other),
                    }
                }
            }
            Some((head, rest)) => {
                if let Some(next) = map.get(head) {
                    for_each_reference(next, rest, f);
                }
            }
        },
        _ => {}
    }
}

/// Patient ids referenced by the compartment fields of `resource` (plus its own id when
/// it is a Patient).
pub(crate) fn resource_patients<'v>(resource: &'v Value, out: &mut dyn FnMut(&'v str)) {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return;
    };
    if rt == "Patient" {
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            out(id);
        }
    }
    for link in patient_links(rt).unwrap_or(&[]) {
        for path in link.paths {
            for_each_reference(resource, path, &mut |r| {
                if let Some(id) = r
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(patient_id_of_reference)
                {
                    out(id);
                }
            });
        }
    }
}

/// Patient ids named by the request itself, whatever the scope (LOG-ACC-1).
pub(crate) fn collect_request_patients(c: &Classified, body: Option<&Value>, out: &mut BTreeSet<String>) {
    if let (Some("Patient"), Some(id)) = (c.resource_type, &c.id) {
        out.insert(id.clone());
    }
    if let Some(("Patient", id)) = &c.compartment {
        out.insert(id.clone());
    }
    let rt = c.resource_type.unwrap_or("*");
    for (name, value) in &c.params {
        let base = &name[..name.find([':', '.']).unwrap_or(name.len())];
        let typed = base == "patient" || name.ends_with(":Patient") || (rt == "Patient" && base == "_id");
        if !(typed || is_patient_param(rt, base)) {
            continue;
        }
        for v in value.split(',') {
            match patient_id_of_reference(v) {
                Some(id) => {
                    out.insert(id.to_owned());
                }
                None if typed && is_valid_id(v) => {
                    out.insert(v.to_owned());
                }
                None => {}
            }
        }
    }
    if let (Some(b), false) = (body, c.interaction == Interaction::Patch) {
        resource_patients(b, &mut |id| {
            out.insert(id.to_owned());
        });
    }
}
