//! Body rules: what each interaction must carry, and Bundle entry classification.
//!
//! Requirements: EX-SEG-1 (only well-formed FHIR JSON reaches the backend), ACL-ROLE-1
//! (each Bundle entry is authorised as if it were its own request, so entries are
//! classified by the same grammar as top-level requests).
//!
//! Why `resourceType` and `id` are checked here: a create whose body type differs from the
//! URL type would be authorised for one type and stored as another; an update whose body
//! id differs from the URL id would be authorised for one record and change another.

use crate::classify::{classify_shape, Classified, Interaction, Limits, PatchFormat};
use crate::error::FhirError;
use serde_json::Value;

/// Validates the body against the classification and, for a Bundle posted to the base,
/// classifies its entries. Returns the classification with the body attached.
pub(crate) fn finish(mut c: Classified, body: Option<Value>, limits: &Limits) -> Result<Classified, FhirError> {
    check_body(&mut c, body.as_ref())?;
    if c.interaction == Interaction::Batch {
        let bundle = body.as_ref().ok_or(FhirError::MissingBody)?;
        let (interaction, entries) = classify_bundle(bundle, limits)?;
        c.interaction = interaction;
        c.entries = entries;
    }
    c.body = body;
    Ok(c)
}

fn resource_type_of(v: &Value) -> Result<&str, FhirError> {
    v.get("resourceType")
        .and_then(Value::as_str)
        .ok_or(FhirError::NotAResource)
}

/// Body rules shared by top-level requests and Bundle entries.
fn check_body(c: &mut Classified, body: Option<&Value>) -> Result<(), FhirError> {
    use Interaction as I;
    let expect_type = |v: &Value, expected: &'static str| -> Result<(), FhirError> {
        let found = resource_type_of(v)?;
        if found != expected {
            return Err(FhirError::ResourceTypeMismatch {
                expected,
                found: found.to_owned(),
            });
        }
        Ok(())
    };
    match c.interaction {
        I::Create | I::Update => {
            let v = body.ok_or(FhirError::MissingBody)?;
            let rt = c.resource_type.unwrap_or("*");
            expect_type(v, rt)?;
            if let (I::Update, Some(url_id)) = (c.interaction, &c.id) {
                let body_id = v.get("id").and_then(Value::as_str);
                if body_id != Some(url_id.as_str()) {
                    return Err(FhirError::IdMismatch {
                        url_id: url_id.clone(),
                        body_id: body_id.map(str::to_owned),
                    });
                }
            }
        }
        I::Patch => {
            let v = body.ok_or(FhirError::MissingBody)?;
            match c.patch_format {
                Some(PatchFormat::JsonPatch) => check_json_patch(v)?,
                _ => {
                    // Inside a Bundle, a JSON Patch travels as a Binary.
                    if resource_type_of(v)? == "Binary" {
                        c.patch_format = Some(PatchFormat::JsonPatch);
                    } else {
                        expect_type(v, "Parameters")?;
                        c.patch_format = Some(PatchFormat::FhirPath);
                    }
                }
            }
        }
        I::Batch => {
            let v = body.ok_or(FhirError::MissingBody)?;
            expect_type(v, "Bundle")?;
        }
        I::Operation => {
            if let Some(v) = body {
                resource_type_of(v)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_json_patch(v: &Value) -> Result<(), FhirError> {
    let ops = v.as_array().ok_or_else(|| FhirError::InvalidPatch {
        detail: "a JSON Patch document is an array of operations".into(),
    })?;
    for op in ops {
        let ok = op.get("op").and_then(Value::as_str).is_some() && op.get("path").and_then(Value::as_str).is_some();
        if !ok {
            return Err(FhirError::InvalidPatch {
                detail: "every operation needs string 'op' and 'path'".into(),
            });
        }
    }
    Ok(())
}

fn classify_bundle(bundle: &Value, limits: &Limits) -> Result<(Interaction, Vec<Classified>), FhirError> {
    let invalid = |d: &str| FhirError::InvalidBundle { detail: d.into() };
    let interaction = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => Interaction::Batch,
        Some("transaction") => Interaction::Transaction,
        _ => return Err(invalid("type must be 'batch' or 'transaction'")),
    };
    let entries = match bundle.get("entry") {
        None => return Ok((interaction, Vec::new())),
        Some(e) => e.as_array().ok_or_else(|| invalid("entry must be an array"))?,
    };
    if entries.len() > limits.max_bundle_entries {
        return Err(FhirError::TooManyEntries {
            limit: limits.max_bundle_entries,
            actual: entries.len(),
        });
    }
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let wrap = |error| FhirError::BundleEntry {
            index,
            error: Box::new(error),
        };
        out.push(classify_entry(entry).map_err(wrap)?);
    }
    Ok((interaction, out))
}

fn classify_entry(entry: &Value) -> Result<Classified, FhirError> {
    let invalid = |d: &str| FhirError::InvalidBundle { detail: d.into() };
    let request = entry
        .get("request")
        .ok_or_else(|| invalid("entry.request is missing"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("entry.request.method is missing"))?;
    if !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE") {
        return Err(invalid("entry.request.method is not an R4 HTTP verb"));
    }
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("entry.request.url is missing"))?;
    if url.contains("://") || url.starts_with("urn:") {
        return Err(invalid("entry.request.url must be relative to the FHIR base"));
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut c = classify_shape(method, path, query)?;
    if matches!(c.interaction, Interaction::Batch) {
        return Err(invalid("nested batch/transaction is not supported"));
    }
    if c.search_via_post {
        return Err(invalid("use GET with a query for searches inside a Bundle"));
    }
    let resource = entry.get("resource");
    if method == "PATCH" {
        c.patch_format = None; // decided from the resource type in check_body
    }
    check_body(&mut c, resource)?;
    Ok(c)
}
