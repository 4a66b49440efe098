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
use crate::outcome::operation_outcome_value;
use crate::references::{for_each_reference, resource_patients};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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

fn parse(body: &[u8]) -> Result<Value, FhirError> {
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

fn collect(resource: &Value, out: &mut BTreeSet<String>) {
    resource_patients(resource, &mut |id| {
        out.insert(id.to_owned());
    });
    for c in resource
        .get("contained")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        resource_patients(c, &mut |id| {
            out.insert(id.to_owned());
        });
    }
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
        if rest_under(url, self.public).is_some() {
            return None;
        }
        if let Some(new) = rewrite_base_url(url, self.backend, self.public) {
            return Some(new);
        }
        let rest = rest_under(url, self.unprefixed?)?;
        let public = self.public.trim_end_matches('/');
        // `public` is origin + prefix; a path already under the prefix (on a host other
        // than the public one) keeps it and only changes origin.
        let (origin, prefix) = split_origin(public);
        if !prefix.is_empty() && rest_under(rest, prefix).is_some() {
            return Some(format!("{origin}{rest}"));
        }
        Some(format!("{public}{rest}"))
    }
}

/// `scheme://authority` and the path of an absolute URL without query or fragment.
fn split_origin(url: &str) -> (&str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    url.split_at(end)
}

/// What follows `base` in `url`, when `url` is `base` or below it at a path boundary.
fn rest_under<'u>(url: &'u str, base: &str) -> Option<&'u str> {
    let rest = url.strip_prefix(base.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// [`check_response`], then [`rewrite_base_urls_in_value`] with `bases`, on one parse
/// of the body: a large Bundle is parsed and serialised once instead of twice, which
/// halves both the CPU and the peak memory of the check (EX-SEG-1 with ACL-PHR-1).
pub fn check_and_rebase_response(
    d: &Decision,
    ctx: &AccessContext<'_>,
    body: &[u8],
    bases: Option<Bases<'_>>,
) -> Result<ResponseCheck, FhirError> {
    let mut out = ResponseCheck {
        body: ResponseBody::Unchanged,
        removed: 0,
        touched: BTreeSet::new(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let confine = if d.response_check { d.patient.as_deref() } else { None };
    let filter = Filter { patient: confine, ctx };
    // A first, shallow pass: the top-level fields as raw JSON. A result Bundle is then
    // checked one entry at a time; anything else is small and parsed whole.
    // (Not an object, or not JSON: the full parse below says what is wrong.)
    if let Ok(top) = serde_json::from_slice::<BTreeMap<String, &RawValue>>(body) {
        let field = |name: &str| top.get(name).and_then(|v| serde_json::from_str::<String>(v.get()).ok());
        if field("resourceType").as_deref() == Some("Bundle") && field("type").as_deref().is_some_and(is_result_type) {
            let checks = if d.entry_checks.is_empty() {
                None
            } else {
                Some(d.entry_checks.as_slice())
            };
            check_bundle(top, &filter, checks, bases, &mut out)?;
            return Ok(out);
        }
    }
    let mut v = parse(body)?;
    let rt = v.get("resourceType").and_then(Value::as_str).unwrap_or("");
    if rt.is_empty() {
        return Err(FhirError::InvalidUpstreamResponse {
            detail: "response is not a FHIR resource".into(),
        });
    }
    if let Some(p) = confine {
        if !belongs_to(&v, p) {
            return Err(FhirError::ResponseOtherPatient {
                resource_type: rt.to_owned(),
            });
        }
        // Any other Bundle (a document, a collection) is outside the compartment
        // itself but carries resources that are not: each must pass as a released
        // resource would, or the whole Bundle is refused.
        if let Some(foreign) = first_foreign_entry(&filter, &v) {
            return Err(FhirError::ResponseOtherPatient { resource_type: foreign });
        }
    }
    collect(&v, &mut out.touched);
    for_each_entry_resource(&v, &mut |r| collect(r, &mut out.touched));
    let rebased = bases.is_some_and(|b| rebase_value(&mut v, &b));
    if out.removed > 0 || rebased {
        out.body = ResponseBody::Rewritten(serde_json::to_vec(&v).expect("a Value always serialises"));
    }
    Ok(out)
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

fn is_result_bundle(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str).is_some_and(is_result_type)
}

/// Bundle types that carry results to filter (not documents, messages or collections).
fn is_result_type(t: &str) -> bool {
    matches!(t, "searchset" | "history" | "batch-response" | "transaction-response")
}

struct Filter<'a, 'c> {
    patient: Option<&'a str>,
    ctx: &'a AccessContext<'c>,
}

impl Filter<'_, '_> {
    /// Whether a released resource passes: it belongs to the patient and its type is one
    /// the scopes let the client read (entries pulled in by `_include` may be of any type).
    fn passes(&self, resource: &Value) -> bool {
        let Some(p) = self.patient else { return true };
        let rt = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if rt == "OperationOutcome" || rt == "Bundle" {
            return true;
        }
        // Granular constraints were checked on the request; here any scope that lets the
        // client see this type at all is enough.
        let readable = self.ctx.scopes.may_see(rt);
        readable && belongs_to(resource, p)
    }

    /// Filters a result Bundle in place; returns the number of entries removed/replaced.
    /// Used for Bundles nested in entries; a top-level Bundle goes through [`check_bundle`],
    /// which parses one entry at a time.
    fn bundle(&self, v: &mut Value, checks: Option<&[bool]>, touched: &mut BTreeSet<String>) -> usize {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
        let Some(entries) = v.get_mut("entry").and_then(Value::as_array_mut) else {
            return 0;
        };
        let (mut removed, mut removed_matches) = (0, 0u64);
        let mut kept = Vec::with_capacity(entries.len());
        for (i, mut entry) in std::mem::take(entries).into_iter().enumerate() {
            let step = self.entry(i, &mut entry, &kind, checks, touched);
            removed += step.removed;
            match step.verdict {
                Verdict::Keep => kept.push(entry),
                Verdict::Replace(with) => kept.push(with),
                Verdict::Drop => {}
            }
            removed_matches += u64::from(step.removed_match);
        }
        *entries = kept;
        if let Some(total) = v.get_mut("total") {
            if let Some(t) = total.as_u64() {
                *total = Value::from(t.saturating_sub(removed_matches));
            }
        }
        removed
    }

    /// Decides one entry of a result Bundle of type `kind`: kept (its patients go into
    /// `touched`), dropped, or, in a batch/transaction-response (where entries answer
    /// request entries by position), replaced by a 403 entry. A nested result Bundle is
    /// filtered in place.
    fn entry(
        &self,
        i: usize,
        entry: &mut Value,
        kind: &str,
        checks: Option<&[bool]>,
        touched: &mut BTreeSet<String>,
    ) -> EntryStep {
        let check_this = self.patient.is_some() && checks.is_none_or(|c| c.get(i).copied().unwrap_or(true));
        let mut step = EntryStep {
            verdict: Verdict::Keep,
            removed: 0,
            removed_match: false,
        };
        let answers_by_position = kind == "batch-response" || kind == "transaction-response";
        if check_this && answers_by_position && answered_absent(entry) {
            // The backend's own "not found" is replaced by the same entry a foreign
            // resource gets, so the two cannot be told apart (ACL-PHR-1).
            step.verdict = Verdict::Replace(not_found_entry());
            return step;
        }
        let mut ok = true;
        if let Some(res) = entry.get_mut("resource") {
            if res.get("resourceType").and_then(Value::as_str) == Some("Bundle") && is_result_bundle(res) {
                let sub = Filter {
                    patient: if check_this { self.patient } else { None },
                    ctx: self.ctx,
                };
                step.removed += sub.bundle(res, None, touched);
            } else if check_this {
                ok = self.passes(res);
            }
        } else if check_this && kind == "history" {
            ok = false; // a deleted version carries no resource to verify
        }
        if ok {
            if let Some(res) = entry.get("resource") {
                collect(res, touched);
            }
            return step;
        }
        step.removed += 1;
        step.removed_match = entry.pointer("/search/mode").and_then(Value::as_str) != Some("include");
        step.verdict = if answers_by_position {
            Verdict::Replace(not_found_entry())
        } else {
            Verdict::Drop
        };
        step
    }
}

/// Whether a batch/transaction-response entry says its target does not exist (404 or
/// 410 Gone).
fn answered_absent(entry: &Value) -> bool {
    entry
        .pointer("/response/status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("404") || s.starts_with("410"))
}

/// The entry that answers, in a batch/transaction-response, both for a resource that
/// does not exist and for one outside the patient's compartment: a patient's token must
/// not learn which of the two it was (ACL-PHR-1).
fn not_found_entry() -> Value {
    serde_json::json!({
        "response": {
            "status": "404 Not Found",
            "outcome": operation_outcome_value(404, "not-found", "the resource was not found", None),
        }
    })
}

/// Calls `f` with every entry's resource of a Bundle, and of Bundles nested in it.
fn for_each_entry_resource(bundle: &Value, f: &mut dyn FnMut(&Value)) {
    for res in bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
    {
        f(res);
        if res.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            for_each_entry_resource(res, f);
        }
    }
}

/// The type of the first resource inside `bundle` (at any depth) that `filter` would
/// not release; `None` when all pass or `bundle` is not a Bundle.
fn first_foreign_entry(filter: &Filter<'_, '_>, bundle: &Value) -> Option<String> {
    let mut foreign = None;
    for_each_entry_resource(bundle, &mut |r| {
        if foreign.is_none() && !filter.passes(r) {
            foreign = Some(
                r.get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("resource")
                    .to_owned(),
            );
        }
    });
    foreign
}

/// What [`Filter::entry`] decided.
struct EntryStep {
    verdict: Verdict,
    /// Entries removed or replaced, this one and any in a nested Bundle.
    removed: usize,
    /// This entry was removed and was a match (not an `_include`): `total` counts it.
    removed_match: bool,
}

enum Verdict {
    Keep,
    Drop,
    Replace(Value),
}

/// A top-level result Bundle, checked one entry at a time: only the Bundle's own small
/// fields and one entry are ever parsed into a `Value` (whose tree is ~17× the JSON
/// text), and entries that need no change are written back as the backend's bytes. So
/// the peak memory of checking a 20 MiB search page is a few times the page, not 17×.
/// Same decisions as [`Filter::bundle`], which it shares [`Filter::entry`] with.
fn check_bundle(
    top: BTreeMap<String, &RawValue>,
    filter: &Filter<'_, '_>,
    checks: Option<&[bool]>,
    bases: Option<Bases<'_>>,
    out: &mut ResponseCheck,
) -> Result<bool, FhirError> {
    let invalid = |e: serde_json::Error| FhirError::InvalidUpstreamResponse { detail: e.to_string() };
    let kind: String = match top.get("type") {
        Some(t) => serde_json::from_str(t.get()).map_err(invalid)?,
        None => String::new(),
    };
    let mut changed = false;
    let mut fields: BTreeMap<&str, Raw<'_>> = top.iter().map(|(k, v)| (k.as_str(), Raw::Backend(v))).collect();
    let mut removed_matches = 0u64;
    if let Some(raw) = top.get("entry") {
        let entries: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(invalid)?;
        let mut kept = Vec::with_capacity(entries.len());
        for (i, raw) in entries.into_iter().enumerate() {
            let mut entry: Value = serde_json::from_str(raw.get()).map_err(invalid)?;
            let step = filter.entry(i, &mut entry, &kind, checks, &mut out.touched);
            out.removed += step.removed;
            removed_matches += u64::from(step.removed_match);
            let rebased =
                matches!(step.verdict, Verdict::Keep) && bases.is_some_and(|b| rewrite_entry_urls(&mut entry, &b));
            match step.verdict {
                Verdict::Keep if step.removed == 0 && !rebased => kept.push(Raw::Backend(raw)),
                Verdict::Keep => kept.push(Raw::owned(&entry)),
                Verdict::Replace(with) => kept.push(Raw::owned(&with)),
                Verdict::Drop => {}
            }
        }
        changed |= out.removed > 0 || kept.iter().any(|e| matches!(e, Raw::Gateway(_)));
        fields.insert("entry", Raw::Entries(kept));
    }
    if removed_matches > 0 {
        if let Some(t) = top.get("total").and_then(|t| t.get().trim().parse::<u64>().ok()) {
            fields.insert("total", Raw::owned(&Value::from(t.saturating_sub(removed_matches))));
        }
    }
    if let (Some(b), Some(raw)) = (bases, top.get("link")) {
        let mut links = serde_json::json!({ "link": serde_json::from_str::<Value>(raw.get()).map_err(invalid)? });
        if rebase_value(&mut links, &b) {
            fields.insert("link", Raw::owned(&links["link"]));
            changed = true;
        }
    }
    if changed {
        out.body = ResponseBody::Rewritten(serde_json::to_vec(&fields).expect("JSON values always serialise"));
    }
    Ok(changed)
}

/// A piece of the Bundle being written back: the backend's bytes untouched, the
/// gateway's replacement, or the (filtered) entry list.
#[derive(Serialize)]
#[serde(untagged)]
enum Raw<'a> {
    Backend(&'a RawValue),
    Gateway(Box<RawValue>),
    Entries(Vec<Raw<'a>>),
}

impl Raw<'_> {
    fn owned(v: &Value) -> Self {
        Raw::Gateway(serde_json::value::to_raw_value(v).expect("a Value always serialises"))
    }
}

/// Rewrites one URL (a `Location` / `Content-Location` header value, a `fullUrl`) from the
/// backend's base to the public base. `None` when it does not start with the backend base
/// at a path boundary (so `https://b/fhir2` is not taken for `https://b/fhir`).
pub fn rewrite_base_url(value: &str, backend_base: &str, public_base: &str) -> Option<String> {
    let rest = rest_under(value, backend_base)?;
    Some(format!("{}{rest}", public_base.trim_end_matches('/')))
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
fn rewrite_entry_urls(entry: &mut Value, bases: &Bases<'_>) -> bool {
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
