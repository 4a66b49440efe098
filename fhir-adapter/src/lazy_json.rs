//! A borrowed, lazy view of JSON text, for reading a backend's response without building
//! a tree of owned values.
//!
//! Requirements: ACL-PHR-1 (the compartment check reads these views), EX-SEG-1 (only
//! well-formed JSON is released).
//!
//! Why: a `serde_json::Value` of a FHIR Bundle is about 17× the text and costs an
//! allocation per string and object. The response check reads a handful of members per
//! entry (`resource.resourceType`, a few references, `fullUrl`), so it parses one object
//! at a time into its members' raw text ([`Obj`]) and descends only where it has to.
//! Every raw value borrows the body, so where it sits in the body is known
//! ([`Span::of`]) and a rewrite is a splice of those bytes, not a re-serialisation.
//!
//! Duplicate member names are refused in every object read here: with two `subject`s,
//! the gateway would check one and a client might read the other (fail closed).

use crate::error::FhirError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// A JSON object's members: names (borrowed unless escaped) and values as raw text.
pub(crate) struct Obj<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// What the check says about JSON it cannot use.
pub(crate) fn invalid(detail: impl fmt::Display) -> FhirError {
    FhirError::InvalidUpstreamResponse {
        detail: detail.to_string(),
    }
}

impl<'a> Obj<'a> {
    /// Parses `raw`, which must be an object.
    pub(crate) fn parse(raw: &'a RawValue) -> Result<Self, FhirError> {
        let obj: Obj<'a> = serde_json::from_str(raw.get()).map_err(invalid)?;
        obj.refuse_duplicates()?;
        Ok(obj)
    }

    /// Parses a whole body, which must be one object (any other JSON value is "not a
    /// FHIR resource").
    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, FhirError> {
        let obj: Obj<'a> = serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => invalid("response is not a FHIR resource"),
            _ => invalid(e),
        })?;
        obj.refuse_duplicates()?;
        Ok(obj)
    }

    /// `Some` object when `raw` is one, `None` for any other JSON value.
    pub(crate) fn of(raw: &'a RawValue) -> Result<Option<Self>, FhirError> {
        if raw.get().starts_with('{') {
            Self::parse(raw).map(Some)
        } else {
            Ok(None)
        }
    }

    fn refuse_duplicates(&self) -> Result<(), FhirError> {
        let m = &self.members;
        let duplicate = if m.len() <= 32 {
            (1..m.len()).any(|i| m[..i].iter().any(|(k, _)| *k == m[i].0))
        } else {
            let mut names: Vec<&str> = m.iter().map(|(k, _)| k.as_ref()).collect();
            names.sort_unstable();
            names.windows(2).any(|w| w[0] == w[1])
        };
        if duplicate {
            return Err(invalid("a JSON object names the same member twice"));
        }
        Ok(())
    }

    /// The raw value of member `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Member `name` when it is a string.
    pub(crate) fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).and_then(as_str)
    }

    /// Member `name` when it is an object.
    pub(crate) fn obj(&self, name: &str) -> Result<Option<Obj<'a>>, FhirError> {
        self.get(name).map_or(Ok(None), Obj::of)
    }
}

/// `raw` when it is a string, decoded (borrowed when it holds no escape).
pub(crate) fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The items of `raw` when it is an array.
pub(crate) fn items(raw: &RawValue) -> Result<Option<Vec<&RawValue>>, FhirError> {
    if raw.get().starts_with('[') {
        serde_json::from_str(raw.get()).map(Some).map_err(invalid)
    } else {
        Ok(None)
    }
}

/// Where a raw value sits in the body it was parsed from.
pub(crate) struct Span;

impl Span {
    /// The byte range of `raw` in `body`; an error (never a wrong range) if `raw` is not
    /// borrowed from `body`.
    pub(crate) fn of(body: &[u8], raw: &RawValue) -> Result<Range<usize>, FhirError> {
        let text = raw.get();
        let start = (text.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let end = start.wrapping_add(text.len());
        if start > body.len() || end > body.len() || end < start {
            return Err(invalid("internal: a JSON value outside the body"));
        }
        Ok(start..end)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Obj<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Obj<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Obj<'a>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(k)) = map.next_key()? {
                    members.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Obj { members })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A member name: borrowed from the text unless it holds an escape.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_borrow_the_text_and_know_where_they_are() {
        let body = br#"{"a" : "x", "b\u0041":{"c":[1,2]}, "s":"q\"q"}"#;
        let top: &RawValue = serde_json::from_slice(body).unwrap();
        let o = Obj::parse(top).unwrap();
        assert_eq!(o.str("a").as_deref(), Some("x"));
        assert!(matches!(o.str("a"), Some(Cow::Borrowed(_))));
        assert_eq!(o.str("s").as_deref(), Some("q\"q"));
        let b = o.obj("bA").unwrap().unwrap();
        let c = items(b.get("c").unwrap()).unwrap().unwrap();
        assert_eq!(c.len(), 2);
        let span = Span::of(body, c[1]).unwrap();
        assert_eq!(&body[span], b"2");
        assert!(o.obj("a").unwrap().is_none());
        assert!(Span::of(b"{}", c[1]).is_err());
    }

    #[test]
    fn a_member_named_twice_is_refused() {
        for text in [r#"{"a":1,"a":2}"#, r#"{"a":1,"\u0061":2}"#] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            assert!(Obj::parse(raw).is_err(), "{text}");
        }
        let many: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect::<String>() + "\"k7\":0";
        let raw: Box<RawValue> = RawValue::from_string(format!("{{{many}}}")).unwrap();
        assert!(Obj::parse(&raw).is_err());
    }
}
