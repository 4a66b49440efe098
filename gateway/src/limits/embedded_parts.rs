//! Containers inside request bodies (EX-FILE-1): multipart/form-data parts
//! and base64 attachments in FHIR JSON are taken apart so each is inspected
//! like a body of its own — an executable does not become harmless by being
//! base64-encoded into `Binary.data` or `DocumentReference.content[].attachment.data`.

use base64::Engine;
use serde_json::Value;

use super::upload_filter::{ContainerKind, RefusalReason};

/// One part of a multipart body.
pub(super) struct Part<'a> {
    pub(super) content_type: Option<String>,
    pub(super) body: &'a [u8],
}

/// The `boundary` parameter of a `multipart/*` content type.
pub(super) fn declared_boundary(content_type: &str) -> Option<String> {
    let (essence, params) = content_type.split_once(';')?;
    if !essence.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// A boundary recognised from the body itself (`--b\r\n` then part headers),
/// so a multipart body declared as something else is still taken apart.
pub(super) fn sniffed_boundary(body: &[u8]) -> Option<String> {
    let rest = body.strip_prefix(b"--")?;
    let eol = rest.iter().take(72).position(|b| *b == b'\r')?;
    let b = std::str::from_utf8(&rest[..eol]).ok()?;
    let looks_like_part = rest.get(eol..eol + 2) == Some(b"\r\n")
        && super::content_sniff::contains_ci(&rest[eol..rest.len().min(eol + 1024)], b"content-disposition");
    (!b.is_empty() && looks_like_part).then(|| b.to_owned())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Splits a multipart body (RFC 7578 / RFC 2046); at most 1000 parts.
pub(super) fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, RefusalReason> {
    const BAD: RefusalReason = RefusalReason::Malformed(ContainerKind::Multipart);
    let open = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    let mut at = find(body, open.as_bytes(), 0).ok_or(BAD)? + open.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") || parts.len() >= 1000 {
            return Err(BAD);
        }
        let head_end = find(body, b"\r\n\r\n", at).ok_or(BAD)?;
        // A part may have no headers at all: then the blank line follows the
        // delimiter's own CRLF and `head_end == at` (slicing `at + 2..head_end`
        // would panic on such a body).
        let headers = body.get(at + 2..head_end).unwrap_or_default();
        let headers = std::str::from_utf8(headers).map_err(|_| BAD)?;
        let content_type = headers.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        });
        let start = head_end + 4;
        let end = find(body, delim.as_bytes(), start).ok_or(BAD)?;
        parts.push(Part {
            content_type,
            body: &body[start..end],
        });
        at = end + delim.len();
    }
}

/// A decoded attachment found in a FHIR resource.
pub(super) struct Attachment {
    pub(super) content_type: Option<String>,
    pub(super) data: Vec<u8>,
}

/// Decodes every base64 payload in a FHIR resource (any depth ≤ 64):
/// `data` of `Binary` and of Attachment-like objects (those with a
/// `contentType`), and every `*Base64Binary` choice element.
pub(super) fn fhir_attachments(v: &Value) -> Result<Vec<Attachment>, RefusalReason> {
    let mut out = Vec::new();
    walk(v, 0, &mut out)?;
    Ok(out)
}

fn decode(s: &str) -> Result<Vec<u8>, RefusalReason> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| RefusalReason::Malformed(ContainerKind::Base64))
}

fn walk(v: &Value, depth: usize, out: &mut Vec<Attachment>) -> Result<(), RefusalReason> {
    if depth > 64 {
        return Err(RefusalReason::TooDeep);
    }
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1, out)),
        Value::Object(map) => {
            let content_type = map.get("contentType").and_then(Value::as_str).map(str::to_owned);
            let binary = map.get("resourceType").and_then(Value::as_str) == Some("Binary");
            if let (Some(Value::String(data)), true) = (map.get("data"), binary || content_type.is_some()) {
                out.push(Attachment {
                    content_type: content_type.clone(),
                    data: decode(data)?,
                });
            }
            for (k, child) in map {
                if let (true, Value::String(s)) = (k.ends_with("Base64Binary"), child) {
                    out.push(Attachment {
                        content_type: None,
                        data: decode(s)?,
                    });
                } else {
                    walk(child, depth + 1, out)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
