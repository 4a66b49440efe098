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

use crate::classify::{Classified, Interaction, Limits};
use crate::compartment::in_patient_compartment;
use crate::confine_search::confine_search;
use crate::error::FhirError;
use crate::normalize::is_valid_id;
use crate::references::collect_request_patients;
use crate::scopes::{Grant, Perms, Scopes};
use crate::write_checks::{check_patch, check_write_body};
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
    /// A read by id (read, vread, `_history` of one resource) confined to a patient: if
    /// the resource is outside the compartment, or the backend says it does not exist
    /// (404, 410), the gateway answers [`FhirError::NotFound`] for both, so a patient's
    /// token cannot learn whether another patient's resource exists (ACL-PHR-1).
    pub conceal_existence: bool,
}

/// Decides whether `c` may be forwarded for `ctx`.
pub fn authorize(c: &Classified, ctx: &AccessContext<'_>, policy: &Policy) -> Result<Decision, FhirError> {
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
        let one = authorize_one(e, resource, ctx, policy).map_err(|error| FhirError::BundleEntry {
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
    if ctx.scopes.check(rt, required_perm(c.interaction), &c.params)? == Grant::Unconfined {
        return Ok(d);
    }
    let p = own_patient(ctx)?;
    d.patient = Some(p.to_owned());
    let compartment = in_patient_compartment(rt);
    if compartment || rt == "*" {
        // Confined to the patient: the request touches the patient's records (LOG-ACC-1).
        d.touched.insert(p.to_owned());
    }
    let same_id = || c.id.as_deref() == Some(p);
    d.conceal_existence = matches!(c.interaction, I::Read | I::Vread | I::HistoryInstance);
    match c.interaction {
        I::Read | I::Vread | I::HistoryInstance if rt == "Patient" => {
            if !same_id() {
                // Answered as a missing resource, whether or not it exists.
                return Err(not_found(c));
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
        // Types outside the compartment hold no patient data: writes follow scopes only.
        I::Create | I::Update | I::Patch | I::Delete if !compartment => {}
        I::Update | I::Patch | I::Delete if c.conditional => {
            return Err(FhirError::NotAllowedForPatientScope {
                interaction: "conditional update/patch/delete",
            })
        }
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

/// The answer to a confined read of a resource outside the compartment: the same as for
/// one that does not exist.
pub fn not_found(c: &Classified) -> FhirError {
    FhirError::NotFound {
        resource: c.path.clone(),
    }
}

pub(crate) fn other(id: Option<&str>) -> FhirError {
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
                    .ok_or_else(|| FhirError::OperationNotAllowed { name: name.to_owned() })?
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
                    d.pre_reads.push(format!("{rt}/{}", c.id.as_deref().unwrap_or("")));
                }
                _ => {}
            }
            d.response_check = name != "validate";
            Ok(d)
        }
    }
}
