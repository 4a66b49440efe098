//! Path, query and media-type normalisation, done before any classification.
//!
//! Requirements: EX-SEG-1 (the gateway is the only Internet-facing component, so a path
//! must mean the same thing to the gateway's checks and to the backend; anything that two
//! parsers could read differently is refused), ACL-ROLE-1 (an authorisation decision is only
//! as good as the path it was made for).
//!
//! Why refuse rather than repair: `..`, `.`, encoded slashes and `//` have no legitimate use
//! in a FHIR REST path (ids are `[A-Za-z0-9-.]{1,64}`), and servers differ in how they
//! resolve them (Tomcat, HAPI, nginx each differently). Repairing would mean guessing what
//! the backend will do; refusing with 400 does not. The only repairs are harmless ones: a
//! leading `/` and one trailing `/` are dropped, and percent-encoded characters that are
//! legal in a segment are decoded (the gateway forwards [`crate::Classified::path`], the
//! canonical form, so what was checked is what is sent).

use crate::error::{FhirError, Part};
use std::borrow::Cow;

/// Whether `id` is a valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; `plus_is_space` for form/query encoding. Borrowed when there is
/// nothing to decode (the common case), so the hot path does not allocate.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool, part: Part) -> Result<Cow<'_, str>, FhirError> {
    let needs = s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+'));
    let decoded: Cow<'_, str> = if !needs {
        Cow::Borrowed(s)
    } else {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hi = bytes.get(i + 1).copied().and_then(hex);
                    let lo = bytes.get(i + 2).copied().and_then(hex);
                    match (hi, lo) {
                        (Some(h), Some(l)) => out.push(h << 4 | l),
                        _ => return Err(FhirError::BadPercentEncoding { part }),
                    }
                    i += 3;
                }
                b'+' if plus_is_space => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Cow::Owned(String::from_utf8(out).map_err(|_| FhirError::BadPercentEncoding { part })?)
    };
    if decoded.chars().any(char::is_control) {
        return Err(FhirError::ControlCharacter { part });
    }
    Ok(decoded)
}

/// Splits a raw (still percent-encoded) path relative to the FHIR base into decoded
/// segments, refusing every form of path trick (see module docs).
pub fn normalize_path(raw: &str) -> Result<Vec<Cow<'_, str>>, FhirError> {
    if raw.chars().any(char::is_control) {
        return Err(FhirError::ControlCharacter { part: Part::Path });
    }
    let mut p = raw.strip_prefix('/').unwrap_or(raw);
    p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(4);
    for seg in p.split('/') {
        if seg.is_empty() {
            return Err(FhirError::EmptySegment);
        }
        if seg.contains('\\') {
            return Err(FhirError::EncodedSeparator);
        }
        let d = percent_decode(seg, false, Part::Path)?;
        if d.contains('/') || d.contains('\\') {
            return Err(FhirError::EncodedSeparator);
        }
        if d == "." || d == ".." {
            return Err(FhirError::DotSegment);
        }
        if d.contains('?') || d.contains('#') {
            return Err(FhirError::UnsupportedPath { path: raw.to_owned() });
        }
        out.push(d);
    }
    Ok(out)
}

/// Parses a query string or `application/x-www-form-urlencoded` body into decoded
/// `(name, value)` pairs, in order, keeping repeats (FHIR ANDs repeated parameters).
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, FhirError> {
    let mut out = Vec::new();
    for pair in raw.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true, Part::Query)?;
        let v = percent_decode(v, true, Part::Query)?;
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Percent-encodes a query component, leaving the characters FHIR references use
/// (`/`, `:`, `|`, `-`, `.`, `_`, `~`, alphanumerics) readable.
pub fn encode_query_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'|') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a `Content-Type` (or `_format`) value means for the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `application/fhir+json`, `application/json` (R4 also allows `json` in `_format`).
    FhirJson,
    /// `application/json-patch+json`.
    JsonPatch,
    /// `application/x-www-form-urlencoded` (POST `_search`).
    Form,
}

/// Classifies a media type, accepting parameters `charset=utf-8` and `fhirVersion=4.0`
/// (any 4.0.x); anything else is 415, XML in particular, because the response check and
/// body checks read JSON only.
pub fn media_kind(value: &str) -> Result<MediaKind, FhirError> {
    let unsupported = || FhirError::UnsupportedMediaType {
        content_type: value.to_owned(),
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let kind = match essence.as_str() {
        "application/fhir+json" | "application/json" | "json" => MediaKind::FhirJson,
        "application/json-patch+json" => MediaKind::JsonPatch,
        "application/x-www-form-urlencoded" => MediaKind::Form,
        _ => return Err(unsupported()),
    };
    for param in parts {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"');
        match k.as_str() {
            "charset" if v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8") => {}
            "fhirversion" if v == "4.0" || v.starts_with("4.0.") => {}
            "" => {}
            _ => return Err(unsupported()),
        }
    }
    Ok(kind)
}

/// Checks a `_format` value: JSON forms are fine, everything else (XML, Turtle, HTML) is
/// refused with 415 before the backend sees it.
pub fn check_format(value: &str) -> Result<(), FhirError> {
    let plain = value.trim();
    let ok = matches!(plain, "json") || media_kind(plain).map(|k| k == MediaKind::FhirJson) == Ok(true);
    if ok {
        Ok(())
    } else {
        Err(FhirError::UnsupportedFormat {
            format: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Result<Vec<String>, FhirError> {
        normalize_path(p).map(|v| v.into_iter().map(Cow::into_owned).collect())
    }

    #[test]
    fn path_segments_are_decoded_and_dot_or_encoded_separators_refused() {
        assert_eq!(segs("/Patient/1/").unwrap(), ["Patient", "1"]);
        assert_eq!(segs("Patient/a%2Eb").unwrap(), ["Patient", "a.b"]);
        assert_eq!(segs("").unwrap(), Vec::<String>::new());
        assert_eq!(segs("Patient/%2e%2e"), Err(FhirError::DotSegment));
        assert_eq!(segs("Patient/../x"), Err(FhirError::DotSegment));
        assert_eq!(segs("Patient/./1"), Err(FhirError::DotSegment));
        assert_eq!(segs("Patient%2f1"), Err(FhirError::EncodedSeparator));
        assert_eq!(segs("Patient%5C1"), Err(FhirError::EncodedSeparator));
        assert_eq!(segs("Patient//1"), Err(FhirError::EmptySegment));
        assert_eq!(
            segs("Patient/1%00"),
            Err(FhirError::ControlCharacter { part: Part::Path })
        );
        assert_eq!(
            segs("Patient/%zz"),
            Err(FhirError::BadPercentEncoding { part: Part::Path })
        );
    }

    #[test]
    fn query_pairs_are_decoded_and_control_characters_refused() {
        let q = parse_query("a=1&b=x+y&&c=%2Fz&d").unwrap();
        assert_eq!(
            q,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "/z".into()),
                ("d".into(), String::new())
            ]
        );
        assert!(parse_query("a=%0A").is_err());
        assert_eq!(encode_query_component("Patient/1 2&"), "Patient/1%202%26");
    }

    #[test]
    fn only_fhir_json_media_types_and_formats_are_accepted() {
        assert_eq!(
            media_kind("application/fhir+json; charset=UTF-8; fhirVersion=4.0"),
            Ok(MediaKind::FhirJson)
        );
        assert_eq!(media_kind("application/json"), Ok(MediaKind::FhirJson));
        assert!(media_kind("application/fhir+xml").is_err());
        assert!(media_kind("application/fhir+json; fhirVersion=5.0").is_err());
        assert!(media_kind("application/json; charset=iso-8859-1").is_err());
        assert!(check_format("json").is_ok());
        assert!(check_format("application/fhir+json").is_ok());
        assert!(check_format("xml").is_err());
        assert!(check_format("text/xml").is_err());
    }
}
