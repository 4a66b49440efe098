//! The response check as it was before the one-pass version ([`crate::one_pass`]): the
//! body parsed into `serde_json::Value`s (one entry at a time for a top-level result
//! Bundle) and the changed document re-encoded. Kept only as the oracle of the property
//! test that the one-pass check decides the same (ACL-PHR-1, EX-SEG-1, LOG-ACC-1).

use crate::authorize::{AccessContext, Decision};
use crate::error::FhirError;
use crate::references::resource_patients;
use crate::response::{
    belongs_to, is_result_type, not_found_entry, parse, rebase_value, rewrite_entry_urls, Bases, ResponseBody,
    ResponseCheck,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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

/// [`check_response`], then [`rewrite_base_urls_in_value`] with `bases`, on one parse
/// of the body: a large Bundle is parsed and serialised once instead of twice, which
/// halves both the CPU and the peak memory of the check (EX-SEG-1 with ACL-PHR-1).
pub(crate) fn check_and_rebase_response(
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

fn is_result_bundle(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str).is_some_and(is_result_type)
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
