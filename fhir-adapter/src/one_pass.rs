//! The response check in one pass over the backend's bytes: the patient compartment
//! (filtering a result Bundle, refusing anything else that is not the patient's) and the
//! base-URL rewrite (`fullUrl`, `link.url`, `response.location`) together, reading what
//! one tokenizer pass over the body recorded ([`crate::scan`]) and answering with
//! splices ([`Edits`]) instead of a re-encoded document. A result Bundle's entries are
//! decided while they are read, one at a time.
//!
//! Requirements: ACL-PHR-1 / ACL-ROLE-1 (a `patient/` token never receives another
//! patient's record), EX-SEG-1 (the backend's base URL is not exposed; only well-formed
//! JSON is released), LOG-ACC-1 (the patients whose data is released are reported).
//!
//! The decisions are those of the Value-based implementation this replaced (kept as the
//! test oracle in `response_oracle.rs`, and compared with it on generated Bundles), with
//! three refusals added, all fail-closed:
//! - an object the check reads that names a member twice (a client could read the other);
//! - an `entry` that is not a list, in any Bundle (it was passed unchecked when nested);
//! - in a result Bundle under a patient's token, an entry whose resource is a Bundle of
//!   another kind (a document, a collection) is released only if everything inside it
//!   would be (it used to pass unchecked, as a Bundle is outside the compartment).

use crate::authorize::{AccessContext, Decision};
use crate::compartment::{patient_id_of_reference, patient_links, Link};
use crate::edits::{is_plain_json_text, Edits};
use crate::error::FhirError;
use crate::response::{is_result_type, not_found_entry, Bases};
use crate::scan::{invalid, Doc, EntrySink, Obj, Val};
use crate::scopes::Scopes;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;

/// What [`check_and_edit_response`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditedCheck {
    /// The splices that turn the backend's body into the one to release (none: release it
    /// as it is).
    pub edits: Edits,
    /// Number of entries removed or replaced.
    pub removed: usize,
    /// Patient ids of the resources released (LOG-ACC-1).
    pub touched: BTreeSet<String>,
}

/// [`crate::check_and_rebase_response`] as splices on `body`: apply them with
/// [`Edits::apply_in_place`] to the body's own buffer, so a large Bundle is never held
/// twice. Same decisions, same errors.
pub fn check_and_edit_response(
    d: &Decision,
    ctx: &AccessContext<'_>,
    body: &[u8],
    bases: Option<Bases<'_>>,
) -> Result<EditedCheck, FhirError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EditedCheck::default());
    }
    let text = std::str::from_utf8(body).map_err(|e| invalid(format_args!("the response is not UTF-8: {e}")))?;
    let confine = if d.response_check { d.patient.as_deref() } else { None };
    let checks = (!d.entry_checks.is_empty()).then_some(d.entry_checks.as_slice());
    let mut pass = Pass {
        ctx,
        bases,
        plain_bases: bases.is_none_or(|b| is_plain_json_text(b.public)),
        types: TypeMemo::default(),
        checks,
        confine,
        edits: Edits::default(),
        touched: BTreeSet::new(),
        removed: 0,
        not_found: None,
        listing: None,
    };
    let (doc, top) = Doc::read(text, &mut pass)?;
    let top = doc.obj(top);
    if let Some(listing) = pass.listing.take() {
        // The entries were decided as they were read.
        pass.removed = pass.finish_listing(&top, listing)?;
    } else if top.str("resourceType").as_deref() == Some("Bundle")
        && top.str("type").is_some_and(|t| is_result_type(&t))
    {
        pass.removed = pass.result_bundle(&top, checks, confine)?;
    } else {
        pass.single(&top, confine)?;
    }
    if !pass.edits.finish(body.len()) {
        return Err(invalid("internal: overlapping edits of the response"));
    }
    Ok(EditedCheck {
        edits: pass.edits,
        removed: pass.removed,
        touched: pass.touched,
    })
}

/// The patients one resource names.
struct Named<'a> {
    resource_type: Option<Cow<'a, str>>,
    /// How its type ties it to a patient (`None`: outside the compartment).
    links: Option<&'static [Link]>,
    /// Its own id, when it is a Patient.
    own_id: Option<Cow<'a, str>>,
    /// Patients its compartment references point at.
    refs: Vec<Cow<'a, str>>,
    /// Patients its contained resources name (ids and references).
    contained: Vec<Cow<'a, str>>,
}

impl<'a> Named<'a> {
    fn of(resource: &Obj<'_, 'a>, types: &TypeMemo) -> Result<Self, FhirError> {
        let mut n = Named {
            resource_type: resource.str("resourceType"),
            links: None,
            own_id: None,
            refs: Vec::new(),
            contained: Vec::new(),
        };
        if let Some(rt) = n.resource_type.as_deref() {
            if rt == "Patient" {
                n.own_id = resource.str("id");
            }
            n.links = types.links(rt);
            compartment_refs(resource, n.links, &mut n.refs)?;
        }
        for c in resource
            .get("contained")
            .map(|c| c.items())
            .transpose()?
            .flatten()
            .unwrap_or_default()
        {
            if let Some(c) = c.obj()? {
                resource_patients(&c, types, &mut n.contained)?;
            }
        }
        Ok(n)
    }

    /// Whether the resource belongs to patient `p` (as [`crate::belongs_to`]): it is
    /// `Patient/p` or a compartment reference points at `Patient/p`, and no contained
    /// resource names another patient. Types outside the compartment belong to everyone.
    fn belongs_to(&self, p: &str) -> bool {
        let Some(rt) = self.resource_type.as_deref() else {
            return false;
        };
        if self.links.is_none() {
            return true;
        }
        let clean = self.contained.iter().all(|id| id == p);
        if rt == "Patient" && self.own_id.as_deref() == Some(p) {
            return clean;
        }
        clean && self.refs.iter().any(|id| id == p)
    }

    fn into_ids(self, out: &mut Vec<Cow<'a, str>>) {
        out.extend(self.ids());
    }

    fn ids(self) -> impl Iterator<Item = Cow<'a, str>> {
        self.own_id.into_iter().chain(self.refs).chain(self.contained)
    }
}

/// What the check needs of a resource type, remembered for the last type looked up: a
/// searchset's entries are mostly of one type, and comparing one name costs less than
/// the compartment table's binary search and the walk over the scopes did for every
/// entry (issue 23, target 2).
#[derive(Default)]
struct TypeMemo {
    last: RefCell<Option<TypeFacts>>,
}

struct TypeFacts {
    name: String,
    links: Option<&'static [Link]>,
    /// [`Scopes::may_see`], once asked.
    visible: Option<bool>,
}

impl TypeMemo {
    fn facts<T>(&self, resource_type: &str, read: impl FnOnce(&mut TypeFacts) -> T) -> T {
        let mut last = self.last.borrow_mut();
        let facts = match &mut *last {
            Some(f) if f.name == resource_type => f,
            other => other.insert(TypeFacts {
                name: resource_type.to_owned(),
                links: patient_links(resource_type),
                visible: None,
            }),
        };
        read(facts)
    }

    /// [`patient_links`] of the type.
    fn links(&self, resource_type: &str) -> Option<&'static [Link]> {
        self.facts(resource_type, |f| f.links)
    }

    /// [`Scopes::may_see`] of the type.
    fn may_see(&self, resource_type: &str, scopes: &Scopes) -> bool {
        self.facts(resource_type, |f| {
            *f.visible.get_or_insert_with(|| scopes.may_see(resource_type))
        })
    }
}

/// The patient ids a resource names: its own id when it is a Patient, and its
/// compartment references.
fn resource_patients<'a>(
    resource: &Obj<'_, 'a>,
    types: &TypeMemo,
    out: &mut Vec<Cow<'a, str>>,
) -> Result<(), FhirError> {
    let Some(rt) = resource.str("resourceType") else {
        return Ok(());
    };
    if rt == "Patient" {
        out.extend(resource.str("id"));
    }
    compartment_refs(resource, types.links(&rt), out)
}

/// The patients the compartment reference fields (`links` of its type) point at.
fn compartment_refs<'a>(
    resource: &Obj<'_, 'a>,
    links: Option<&'static [Link]>,
    out: &mut Vec<Cow<'a, str>>,
) -> Result<(), FhirError> {
    let mut patient = |r: Val<'_, 'a>| -> Result<(), FhirError> {
        match r.obj()?.and_then(|o| o.str("reference")) {
            Some(Cow::Borrowed(s)) => out.extend(patient_id_of_reference(s).map(Cow::Borrowed)),
            Some(Cow::Owned(s)) => out.extend(patient_id_of_reference(&s).map(|id| Cow::Owned(id.to_owned()))),
            None => {}
        }
        Ok(())
    };
    for link in links.unwrap_or(&[]) {
        for path in link.paths {
            refs_in_obj(resource, path, &mut patient)?;
        }
    }
    Ok(())
}

/// Each value at dotted `path` below `obj` (arrays on the way traversed, an array at the
/// end spread), in order, as [`crate::references`] walks a `Value`.
fn refs_in_obj<'d, 'a>(
    obj: &Obj<'d, 'a>,
    path: &str,
    each: &mut dyn FnMut(Val<'d, 'a>) -> Result<(), FhirError>,
) -> Result<(), FhirError> {
    // Not `split_once`: a byte loop over a short static path costs less than its memchr.
    match path.bytes().position(|b| b == b'.') {
        None => {
            if let Some(r) = obj.get(path) {
                match r.items()? {
                    Some(list) => list.into_iter().try_for_each(each)?,
                    None => each(r)?,
                }
            }
        }
        Some(dot) => {
            if let Some(next) = obj.get(&path[..dot]) {
                refs_at(next, &path[dot + 1..], each)?;
            }
        }
    }
    Ok(())
}

fn refs_at<'d, 'a>(
    v: Val<'d, 'a>,
    path: &str,
    each: &mut dyn FnMut(Val<'d, 'a>) -> Result<(), FhirError>,
) -> Result<(), FhirError> {
    if let Some(list) = v.items()? {
        for item in list {
            refs_at(item, path, each)?;
        }
    } else if let Some(obj) = v.obj()? {
        refs_in_obj(&obj, path, each)?;
    }
    Ok(())
}

/// What becomes of one entry of a result Bundle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Drop,
    /// Replaced by the not-found entry (a batch/transaction-response keeps positions).
    Replace,
}

struct Step {
    fate: Fate,
    /// Entries removed or replaced: this one and any in a nested Bundle.
    removed: usize,
    /// This entry was removed and was a match (not an `_include`): `total` counts it.
    removed_match: bool,
}

/// The decisions on a result Bundle's entries, in order.
struct Listing {
    /// The Bundle's `type`.
    kind: String,
    removed: usize,
    removed_matches: u64,
    fates: Vec<Fate>,
    spans: Vec<Range<usize>>,
}

impl Listing {
    fn new(kind: String) -> Self {
        Listing {
            kind,
            removed: 0,
            removed_matches: 0,
            fates: Vec::new(),
            spans: Vec::new(),
        }
    }

    fn add(&mut self, step: Step, span: Range<usize>) {
        self.removed += step.removed;
        self.removed_matches += u64::from(step.removed_match);
        self.fates.push(step.fate);
        self.spans.push(span);
    }
}

struct Pass<'b, 'c> {
    ctx: &'b AccessContext<'c>,
    bases: Option<Bases<'b>>,
    /// Whether the public base needs no JSON escaping (every base a rebase splices in
    /// is a prefix of it), so that it is not checked again for every URL.
    plain_bases: bool,
    types: TypeMemo,
    /// The per-entry checks of the top-level result Bundle, and the patient it is
    /// confined to.
    checks: Option<&'b [bool]>,
    confine: Option<&'b str>,
    edits: Edits,
    touched: BTreeSet<String>,
    removed: usize,
    /// The not-found entry, encoded once.
    not_found: Option<Vec<u8>>,
    /// The top-level result Bundle's entries decided so far, while they are read.
    listing: Option<Listing>,
}

impl<'a> EntrySink<'a> for Pass<'_, '_> {
    fn stream(&mut self, bundle_type: &str) -> bool {
        if !is_result_type(bundle_type) {
            return false;
        }
        self.listing = Some(Listing::new(bundle_type.to_owned()));
        true
    }

    fn entry(&mut self, _: &Doc<'a>, index: usize, entry: Val<'_, 'a>) -> Result<(), FhirError> {
        let mut listing = self
            .listing
            .take()
            .ok_or_else(|| invalid("internal: an entry outside a result Bundle"))?;
        let step = self.entry(index, entry, &listing.kind, self.checks, self.confine)?;
        listing.add(step, entry.span());
        self.listing = Some(listing);
        Ok(())
    }
}

impl<'a> Pass<'_, '_> {
    /// A response that is not a result Bundle: it must belong to the patient, and so must
    /// every resource carried in its entries (a document, a collection), at any depth.
    fn single(&mut self, top: &Obj<'_, 'a>, confine: Option<&str>) -> Result<(), FhirError> {
        let named = Named::of(top, &self.types)?;
        let rt = named.resource_type.as_deref().unwrap_or("");
        if rt.is_empty() {
            return Err(invalid("response is not a FHIR resource"));
        }
        if let Some(p) = confine {
            if !named.belongs_to(p) {
                return Err(FhirError::ResponseOtherPatient {
                    resource_type: rt.to_owned(),
                });
            }
        }
        let mut found = Vec::new();
        named.into_ids(&mut found);
        if let Some(foreign) = self.bundle_contents(top, confine, &mut found)? {
            return Err(FhirError::ResponseOtherPatient { resource_type: foreign });
        }
        self.touch(found);
        self.rebase_bundle(top)
    }

    /// Every resource in the entries of `bundle`, at any depth: the type of the first
    /// that `patient` may not see, or `None` with the patients of all in `found`.
    fn bundle_contents(
        &self,
        bundle: &Obj<'_, 'a>,
        patient: Option<&str>,
        found: &mut Vec<Cow<'a, str>>,
    ) -> Result<Option<String>, FhirError> {
        for entry in entries(bundle)?.unwrap_or_default() {
            let Some(res) = entry.obj()?.and_then(|e| e.get("resource")) else {
                continue;
            };
            let Some(res) = res.obj()? else {
                if patient.is_some() {
                    return Ok(Some("resource".into()));
                }
                continue;
            };
            let named = Named::of(&res, &self.types)?;
            let is_bundle = named.resource_type.as_deref() == Some("Bundle");
            if let Some(p) = patient {
                if !is_bundle && !self.passes(&named, p) {
                    return Ok(Some(named.resource_type.as_deref().unwrap_or("resource").to_owned()));
                }
            }
            named.into_ids(found);
            if is_bundle {
                if let Some(foreign) = self.bundle_contents(&res, patient, found)? {
                    return Ok(Some(foreign));
                }
            }
        }
        Ok(None)
    }

    /// Reports the patients of released resources (LOG-ACC-1); a search names the same
    /// patient in every entry, so an id is copied only the first time.
    fn touch(&mut self, found: impl IntoIterator<Item = Cow<'a, str>>) {
        for id in found {
            if !self.touched.contains(id.as_ref()) {
                self.touched.insert(id.into_owned());
            }
        }
    }

    /// Whether a released resource (not a Bundle) passes: an OperationOutcome, or a type
    /// the scopes let the client read that belongs to the patient (entries pulled in by
    /// `_include` may be of any type).
    fn passes(&self, named: &Named<'_>, p: &str) -> bool {
        let rt = named.resource_type.as_deref().unwrap_or("");
        if rt == "OperationOutcome" {
            return true;
        }
        // Granular constraints were checked on the request; here any scope that lets the
        // client see this type at all is enough.
        self.types.may_see(rt, self.ctx.scopes) && named.belongs_to(p)
    }

    /// Filters a result Bundle's entries (removing, or in a batch/transaction-response
    /// replacing, what `patient` may not see), corrects `total`, and rebases the kept
    /// entries' URLs and the Bundle's links. Returns the entries removed or replaced,
    /// nested ones included.
    fn result_bundle(
        &mut self,
        bundle: &Obj<'_, 'a>,
        checks: Option<&[bool]>,
        patient: Option<&str>,
    ) -> Result<usize, FhirError> {
        let mut listing = Listing::new(bundle.str("type").unwrap_or_default().into_owned());
        for (i, entry) in entries(bundle)?.unwrap_or_default().into_iter().enumerate() {
            let step = self.entry(i, entry, &listing.kind, checks, patient)?;
            listing.add(step, entry.span());
        }
        self.finish_listing(bundle, listing)
    }

    /// The rest of [`Pass::result_bundle`] once every entry is decided.
    fn finish_listing(&mut self, bundle: &Obj<'_, 'a>, listing: Listing) -> Result<usize, FhirError> {
        self.splice_entries(&listing.spans, &listing.fates);
        if listing.removed_matches > 0 {
            if let Some(raw) = bundle.get("total") {
                if let Ok(total) = raw.text().parse::<u64>() {
                    let fixed = total.saturating_sub(listing.removed_matches).to_string();
                    self.edits.push(raw.span(), fixed.as_bytes());
                }
            }
        }
        self.rebase_links(bundle)?;
        Ok(listing.removed)
    }

    /// Decides one entry of a result Bundle of type `kind`; a kept entry's patients go
    /// into `touched` and its URLs are rebased.
    fn entry(
        &mut self,
        i: usize,
        raw: Val<'_, 'a>,
        kind: &str,
        checks: Option<&[bool]>,
        patient: Option<&str>,
    ) -> Result<Step, FhirError> {
        let check_this = patient.is_some() && checks.is_none_or(|c| c.get(i).copied().unwrap_or(true));
        let by_position = kind == "batch-response" || kind == "transaction-response";
        let mut step = Step {
            fate: Fate::Keep,
            removed: 0,
            removed_match: false,
        };
        let entry = raw.obj()?;
        if check_this && by_position && answered_absent(entry.as_ref())? {
            // The backend's own "not found" is replaced by the same entry a foreign
            // resource gets, so the two cannot be told apart (ACL-PHR-1).
            step.fate = Fate::Replace;
            return Ok(step);
        }
        let mark = self.edits.len();
        // Patients of nested Bundles' resources (few entries have any), and of the
        // entry's own resource: released only if the entry is.
        let mut found = Vec::new();
        let mut own = None;
        let mut ok = true;
        let mut nested_other_bundle = None;
        match entry.as_ref().and_then(|e| e.get("resource")) {
            Some(res) => match res.obj()? {
                Some(res) => {
                    let named = Named::of(&res, &self.types)?;
                    let is_bundle = named.resource_type.as_deref() == Some("Bundle");
                    if is_bundle && res.str("type").is_some_and(|t| is_result_type(&t)) {
                        let sub = if check_this { patient } else { None };
                        step.removed += self.result_bundle(&res, None, sub)?;
                    } else if is_bundle {
                        let sub = if check_this { patient } else { None };
                        ok = self.bundle_contents(&res, sub, &mut found)?.is_none();
                        nested_other_bundle = Some(res);
                    } else if let Some(p) = patient.filter(|_| check_this) {
                        ok = self.passes(&named, p);
                    }
                    own = Some(named);
                }
                // Not an object: nothing in it can be shown to be the patient's.
                None => ok = !check_this,
            },
            None => ok = !(check_this && kind == "history"), // a deleted version: nothing to verify
        }
        if ok {
            self.touch(found);
            self.touch(own.into_iter().flat_map(Named::ids));
            if let Some(e) = &entry {
                self.rebase_entry(e)?;
            }
            if let Some(b) = &nested_other_bundle {
                self.rebase_bundle(b)?;
            }
            return Ok(step);
        }
        self.edits.truncate(mark);
        step.removed += 1;
        let mode = match &entry {
            Some(e) => e.obj("search")?.and_then(|s| s.str("mode")),
            None => None,
        };
        step.removed_match = mode.as_deref() != Some("include");
        step.fate = if by_position { Fate::Replace } else { Fate::Drop };
        Ok(step)
    }

    /// The splices for removed and replaced entries: a removed entry goes with the comma
    /// on one side of it, so the list stays valid JSON.
    fn splice_entries(&mut self, spans: &[Range<usize>], fates: &[Fate]) {
        if fates.iter().all(|f| *f == Fate::Keep) {
            return;
        }
        let first_kept = fates.iter().position(|f| *f != Fate::Drop);
        for (k, fate) in fates.iter().enumerate() {
            match (fate, first_kept) {
                (Fate::Keep, _) => {}
                (Fate::Replace, _) => {
                    let with = self.not_found.get_or_insert_with(|| {
                        serde_json::to_vec(&not_found_entry()).expect("a Value always serialises")
                    });
                    self.edits.push(spans[k].clone(), with);
                }
                // Every entry removed: one cut from the first to the last.
                (Fate::Drop, None) if k == 0 => self.edits.push(spans[0].start..spans[spans.len() - 1].end, b""),
                (Fate::Drop, None) => {}
                // Before the first kept entry: the entry and the comma after it.
                (Fate::Drop, Some(f)) if k < f => self.edits.push(spans[k].start..spans[k + 1].start, b""),
                // After it: the comma before the entry, and the entry.
                (Fate::Drop, Some(_)) => self.edits.push(spans[k - 1].end..spans[k].end, b""),
            }
        }
    }

    /// Rebases `link[].url` and every entry's URLs of a Bundle (and of Bundles nested in
    /// it), as [`crate::rebase_value`].
    fn rebase_bundle(&mut self, bundle: &Obj<'_, 'a>) -> Result<(), FhirError> {
        if self.bases.is_none() {
            return Ok(());
        }
        self.rebase_links(bundle)?;
        for raw in entries(bundle)?.unwrap_or_default() {
            if let Some(entry) = raw.obj()? {
                self.rebase_entry(&entry)?;
                if let Some(res) = entry.obj("resource")? {
                    if res.str("resourceType").as_deref() == Some("Bundle") {
                        self.rebase_bundle(&res)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn rebase_links(&mut self, bundle: &Obj<'_, 'a>) -> Result<(), FhirError> {
        if self.bases.is_none() {
            return Ok(());
        }
        for link in bundle
            .get("link")
            .map(|l| l.items())
            .transpose()?
            .flatten()
            .unwrap_or_default()
        {
            if let Some(url) = link.obj()?.and_then(|l| l.get("url")) {
                self.fix_url(url)?;
            }
        }
        Ok(())
    }

    /// `fullUrl` and `response.location` of one entry (not its resource).
    fn rebase_entry(&mut self, entry: &Obj<'_, 'a>) -> Result<(), FhirError> {
        if self.bases.is_none() {
            return Ok(());
        }
        if let Some(url) = entry.get("fullUrl") {
            self.fix_url(url)?;
        }
        if let Some(location) = entry.obj("response")?.and_then(|r| r.get("location")) {
            self.fix_url(location)?;
        }
        Ok(())
    }

    fn fix_url(&mut self, raw: Val<'_, 'a>) -> Result<(), FhirError> {
        let Some(bases) = self.bases else { return Ok(()) };
        let Some(url) = raw.as_str() else { return Ok(()) };
        match url {
            // The backend's bytes are the text: splice the base only.
            Cow::Borrowed(old) => {
                if let Some((cut, base)) = bases.rebase(old) {
                    let start = raw.span().start + 1;
                    if self.plain_bases {
                        self.edits.push(start..start + cut, base.as_bytes());
                    } else {
                        self.edits.push_str_part(start..start + cut, base);
                    }
                }
            }
            Cow::Owned(old) => {
                if let Some(new) = bases.rewrite(&old) {
                    self.edits.push_json_str(raw.span(), &new);
                }
            }
        }
        Ok(())
    }
}

/// A Bundle's entries; an `entry` that is not a list is refused (nothing in it could be
/// checked).
fn entries<'d, 'a>(bundle: &Obj<'d, 'a>) -> Result<Option<Vec<Val<'d, 'a>>>, FhirError> {
    match bundle.get("entry") {
        None => Ok(None),
        Some(raw) => raw
            .items()?
            .map(Some)
            .ok_or_else(|| invalid("Bundle.entry is not a list")),
    }
}

/// Whether a batch/transaction-response entry says its target does not exist (404 or
/// 410 Gone).
fn answered_absent(entry: Option<&Obj<'_, '_>>) -> Result<bool, FhirError> {
    let Some(entry) = entry else { return Ok(false) };
    let status = entry.obj("response")?.and_then(|r| r.str("status"));
    Ok(status.is_some_and(|s| s.starts_with("404") || s.starts_with("410")))
}
