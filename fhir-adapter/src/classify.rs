//! Classification of a FHIR R4 REST request into one interaction.
//!
//! Requirements: EX-SEG-1 (deny-by-default L7 filtering: only the R4 REST grammar passes;
//! body size, media type and JSON shape are checked before the backend sees anything),
//! ACL-ROLE-1 (authorisation needs to know exactly which interaction on which type),
//! LOG-ACC-1 (the access record stores the interaction, type, id and operation).
//!
//! Why classify before authorising: scopes are defined per interaction (`cruds`), and the
//! compartment rules differ between read, search and write, so a wrong classification would
//! be a wrong decision. The grammar is that of <https://hl7.org/fhir/R4/http.html>; Bundle
//! entries of a batch/transaction are classified by the same code as top-level requests so
//! the two can never disagree.

use crate::body::finish;
use crate::compartment::{lookup_type, TypeLookup};
use crate::error::FhirError;
use crate::normalize::{check_format, is_valid_id, media_kind, normalize_path, parse_query, MediaKind};
use serde_json::Value;

/// One request as the gateway received it, in plain values.
#[derive(Debug, Clone, Copy, Default)]
pub struct FhirRequest<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Path relative to the FHIR base, raw (still percent-encoded), e.g. `Patient/1`.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    /// `Content-Type` header value.
    pub content_type: Option<&'a str>,
    /// Request body, if any.
    pub body: Option<&'a [u8]>,
}

/// Size limits applied during classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request body (413 above).
    pub max_body_bytes: usize,
    /// Most entries accepted in a batch/transaction Bundle (413 above).
    pub max_bundle_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_bundle_entries: 500,
        }
    }
}

/// The FHIR R4 interaction a request performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `GET [type]/[id]`.
    Read,
    /// `GET [type]/[id]/_history/[vid]`.
    Vread,
    /// `PUT [type]/[id]` or conditional `PUT [type]?criteria`.
    Update,
    /// `PATCH [type]/[id]` or conditional.
    Patch,
    /// `DELETE [type]/[id]` or conditional.
    Delete,
    /// `GET [type]/[id]/_history`.
    HistoryInstance,
    /// `GET [type]/_history`.
    HistoryType,
    /// `GET _history`.
    HistorySystem,
    /// `POST [type]`.
    Create,
    /// `GET [type]?…` or `POST [type]/_search`.
    SearchType,
    /// `GET [base]?…` or `POST _search`.
    SearchSystem,
    /// `GET Patient/[id]/[type]?…` (or `*`).
    SearchCompartment,
    /// `GET metadata` (public).
    Capabilities,
    /// `GET .well-known/smart-configuration` (public).
    SmartConfiguration,
    /// `POST [base]` with a `batch` Bundle.
    Batch,
    /// `POST [base]` with a `transaction` Bundle.
    Transaction,
    /// `$name` at system, type or instance level.
    Operation,
}

impl Interaction {
    /// Stable lowercase name for access records (LOG-ACC-1); R4 `restful-interaction`
    /// codes where one exists.
    pub fn as_str(self) -> &'static str {
        use Interaction::*;
        match self {
            Read => "read",
            Vread => "vread",
            Update => "update",
            Patch => "patch",
            Delete => "delete",
            HistoryInstance => "history-instance",
            HistoryType => "history-type",
            HistorySystem => "history-system",
            Create => "create",
            SearchType => "search-type",
            SearchSystem => "search-system",
            SearchCompartment => "search-compartment",
            Capabilities => "capabilities",
            SmartConfiguration => "smart-configuration",
            Batch => "batch",
            Transaction => "transaction",
            Operation => "operation",
        }
    }

    /// Public pass-through: no token, no scope (`metadata`, SMART discovery).
    pub fn is_public(self) -> bool {
        matches!(self, Interaction::Capabilities | Interaction::SmartConfiguration)
    }
}

/// Patch document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    /// RFC 6902 JSON Patch (`application/json-patch+json`, or a `Binary` in a Bundle).
    JsonPatch,
    /// FHIRPath Patch (a `Parameters` resource).
    FhirPath,
}

/// A classified request (or Bundle entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// What the request does.
    pub interaction: Interaction,
    /// Target type; `*` for an all-types compartment search; `None` at system level.
    pub resource_type: Option<&'static str>,
    /// Logical id in the path.
    pub id: Option<String>,
    /// Version id (`vread`).
    pub version_id: Option<String>,
    /// Compartment of a compartment search, e.g. `("Patient", "123")`.
    pub compartment: Option<(&'static str, String)>,
    /// Operation name without `$`.
    pub operation: Option<String>,
    /// Canonical path to forward (decoded, validated segments joined by `/`).
    pub path: String,
    /// Decoded search parameters (query, plus the form body of `POST _search`).
    pub params: Vec<(String, String)>,
    /// Conditional update/patch/delete (criteria in the query instead of an id).
    pub conditional: bool,
    /// Search sent as `POST .../_search` with a form body.
    pub search_via_post: bool,
    /// Patch document format, for `patch`.
    pub patch_format: Option<PatchFormat>,
    /// Parsed JSON body (the whole Bundle for batch/transaction; `None` for entries,
    /// whose resource stays inside the Bundle).
    pub body: Option<Value>,
    /// Bundle entries, each classified on its own (batch/transaction only).
    pub entries: Vec<Classified>,
}

/// Compartments R4 defines; compartment searches name one of these.
const COMPARTMENTS: &[&str] = &["Device", "Encounter", "Patient", "Practitioner", "RelatedPerson"];

fn resolve_type(seg: &str) -> Result<&'static str, FhirError> {
    match lookup_type(seg) {
        TypeLookup::Known(t) => Ok(t),
        TypeLookup::WrongCase(t) => Err(FhirError::WrongCaseResourceType {
            given: seg.to_owned(),
            expected: t,
        }),
        TypeLookup::Unknown => Err(FhirError::UnknownResourceType { name: seg.to_owned() }),
    }
}

fn check_id(seg: &str) -> Result<String, FhirError> {
    if is_valid_id(seg) {
        Ok(seg.to_owned())
    } else {
        Err(FhirError::InvalidId { id: seg.to_owned() })
    }
}

/// `seg` starts with `$`.
fn op_name(seg: &str) -> Result<String, FhirError> {
    let name = &seg[1..];
    let ok = name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(FhirError::InvalidOperationName { name: name.to_owned() })
    }
}

/// Classifies one request. Order of checks: size (413), path tricks (400), query (400 /
/// 415 for `_format`), shape and method (400 / 405), media type (415), JSON body (400).
pub fn classify(req: &FhirRequest<'_>, limits: &Limits) -> Result<Classified, FhirError> {
    let body = req.body.filter(|b| !b.is_empty());
    if let Some(b) = body {
        if b.len() > limits.max_body_bytes {
            return Err(FhirError::BodyTooLarge {
                limit: limits.max_body_bytes,
                actual: b.len(),
            });
        }
    }
    let mut c = classify_shape(req.method, req.path, req.query.unwrap_or(""))?;
    let wants_body = matches!(req.method, "POST" | "PUT" | "PATCH");
    let Some(bytes) = body.filter(|_| wants_body) else {
        return finish(c, None, limits);
    };
    let kind = media_kind(req.content_type.unwrap_or("(none)"))?;
    match (c.search_via_post, c.interaction, kind) {
        (true, _, MediaKind::Form) => {
            let form = std::str::from_utf8(bytes).map_err(|_| FhirError::BadPercentEncoding {
                part: crate::error::Part::Query,
            })?;
            let extra = parse_query(form)?;
            check_params(&extra)?;
            c.params.extend(extra);
            return Ok(c);
        }
        (false, Interaction::Patch, MediaKind::JsonPatch) => {
            c.patch_format = Some(PatchFormat::JsonPatch);
        }
        (false, _, MediaKind::FhirJson) => {
            if c.interaction == Interaction::Patch {
                c.patch_format = Some(PatchFormat::FhirPath);
            }
        }
        _ => {
            return Err(FhirError::UnsupportedMediaType {
                content_type: req.content_type.unwrap_or("(none)").to_owned(),
            })
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FhirError::InvalidJson { detail: e.to_string() })?;
    finish(c, Some(value), limits)
}

fn check_params(params: &[(String, String)]) -> Result<(), FhirError> {
    for (k, v) in params {
        if k == "_format" {
            check_format(v)?;
        }
    }
    Ok(())
}

/// Path + method + query → a body-less classification.
pub(crate) fn classify_shape(method: &str, raw_path: &str, raw_query: &str) -> Result<Classified, FhirError> {
    let segs = normalize_path(raw_path)?;
    let params = parse_query(raw_query)?;
    check_params(&params)?;
    let method = if method == "HEAD" { "GET" } else { method };
    let s: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    let path = s.join("/");
    let mut c = Classified {
        interaction: Interaction::Read,
        resource_type: None,
        id: None,
        version_id: None,
        compartment: None,
        operation: None,
        path,
        params,
        conditional: false,
        search_via_post: false,
        patch_format: None,
        body: None,
        entries: Vec::new(),
    };
    let not_allowed = |c: &Classified| FhirError::MethodNotAllowed {
        method: method.to_owned(),
        path: c.path.clone(),
    };
    use Interaction as I;
    let interaction = match (method, s.as_slice()) {
        ("GET", []) => I::SearchSystem,
        ("POST", []) => I::Batch, // batch or transaction: decided from the Bundle's type
        (_, []) => return Err(not_allowed(&c)),
        ("GET", ["metadata"]) => I::Capabilities,
        ("GET", [".well-known", "smart-configuration"]) => I::SmartConfiguration,
        (_, ["metadata"]) | (_, [".well-known", "smart-configuration"]) => return Err(not_allowed(&c)),
        ("GET", ["_history"]) => I::HistorySystem,
        ("POST", ["_search"]) => {
            c.search_via_post = true;
            I::SearchSystem
        }
        (_, ["_history"]) | (_, ["_search"]) => return Err(not_allowed(&c)),
        (m, [op]) if op.starts_with('$') => {
            c.operation = Some(op_name(op)?);
            if !matches!(m, "GET" | "POST") {
                return Err(not_allowed(&c));
            }
            I::Operation
        }
        (m, [t]) => {
            c.resource_type = Some(resolve_type(t)?);
            match m {
                "GET" => I::SearchType,
                "POST" => I::Create,
                "PUT" | "PATCH" | "DELETE" => {
                    if c.params.is_empty() {
                        return Err(FhirError::ConditionalWithoutCriteria { method: m.to_owned() });
                    }
                    c.conditional = true;
                    match m {
                        "PUT" => I::Update,
                        "PATCH" => I::Patch,
                        _ => I::Delete,
                    }
                }
                _ => return Err(not_allowed(&c)),
            }
        }
        (m, [t, second]) => {
            c.resource_type = Some(resolve_type(t)?);
            match (m, *second) {
                ("POST", "_search") => {
                    c.search_via_post = true;
                    I::SearchType
                }
                ("GET", "_history") => I::HistoryType,
                (_, "_search") | (_, "_history") => return Err(not_allowed(&c)),
                (m, op) if op.starts_with('$') => {
                    c.operation = Some(op_name(op)?);
                    if !matches!(m, "GET" | "POST") {
                        return Err(not_allowed(&c));
                    }
                    I::Operation
                }
                (m, id) => {
                    c.id = Some(check_id(id)?);
                    match m {
                        "GET" => I::Read,
                        "PUT" => I::Update,
                        "PATCH" => I::Patch,
                        "DELETE" => I::Delete,
                        _ => return Err(not_allowed(&c)),
                    }
                }
            }
        }
        (m, [t, id, third]) => {
            let t = resolve_type(t)?;
            let id = check_id(id)?;
            match (m, *third) {
                ("GET", "_history") => {
                    c.resource_type = Some(t);
                    c.id = Some(id);
                    I::HistoryInstance
                }
                (m, op) if op.starts_with('$') => {
                    c.resource_type = Some(t);
                    c.id = Some(id);
                    c.operation = Some(op_name(op)?);
                    if !matches!(m, "GET" | "POST") {
                        return Err(not_allowed(&c));
                    }
                    I::Operation
                }
                ("GET", target) if COMPARTMENTS.contains(&t) && target != "_history" => {
                    c.resource_type = Some(if target == "*" { "*" } else { resolve_type(target)? });
                    c.compartment = Some((t, id));
                    I::SearchCompartment
                }
                _ => return Err(unsupported(&c)),
            }
        }
        ("GET", [t, id, "_history", vid]) => {
            c.resource_type = Some(resolve_type(t)?);
            c.id = Some(check_id(id)?);
            c.version_id = Some(check_id(vid)?);
            I::Vread
        }
        ("POST", [comp, id, target, "_search"]) => {
            let comp = resolve_type(comp)?;
            if !COMPARTMENTS.contains(&comp) {
                return Err(unsupported(&c));
            }
            c.compartment = Some((comp, check_id(id)?));
            c.resource_type = Some(resolve_type(target)?);
            c.search_via_post = true;
            I::SearchCompartment
        }
        _ => return Err(unsupported(&c)),
    };
    c.interaction = interaction;
    Ok(c)
}

fn unsupported(c: &Classified) -> FhirError {
    FhirError::UnsupportedPath { path: c.path.clone() }
}
