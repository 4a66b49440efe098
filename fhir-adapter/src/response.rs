//! Response-side checks: patient compartment on what the backend returned, and base-URL
//! rewriting.
//!
//! Requirements: ACL-PHR-1 / ACL-ROLE-1 (a `patient/` token never receives another
//! patient's record, even when the backend would return it: a read by id cannot be
//! decided from the URL, and `_include` can pull in anything), EX-SEG-1 (the backend's
//! internal base URL is not exposed to clients), LOG-ACC-1 (the patients whose data was
//! actually released are reported for the access record).
//!
//! Why filter instead of refusing a whole search page: one foreign entry in a searchset is
//! the backend's mistake, and the rest of the page is the patient's own data. A single
//! resource of another patient, in contrast, is refused outright (the gateway answers 404,
//! as for a resource that does not exist). In a batch-response, entries are *replaced* by
//! a 404 response entry instead of being removed, because batch-response entries
//! correspond to request entries by position; the backend's own 404/410 entries are
//! replaced by the same entry, so the two cannot be told apart.

use crate::authorize::{AccessContext, Decision};
use crate::compartment::{in_patient_compartment, patient_id_of_reference, patient_links};
use crate::error::FhirError;
use crate::one_pass::check_and_edit_response;
use crate::outcome::operation_outcome_value;
use crate::references::{for_each_reference, resource_patients};
use serde_json::Value;
use std::collections::BTreeSet;

/// The body to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Forward the backend's bytes as they are.
    Unchanged,
    /// Forward these bytes instead (entries were removed or replaced).
    Rewritten(Vec<u8>),
}

/// Result of [`check_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseCheck {
    /// What to send.
    pub body: ResponseBody,
    /// Number of entries removed or replaced.
    pub removed: usize,
    /// Patient ids of the resources released (LOG-ACC-1).
    pub touched: BTreeSet<String>,
}

pub(crate) fn parse(body: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice(body).map_err(|e| FhirError::InvalidUpstreamResponse { detail: e.to_string() })
}

/// Whether `resource` belongs to patient `p`: it is `Patient/p`, or one of its
/// compartment reference fields points at `Patient/p` (relative or absolute), and no
/// contained resource points at another patient. Types outside the compartment belong to
/// everyone.
pub fn belongs_to(resource: &Value, p: &str) -> bool {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    if !in_patient_compartment(rt) {
        return true;
    }
    if rt == "Patient" && resource.get("id").and_then(Value::as_str) == Some(p) {
        return contained_clean(resource, p);
    }
    let mut own = false;
    for link in patient_links(rt).unwrap_or(&[]) {
        for path in link.paths {
            for_each_reference(resource, path, &mut |r| {
                let id = r
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(patient_id_of_reference);
                own |= id == Some(p);
            });
        }
    }
    own && contained_clean(resource, p)
}

/// Contained resources have no server identity of their own, so a contained resource
/// that points at a patient other than `p` would carry that patient's data inside `p`'s
/// record: treated as not belonging.
fn contained_clean(resource: &Value, p: &str) -> bool {
    let mut clean = true;
    for c in resource
        .get("contained")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        resource_patients(c, &mut |id| clean &= id == p);
    }
    clean
}

/// Checks (and if needed rewrites) a backend response to a request allowed by `d`. Call it whenever [`Decision::response_check`] is set; calling it otherwise only
/// reports the patients touched. An empty body (204) passes unchanged.
pub fn check_response(d: &Decision, ctx: &AccessContext<'_>, body: &[u8]) -> Result<ResponseCheck, FhirError> {
    check_and_rebase_response(d, ctx, body, None)
}

/// The base URLs of a FHIR route, for [`check_and_rebase_response`].
#[derive(Debug, Clone, Copy)]
pub struct Bases<'a> {
    /// The backend's base URL, as it writes it in its responses.
    pub backend: &'a str,
    /// The gateway's public base URL for the same route.
    pub public: &'a str,
    /// On a route that strips its prefix: the public base *without* the prefix
    /// (`https://gw.example.jp` for `https://gw.example.jp/api/fhir`), which a backend
    /// that builds URLs from `X-Forwarded-Host`/`-Proto` and ignores
    /// `X-Forwarded-Prefix` writes. URLs on it are moved under `public` too.
    pub unprefixed: Option<&'a str>,
}

impl<'a> Bases<'a> {
    /// The usual pair: backend base to public base.
    pub fn new(backend: &'a str, public: &'a str) -> Self {
        Self {
            backend,
            public,
            unprefixed: None,
        }
    }

    /// One URL moved to the public base, or `None` when it needs no change: it is
    /// already under the public base (checked first, so a backend that honours
    /// `X-Forwarded-Prefix` is never prefixed twice), or under neither other base.
    pub fn rewrite(&self, url: &str) -> Option<String> {
        let (cut, base) = self.rebase(url)?;
        let rest = &url[cut..];
        let mut new = String::with_capacity(base.len() + rest.len());
        new.push_str(base);
        new.push_str(rest);
        Some(new)
    }

    /// [`Bases::rewrite`] as a splice: the URL is `base` followed by `url[cut..]`.
    pub(crate) fn rebase(&self, url: &str) -> Option<(usize, &'a str)> {
        if rest_under(url, self.public).is_some() {
            return None;
        }
        let public = self.public.trim_end_matches('/');
        if let Some(rest) = rest_under(url, self.backend) {
            return Some((url.len() - rest.len(), public));
        }
        let rest = rest_under(url, self.unprefixed?)?;
        let cut = url.len() - rest.len();
        // `public` is origin + prefix; a path already under the prefix (on a host other
        // than the public one) keeps it and only changes origin.
        let (origin, prefix) = split_origin(public);
        if !prefix.is_empty() && rest_under(rest, prefix).is_some() {
            return Some((cut, origin));
        }
        Some((cut, public))
    }
}

/// `scheme://authority` and the path of an absolute URL without query or fragment.
fn split_origin(url: &str) -> (&str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    url.split_at(end)
}

/// What follows `base` in `url`, when `url` is `base` or below it at a path boundary.
pub(crate) fn rest_under<'u>(url: &'u str, base: &str) -> Option<&'u str> {
    let rest = url.strip_prefix(base.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// [`check_response`] and the base-URL rewrite with `bases` (EX-SEG-1 with ACL-PHR-1),
/// in one pass over the body ([`check_and_edit_response`]); a changed body comes back as
/// a new buffer. The gateway uses [`check_and_edit_response`] itself, to edit the
/// body's own buffer.
pub fn check_and_rebase_response(
    d: &Decision,
    ctx: &AccessContext<'_>,
    body: &[u8],
    bases: Option<Bases<'_>>,
) -> Result<ResponseCheck, FhirError> {
    let checked = check_and_edit_response(d, ctx, body, bases)?;
    let body = if checked.edits.is_empty() {
        ResponseBody::Unchanged
    } else {
        ResponseBody::Rewritten(checked.edits.apply(body))
    };
    Ok(ResponseCheck {
        body,
        removed: checked.removed,
        touched: checked.touched,
    })
}

/// Checks the current version of a resource fetched for a [`Decision::pre_reads`] path:
/// the write or delete may go ahead only if that resource belongs to the patient.
pub fn check_existing(d: &Decision, body: &[u8]) -> Result<(), FhirError> {
    let Some(p) = d.patient.as_deref() else {
        return Ok(());
    };
    let v = parse(body)?;
    if belongs_to(&v, p) {
        Ok(())
    } else {
        Err(FhirError::ResponseOtherPatient {
            resource_type: v
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("resource")
                .to_owned(),
        })
    }
}

/// Bundle types that carry results to filter (not documents, messages or collections).
pub(crate) fn is_result_type(t: &str) -> bool {
    matches!(t, "searchset" | "history" | "batch-response" | "transaction-response")
}

/// The entry that answers, in a batch/transaction-response, both for a resource that
/// does not exist and for one outside the patient's compartment: a patient's token must
/// not learn which of the two it was (ACL-PHR-1).
pub(crate) fn not_found_entry() -> Value {
    serde_json::json!({
        "response": {
            "status": "404 Not Found",
            "outcome": operation_outcome_value(404, "not-found", "the resource was not found", None),
        }
    })
}

/// Rewrites one URL (a `Location` / `Content-Location` header value, a `fullUrl`) from the
/// backend's base to the public base. `None` when it does not start with the backend base
/// at a path boundary (so `https://b/fhir2` is not taken for `https://b/fhir`).
pub fn rewrite_base_url(value: &str, backend_base: &str, public_base: &str) -> Option<String> {
    let rest = rest_under(value, backend_base)?;
    // Not `format!`: this runs for every `fullUrl` of a Bundle.
    let public = public_base.trim_end_matches('/');
    let mut url = String::with_capacity(public.len() + rest.len());
    url.push_str(public);
    url.push_str(rest);
    Some(url)
}

fn fix_url(s: &mut Value, bases: &Bases<'_>) -> bool {
    match s.as_str().and_then(|u| bases.rewrite(u)) {
        Some(new) => {
            *s = Value::String(new);
            true
        }
        None => false,
    }
}

/// Rewrites `link[].url`, `entry[].fullUrl` and `entry[].response.location` of a Bundle
/// (and of Bundles nested in entries) in place; returns whether anything changed.
pub fn rewrite_base_urls_in_value(v: &mut Value, backend_base: &str, public_base: &str) -> bool {
    rebase_value(v, &Bases::new(backend_base, public_base))
}

/// [`rewrite_base_urls_in_value`] with all of a route's [`Bases`].
pub fn rebase_value(v: &mut Value, bases: &Bases<'_>) -> bool {
    let mut changed = false;
    for link in v.get_mut("link").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(u) = link.get_mut("url") {
            changed |= fix_url(u, bases);
        }
    }
    for entry in v.get_mut("entry").and_then(Value::as_array_mut).into_iter().flatten() {
        changed |= rewrite_entry_urls(entry, bases);
    }
    changed
}

/// The entry part of [`rebase_value`]: `fullUrl`, `response.location`, and a nested
/// Bundle's URLs.
pub(crate) fn rewrite_entry_urls(entry: &mut Value, bases: &Bases<'_>) -> bool {
    let mut changed = false;
    if let Some(u) = entry.get_mut("fullUrl") {
        changed |= fix_url(u, bases);
    }
    if let Some(u) = entry.pointer_mut("/response/location") {
        changed |= fix_url(u, bases);
    }
    if let Some(r) = entry.get_mut("resource") {
        if r.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            changed |= rebase_value(r, bases);
        }
    }
    changed
}

/// Byte-level form of [`rewrite_base_urls_in_value`]: `Ok(None)` when nothing changed.
pub fn rewrite_body_base_urls(
    body: &[u8],
    backend_base: &str,
    public_base: &str,
) -> Result<Option<Vec<u8>>, FhirError> {
    let mut v = parse(body)?;
    if rewrite_base_urls_in_value(&mut v, backend_base, public_base) {
        Ok(Some(serde_json::to_vec(&v).expect("a Value always serialises")))
    } else {
        Ok(None)
    }
}
