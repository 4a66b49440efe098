//! Authorisation of a classified request: SMART scopes, then patient-compartment rules.
//!
//! Requirements: ACL-ROLE-1 (deny-by-default rights per information category), ACL-PHR-1
//! (a `patient/` token reaches only the data of the patient in its launch context),
//! PHR-1 (deletion and export are explicit, separately permitted interactions),
//! LOG-ACC-1 (the patients a request touches are collected here for the access record).
//!
//! Decisions where the URL alone cannot decide (see README for the full list):
//! * read of a compartment resource by id → allowed with a response check;
//! * update / patch / delete of a compartment resource by id → allowed only after a
//!   pre-read: the gateway GETs the current version and runs [`crate::check_existing`];
//! * searches are confined by appending the type's compartment parameter;
//! * `_has`, `_filter`, `_query`, chains / `:identifier` on patient parameters → 403;
//!   `_include` / `_revinclude` → allowed with a response check (`*` and `:iterate` → 403);
//! * conditional writes, system search/history, non-Patient compartments and `$export`
//!   cannot be confined → 403 under `patient/` scopes.

use crate::classify::{Classified, Interaction, Limits, PatchFormat};
use crate::compartment::{
    confining_param, in_patient_compartment, is_patient_param, patient_id_of_reference,
    patient_links,
};
use crate::error::FhirError;
use crate::normalize::{encode_query_component, is_valid_id};
use crate::scopes::{Grant, Perms, Scopes};
use serde_json::Value;
use std::collections::BTreeSet;

/// Who is asking: the token's parsed scopes and its `patient` launch-context claim.
#[derive(Debug, Clone, Copy)]
pub struct AccessContext<'a> {
    /// Scopes of the token.
    pub scopes: &'a Scopes,
    /// `patient` claim (launch context), if any.
    pub patient: Option<&'a str>,
}

/// An `$operation` the deployment enables beyond the built-in `$everything`, `$export`
/// and `$validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOperation {
    /// Name without `$`.
    pub name: String,
    /// Letters the caller needs on the target type (`*` at system level).
    pub permission: Perms,
}

/// Deployment policy for FHIR routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Limits used by [`crate::classify`].
    pub limits: Limits,
    /// Extra operations; any other unknown operation is refused (403).
    pub allowed_operations: Vec<AllowedOperation>,
}

/// What the gateway must do to forward an allowed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Replacement query string (without `?`) to forward; an empty string means "drop the
    /// query" (used when the parameters moved into [`Decision::rewritten_body`]).
    pub rewritten_query: Option<String>,
    /// Replacement body: the form body of a confined `POST _search`, or a Bundle whose
    /// search entries were confined.
    pub rewritten_body: Option<Vec<u8>>,
    /// The response must pass [`crate::check_response`] before it is released.
    pub response_check: bool,
    /// Paths (`Observation/abc`) the gateway must GET from the backend and pass to
    /// [`crate::check_existing`] before forwarding (writes/deletes by id under `patient/`).
    pub pre_reads: Vec<String>,
    /// The patient the request is confined to (`patient/` grant), if any.
    pub patient: Option<String>,
    /// Per Bundle entry: whether its part of the batch-response needs the check.
    pub entry_checks: Vec<bool>,
    /// Patient ids the request names (URL, query, body) — LOG-ACC-1.
    pub touched: BTreeSet<String>,
}

/// Decides whether `c` may be forwarded for `ctx`.
pub fn authorize(
    c: &Classified,
    ctx: &AccessContext<'_>,
    policy: &Policy,
) -> Result<Decision, FhirError> {
    if !matches!(c.interaction, Interaction::Batch | Interaction::Transaction) {
        return authorize_one(c, c.body.as_ref(), ctx, policy);
    }
    let mut d = Decision::default();
    let mut rewritten: Option<Value> = None;
    for (index, e) in c.entries.iter().enumerate() {
        let resource = c
            .body
            .as_ref()
            .and_then(|b| b.get("entry"))
            .and_then(|es| es.get(index))
            .and_then(|entry| entry.get("resource"));
        let one =
            authorize_one(e, resource, ctx, policy).map_err(|error| FhirError::BundleEntry {
                index,
                error: Box::new(error),
            })?;
        if let Some(q) = &one.rewritten_query {
            let bundle = rewritten.get_or_insert_with(|| c.body.clone().unwrap_or(Value::Null));
            if let Some(req) = bundle
                .get_mut("entry")
                .and_then(|es| es.get_mut(index))
                .and_then(|entry| entry.get_mut("request"))
            {
                req["url"] = Value::String(format!("{}?{}", e.path, q));
            }
        }
        d.response_check |= one.response_check;
        d.entry_checks.push(one.response_check);
        d.pre_reads.extend(one.pre_reads);
        d.touched.extend(one.touched);
        if one.patient.is_some() {
            d.patient = one.patient;
        }
    }
    if let Some(b) = rewritten {
        d.rewritten_body = Some(serde_json::to_vec(&b).expect("a Value always serialises"));
    }
    Ok(d)
}

fn required_perm(i: Interaction) -> Perms {
    use Interaction as I;
    match i {
        I::Read | I::Vread | I::HistoryInstance => Perms::R,
        I::Update | I::Patch => Perms::U,
        I::Delete => Perms::D,
        I::Create => Perms::C,
        _ => Perms::S,
    }
}

fn own_patient<'a>(ctx: &AccessContext<'a>) -> Result<&'a str, FhirError> {
    ctx.patient
        .filter(|p| is_valid_id(p))
        .ok_or(FhirError::NoPatientContext)
}

fn authorize_one(
    c: &Classified,
    body: Option<&Value>,
    ctx: &AccessContext<'_>,
    policy: &Policy,
) -> Result<Decision, FhirError> {
    let mut d = Decision::default();
    if c.interaction.is_public() {
        return Ok(d);
    }
    collect_request_patients(c, body, &mut d.touched);
    if c.interaction == Interaction::Operation {
        return authorize_operation(c, ctx, policy, d);
    }
    use Interaction as I;
    if matches!(c.interaction, I::SearchSystem | I::HistorySystem) {
        let types = system_types(&c.params);
        for t in &types {
            if ctx.scopes.check(t, Perms::S, &c.params)? == Grant::Patient {
                return Err(FhirError::NotAllowedForPatientScope {
                    interaction: c.interaction.as_str(),
                });
            }
        }
        return Ok(d);
    }
    let rt = c.resource_type.unwrap_or("*");
    if ctx
        .scopes
        .check(rt, required_perm(c.interaction), &c.params)?
        == Grant::Unconfined
    {
        return Ok(d);
    }
    let p = own_patient(ctx)?;
    d.patient = Some(p.to_owned());
    let compartment = in_patient_compartment(rt);
    let same_id = || c.id.as_deref() == Some(p);
    match c.interaction {
        I::Read | I::Vread | I::HistoryInstance if rt == "Patient" => {
            if !same_id() {
                return Err(other(c.id.as_deref()));
            }
        }
        I::Read | I::Vread | I::HistoryInstance | I::HistoryType => d.response_check = compartment,
        I::SearchType => confine_search(c, rt, p, true, &mut d)?,
        I::SearchCompartment => {
            match &c.compartment {
                Some(("Patient", id)) if id == p => {}
                Some(("Patient", id)) => return Err(other(Some(id))),
                _ => {
                    return Err(FhirError::NotAllowedForPatientScope {
                        interaction: "search in a non-Patient compartment",
                    })
                }
            }
            confine_search(c, rt, p, false, &mut d)?;
            d.response_check |= rt == "*";
        }
        I::Create if rt == "Patient" => return Err(FhirError::PatientCreateForbidden),
        I::Update | I::Patch | I::Delete if c.conditional => {
            return Err(FhirError::NotAllowedForPatientScope {
                interaction: "conditional update/patch/delete",
            })
        }
        I::Create | I::Update | I::Patch | I::Delete if !compartment => {}
        I::Create => check_write_body(rt, body, p, true)?,
        I::Update | I::Patch | I::Delete if rt == "Patient" => {
            if !same_id() {
                return Err(other(c.id.as_deref()));
            }
            match c.interaction {
                I::Update => check_write_body(rt, body, p, false)?,
                I::Patch => check_patch(rt, c.patch_format, body)?,
                _ => {}
            }
        }
        I::Update | I::Patch | I::Delete => {
            match c.interaction {
                I::Update => check_write_body(rt, body, p, true)?,
                I::Patch => check_patch(rt, c.patch_format, body)?,
                _ => {}
            }
            d.pre_reads.push(c.path.clone());
        }
        _ => {
            return Err(FhirError::NotAllowedForPatientScope {
                interaction: c.interaction.as_str(),
            })
        }
    }
    Ok(d)
}

fn other(id: Option<&str>) -> FhirError {
    FhirError::OtherPatient {
        patient: id.unwrap_or("").to_owned(),
    }
}

/// Types a system-level search/history spans: `_type` values, or `*`.
fn system_types(params: &[(String, String)]) -> Vec<&str> {
    let listed: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "_type")
        .flat_map(|(_, v)| v.split(','))
        .filter(|t| !t.is_empty())
        .collect();
    if listed.is_empty() {
        vec!["*"]
    } else {
        listed
    }
}

fn authorize_operation(
    c: &Classified,
    ctx: &AccessContext<'_>,
    policy: &Policy,
    mut d: Decision,
) -> Result<Decision, FhirError> {
    let name = c.operation.as_deref().unwrap_or("");
    let rt = c.resource_type.unwrap_or("*");
    let read_search = Perms::R.union(Perms::S);
    match (name, c.resource_type) {
        ("export", _) => {
            // Bulk export spans patients by design: only user/ or system/ scopes.
            for t in system_types(&c.params) {
                if !ctx.scopes.grants_unconfined(t, Perms::R) {
                    return match ctx.scopes.check(t, Perms::R, &[]) {
                        Ok(_) => Err(FhirError::NotAllowedForPatientScope {
                            interaction: "operation $export",
                        }),
                        Err(e) => Err(e),
                    };
                }
            }
            Ok(d)
        }
        ("everything", Some("Patient")) => {
            if ctx.scopes.check("*", read_search, &[])? == Grant::Unconfined {
                return Ok(d);
            }
            let p = own_patient(ctx)?;
            match c.id.as_deref() {
                Some(id) if id == p => {}
                Some(id) => return Err(other(Some(id))),
                None => {
                    return Err(FhirError::NotAllowedForPatientScope {
                        interaction: "type-level Patient/$everything",
                    })
                }
            }
            d.patient = Some(p.to_owned());
            d.response_check = true;
            Ok(d)
        }
        _ => {
            let perm = if name == "validate" {
                Perms::R
            } else {
                policy
                    .allowed_operations
                    .iter()
                    .find(|o| o.name == name)
                    .map(|o| o.permission)
                    .ok_or_else(|| FhirError::OperationNotAllowed {
                        name: name.to_owned(),
                    })?
            };
            if ctx.scopes.check(rt, perm, &c.params)? == Grant::Unconfined {
                return Ok(d);
            }
            let p = own_patient(ctx)?;
            d.patient = Some(p.to_owned());
            if rt == "*" {
                return Err(FhirError::NotAllowedForPatientScope {
                    interaction: "system-level operation",
                });
            }
            match c.id.as_deref() {
                Some(id) if rt == "Patient" && id != p => return Err(other(Some(id))),
                Some(_) if rt != "Patient" && in_patient_compartment(rt) => {
                    d.pre_reads
                        .push(format!("{rt}/{}", c.id.as_deref().unwrap_or("")));
                }
                _ => {}
            }
            d.response_check = name != "validate";
            Ok(d)
        }
    }
}

/// Search-parameter rules under a `patient/` grant. With `add`, appends the confining
/// parameter when the query does not already restrict the search to the patient.
fn confine_search(
    c: &Classified,
    rt: &str,
    p: &str,
    add: bool,
    d: &mut Decision,
) -> Result<(), FhirError> {
    let forbid = |param: &str, reason: &'static str| FhirError::ForbiddenSearchParameter {
        param: param.to_owned(),
        reason,
    };
    let mut confined = false;
    for (name, value) in &c.params {
        let cut = name.find([':', '.']).unwrap_or(name.len());
        let (base, suffix) = name.split_at(cut);
        match base {
            "_has" => return Err(forbid(name, "reverse chaining selects by other resources' data, which may belong to other patients")),
            "_filter" | "_query" => return Err(forbid(name, "its criteria cannot be checked against the patient compartment")),
            "_include" | "_revinclude" => {
                if value == "*" || value.ends_with(":*") || suffix.contains("iterate") || suffix.contains("recurse") {
                    return Err(forbid(name, "wildcard or iterated includes can pull in other patients' resources"));
                }
                d.response_check = true;
            }
            "_id" if rt == "Patient" => {
                for v in value.split(',') {
                    if v != p {
                        return Err(other(Some(v)));
                    }
                }
                confined = true;
            }
            _ if is_patient_param(rt, base) => {
                let typed = match suffix {
                    "" => base == "patient",
                    ":Patient" => true,
                    ":missing" => continue,
                    s if s.starts_with(':') && !s.contains('.') && s[1..].starts_with(|ch: char| ch.is_ascii_uppercase()) => {
                        continue; // type modifier for a non-Patient target
                    }
                    _ => return Err(forbid(name, "chained, identifier or negated searches on a patient reference can reach another patient")),
                };
                let mut all_own = true;
                for v in value.split(',') {
                    let id = match patient_id_of_reference(v) {
                        Some(id) => Some(id),
                        None if typed && is_valid_id(v) => Some(v),
                        None if !v.contains('/') && !v.contains(':') => {
                            if v != p {
                                return Err(forbid(name, "a bare id on a parameter that can reference a Patient is ambiguous; write Type/id"));
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

/// A write body must reference the token's patient in its compartment fields
/// (`require_own`) and must not reference any other patient there.
fn check_write_body(
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
fn check_patch(
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

/// Patient ids named by the request itself, whatever the scope (LOG-ACC-1).
fn collect_request_patients(c: &Classified, body: Option<&Value>, out: &mut BTreeSet<String>) {
    if let (Some("Patient"), Some(id)) = (c.resource_type, &c.id) {
        out.insert(id.clone());
    }
    if let Some(("Patient", id)) = &c.compartment {
        out.insert(id.clone());
    }
    let rt = c.resource_type.unwrap_or("*");
    for (name, value) in &c.params {
        let base = &name[..name.find([':', '.']).unwrap_or(name.len())];
        let typed =
            base == "patient" || name.ends_with(":Patient") || (rt == "Patient" && base == "_id");
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
