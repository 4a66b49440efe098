//! One tokenizer pass over a backend's JSON, recording what the response check reads and
//! skipping the rest.
//!
//! Requirements: ACL-PHR-1 (the compartment check reads these views), EX-SEG-1 (only
//! well-formed UTF-8 JSON is released; the backend's base URL is found to be rewritten).
//!
//! Why: the check reads a handful of members per entry (`resource.resourceType`, a few
//! references, `fullUrl`), but the whole body must be valid JSON. A tokenizer
//! ([`crate::tokens`]) visits each byte once: values under member names the check can ever read
//! ([`interesting`]) are descended into and recorded as a small tree of nodes holding
//! byte spans of the body ([`Doc`]); every other value is validated and skipped. A
//! rewrite is then a splice of a recorded span, never a re-serialisation.
//!
//! A result Bundle's top-level `entry` list is not held whole: each entry's tree is handed
//! to an [`EntrySink`] as soon as it is read and then dropped, so a 20 MiB searchset
//! costs its per-entry decisions, not a tree of 50,000 entries. (That needs
//! `resourceType` and `type` before `entry`, as servers write them; in any other order
//! the list is recorded whole and checked after, the same decisions.)
//!
//! Fail closed, as the serde_json views this replaced: invalid UTF-8 anywhere, invalid or
//! truncated JSON, anything after the document, nesting deeper than [`MAX_DEPTH`] levels
//! of recorded values (or 128 inside a skipped one), and an object read here that names
//! a member twice (with two `subject`s, the gateway would check one and a client might
//! read the other) are all refused. Strings are compared as decoded text:
//! `"Patient\/p1"` and `"\u0050atient/p1"` are `Patient/p1`.

use crate::error::FhirError;
use crate::tokens::{Str, Tokens};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Levels of recorded (descended-into) values before the body is refused; serde_json's
/// own limit, which the check this replaced had.
pub(crate) const MAX_DEPTH: usize = 128;

/// What the check says about JSON it cannot use.
pub(crate) fn invalid(detail: impl fmt::Display) -> FhirError {
    FhirError::InvalidUpstreamResponse {
        detail: detail.to_string(),
    }
}

/// Member names whose values the check may read, at any depth: a Bundle's and an entry's
/// members, and every segment of a patient-compartment reference path (a test keeps
/// this list and the compartment table together). Everything under any other name is
/// skipped. A `match`, not a set: it runs for every member of every recorded object.
fn interesting(name: &str) -> bool {
    matches!(
        name,
        // Bundles, entries, references.
        "resourceType" | "id" | "type" | "total" | "link" | "url" | "entry" | "fullUrl" | "resource"
            | "search" | "mode" | "response" | "status" | "location" | "contained" | "reference"
            // Compartment reference paths.
            | "action" | "activity" | "actor" | "agent" | "asserter" | "attester" | "author"
            | "beneficiary" | "candidate" | "deliverTo" | "detail" | "entity" | "individual"
            | "member" | "other" | "participant" | "party" | "patient" | "payee" | "payor"
            | "performer" | "policyHolder" | "receiver" | "recipient" | "recorder" | "requester"
            | "sender" | "source" | "subject" | "subscriber" | "target" | "what" | "who"
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An object whose members are recorded.
    Obj,
    /// An array whose items are recorded.
    Arr,
    Str,
    /// A string that holds an escape (decoded when read).
    EscapedStr,
    /// A number, `true`, `false` or `null`.
    Scalar,
    /// An object or array under a name the check never reads: validated, not recorded.
    SkippedObj,
    SkippedArr,
    /// The top-level `entry` list, handed to an [`EntrySink`] item by item.
    Streamed,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    kind: Kind,
    /// The value's bytes in the body (a string's with its quotes).
    span: (usize, usize),
    /// Members (objects) or items (arrays): `first..first + len` of the doc's lists.
    first: u32,
    len: u32,
}

/// The recorded values of one body.
pub(crate) struct Doc<'a> {
    text: &'a str,
    nodes: Vec<Node>,
    members: Vec<(Cow<'a, str>, u32)>,
    items: Vec<u32>,
    /// Children of the objects and arrays being read, moved to `members`/`items` when
    /// each one ends (so that each keeps its children together).
    open_members: Vec<(Cow<'a, str>, u32)>,
    open_items: Vec<u32>,
}

/// Receives a result Bundle's top-level entries while they are read.
pub(crate) trait EntrySink<'a> {
    /// Asked at the top object's `entry` list, with the Bundle's `type` (its
    /// `resourceType` is `Bundle`): `true` to take the entries one by one.
    fn stream(&mut self, bundle_type: &str) -> bool;
    /// One entry (at `index`), valid only during the call.
    fn entry(&mut self, doc: &Doc<'a>, index: usize, entry: Val<'_, 'a>) -> Result<(), FhirError>;
}

/// A sink that takes nothing: the whole body is recorded.
#[cfg(test)]
pub(crate) struct NoStream;

#[cfg(test)]
impl<'a> EntrySink<'a> for NoStream {
    fn stream(&mut self, _: &str) -> bool {
        false
    }
    fn entry(&mut self, _: &Doc<'a>, _: usize, _: Val<'_, 'a>) -> Result<(), FhirError> {
        Err(invalid("internal: an entry streamed unasked"))
    }
}

impl<'a> Doc<'a> {
    /// Reads `text` (one JSON object, else "not a FHIR resource"), handing a result
    /// Bundle's entries to `sink` when it takes them. Returns the doc and its top object.
    pub(crate) fn read(text: &'a str, sink: &mut dyn EntrySink<'a>) -> Result<(Self, u32), FhirError> {
        let mut doc = Doc {
            text,
            nodes: Vec::new(),
            members: Vec::new(),
            items: Vec::new(),
            open_members: Vec::new(),
            open_items: Vec::new(),
        };
        let mut j = Tokens::new(text);
        let c = j.peek().map_err(invalid)?;
        if c != b'{' {
            // Check it is JSON at all first, for the message.
            j.skip(c).map_err(invalid)?;
            j.finish().map_err(invalid)?;
            return Err(invalid("response is not a FHIR resource"));
        }
        let start = j.index();
        let (first, len) = doc.object(&mut j, 0, Some(sink))?;
        let top = doc.push(Kind::Obj, start, j.index(), first, len);
        j.finish().map_err(invalid)?;
        Ok((doc, top))
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize, first: usize, len: usize) -> u32 {
        self.nodes.push(Node {
            kind,
            span: (start, end),
            first: first as u32,
            len: len as u32,
        });
        (self.nodes.len() - 1) as u32
    }

    /// One value, its first byte at the parser's position; `record` its children when it
    /// is an object or array.
    fn value(&mut self, j: &mut Tokens<'a>, c: u8, record: bool, depth: usize) -> Result<u32, FhirError> {
        let start = j.index();
        let (kind, first, len) = match c {
            b'{' if record => {
                let (first, len) = self.object(j, depth, None)?;
                (Kind::Obj, first, len)
            }
            b'[' if record => {
                let (first, len) = self.array(j, depth)?;
                (Kind::Arr, first, len)
            }
            b'"' => {
                // Escapes are validated here and decoded only when read ([`Val::as_str`]).
                let s = j.string().map_err(invalid)?;
                (if s.escaped { Kind::EscapedStr } else { Kind::Str }, 0, 0)
            }
            _ => {
                j.skip(c).map_err(invalid)?;
                let kind = match c {
                    b'{' => Kind::SkippedObj,
                    b'[' => Kind::SkippedArr,
                    _ => Kind::Scalar,
                };
                (kind, 0, 0)
            }
        };
        Ok(self.push(kind, start, j.index(), first, len))
    }

    /// A member name, decoded if it holds an escape.
    fn name(&self, key: Str) -> Result<Cow<'a, str>, FhirError> {
        let text: &'a str = self.text;
        if !key.escaped {
            return text
                .get(key.inner)
                .map(Cow::Borrowed)
                .ok_or_else(|| invalid("internal: a member name outside the body"));
        }
        let raw = text
            .get(key.inner.start - 1..key.inner.end + 1)
            .ok_or_else(|| invalid("internal: a member name outside the body"))?;
        serde_json::from_str::<String>(raw).map(Cow::Owned).map_err(invalid)
    }

    fn object(
        &mut self,
        j: &mut Tokens<'a>,
        depth: usize,
        mut sink: Option<&mut dyn EntrySink<'a>>,
    ) -> Result<(usize, usize), FhirError> {
        if depth >= MAX_DEPTH {
            return Err(invalid("the JSON is nested too deeply"));
        }
        let open = self.open_members.len();
        let mut key = j.object_first().map_err(invalid)?;
        while let Some(k) = key {
            let name = self.name(k)?;
            let c = j.peek().map_err(invalid)?;
            let stream = match sink.as_deref_mut() {
                Some(sink) if name == "entry" && c == b'[' => self.result_type(open, sink).then_some(sink),
                _ => None,
            };
            let child = match stream {
                Some(sink) => self.stream_entries(j, depth + 1, sink)?,
                None => self.value(j, c, interesting(&name), depth + 1)?,
            };
            self.open_members.push((name, child));
            key = j.object_next().map_err(invalid)?;
        }
        refuse_duplicates(&self.open_members[open..])?;
        let first = self.members.len();
        self.members.extend(self.open_members.drain(open..));
        Ok((first, self.members.len() - first))
    }

    /// Whether the members read so far (from `open`) make a Bundle whose entries `sink`
    /// takes.
    fn result_type(&self, open: usize, sink: &mut dyn EntrySink<'a>) -> bool {
        let get = |name: &str| {
            let (_, id) = self.open_members[open..].iter().find(|(k, _)| k == name)?;
            Val { doc: self, id: *id }.as_str()
        };
        get("resourceType").as_deref() == Some("Bundle") && get("type").is_some_and(|t| sink.stream(&t))
    }

    fn stream_entries(
        &mut self,
        j: &mut Tokens<'a>,
        depth: usize,
        sink: &mut dyn EntrySink<'a>,
    ) -> Result<u32, FhirError> {
        let start = j.index();
        let mut next = j.array_first().map_err(invalid)?;
        let mut index = 0;
        while next {
            let c = j.peek().map_err(invalid)?;
            let (nodes, members, items) = (self.nodes.len(), self.members.len(), self.items.len());
            let id = self.value(j, c, true, depth + 1)?;
            sink.entry(self, index, Val { doc: self, id })?;
            // The entry is decided: its tree is not needed again.
            self.nodes.truncate(nodes);
            self.members.truncate(members);
            self.items.truncate(items);
            index += 1;
            next = j.array_next().map_err(invalid)?;
        }
        Ok(self.push(Kind::Streamed, start, j.index(), 0, 0))
    }

    fn array(&mut self, j: &mut Tokens<'a>, depth: usize) -> Result<(usize, usize), FhirError> {
        if depth >= MAX_DEPTH {
            return Err(invalid("the JSON is nested too deeply"));
        }
        let open = self.open_items.len();
        let mut next = j.array_first().map_err(invalid)?;
        while next {
            let c = j.peek().map_err(invalid)?;
            let child = self.value(j, c, true, depth + 1)?;
            self.open_items.push(child);
            next = j.array_next().map_err(invalid)?;
        }
        let first = self.items.len();
        self.items.extend(self.open_items.drain(open..));
        Ok((first, self.items.len() - first))
    }

    fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    /// The top object of a doc [`Doc::read`] returned.
    pub(crate) fn obj(&self, id: u32) -> Obj<'_, 'a> {
        Obj { doc: self, id }
    }
}

fn refuse_duplicates(m: &[(Cow<'_, str>, u32)]) -> Result<(), FhirError> {
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

/// One recorded value.
#[derive(Clone, Copy)]
pub(crate) struct Val<'d, 'a> {
    doc: &'d Doc<'a>,
    id: u32,
}

impl<'d, 'a> Val<'d, 'a> {
    fn node(&self) -> &'d Node {
        self.doc.node(self.id)
    }

    /// Where the value sits in the body.
    pub(crate) fn span(&self) -> Range<usize> {
        let (start, end) = self.node().span;
        start..end
    }

    /// The value's text as the backend wrote it.
    pub(crate) fn text(&self) -> &'a str {
        let text: &'a str = self.doc.text;
        // Spans start and end at JSON delimiters, so always at char boundaries; an empty
        // text, never a panic, if that were ever wrong.
        text.get(self.span()).unwrap_or_default()
    }

    /// The value when it is a string, decoded (borrowed when it holds no escape).
    pub(crate) fn as_str(&self) -> Option<Cow<'a, str>> {
        let raw = self.text();
        match self.node().kind {
            Kind::Str => raw.get(1..raw.len().saturating_sub(1)).map(Cow::Borrowed),
            Kind::EscapedStr => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
            _ => None,
        }
    }

    /// The value when it is an object; an error for one that was not recorded (a bug,
    /// refused rather than read as empty).
    pub(crate) fn obj(&self) -> Result<Option<Obj<'d, 'a>>, FhirError> {
        match self.node().kind {
            Kind::Obj => Ok(Some(Obj {
                doc: self.doc,
                id: self.id,
            })),
            Kind::SkippedObj => Err(invalid("internal: an object the check reads was not recorded")),
            _ => Ok(None),
        }
    }

    /// The items when the value is an array; an error for one that was not recorded.
    pub(crate) fn items(&self) -> Result<Option<Vec<Val<'d, 'a>>>, FhirError> {
        let n = self.node();
        match n.kind {
            Kind::Arr => {
                let (first, len) = (n.first as usize, n.len as usize);
                let list = self.doc.items[first..first + len].iter();
                Ok(Some(list.map(|&id| Val { doc: self.doc, id }).collect()))
            }
            Kind::SkippedArr | Kind::Streamed => Err(invalid("internal: a list the check reads was not recorded")),
            _ => Ok(None),
        }
    }
}

/// A recorded object.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'d, 'a> {
    doc: &'d Doc<'a>,
    id: u32,
}

impl<'d, 'a> Obj<'d, 'a> {
    /// Member `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Val<'d, 'a>> {
        let n = self.doc.node(self.id);
        let (first, len) = (n.first as usize, n.len as usize);
        let doc = self.doc;
        doc.members[first..first + len]
            .iter()
            .find(|(k, _)| k == name)
            .map(|&(_, id)| Val { doc, id })
    }

    /// Member `name` when it is a string.
    pub(crate) fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).and_then(|v| v.as_str())
    }

    /// Member `name` when it is an object.
    pub(crate) fn obj(&self, name: &str) -> Result<Option<Obj<'d, 'a>>, FhirError> {
        self.get(name).map_or(Ok(None), |v| v.obj())
    }

    /// The object as a value.
    #[cfg(test)]
    pub(crate) fn val(&self) -> Val<'d, 'a> {
        Val {
            doc: self.doc,
            id: self.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<(Doc<'_>, u32), FhirError> {
        Doc::read(text, &mut NoStream)
    }

    #[test]
    fn every_compartment_path_segment_is_recorded() {
        for link in crate::compartment::all_links() {
            for segment in link.paths.iter().flat_map(|p| p.split('.')) {
                assert!(interesting(segment), "{segment}");
            }
        }
        assert!(!interesting("code") && !interesting("text"));
    }

    #[test]
    fn recorded_values_know_where_they_are_and_decode_escapes() {
        let body = r#"{"id" : "x", "resource\u0054ype":"Patient", "subject":{"reference":"Patient\/p\u0031"},
            "code":{"coding":[{"id":"skipped"}]}, "total": 12 }"#;
        let (doc, top) = read(body).unwrap();
        let o = doc.obj(top);
        assert_eq!(o.str("id").as_deref(), Some("x"));
        assert!(matches!(o.str("id"), Some(Cow::Borrowed(_))));
        assert_eq!(o.str("resourceType").as_deref(), Some("Patient"));
        let r = o.obj("subject").unwrap().unwrap().str("reference");
        assert_eq!(r.as_deref(), Some("Patient/p1"));
        let total = o.get("total").unwrap();
        assert_eq!(&body[total.span()], "12");
        assert_eq!(&body[o.get("id").unwrap().span()], "\"x\"");
        // `code` is never read by the check: skipped, and refused if asked for.
        assert!(o.obj("code").is_err());
        assert_eq!(o.val().span(), 0..body.len());
    }

    #[test]
    fn what_is_refused() {
        let deep = "[".repeat(300) + &"]".repeat(300);
        let nested_records = "{\"entry\":".repeat(200) + "1" + &"}".repeat(200);
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"a":1} x"#,
            r#"{"a":"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"[1]"#,
            r#""Bundle""#,
            r#"{"a":NaN}"#,
            r#"{"a":01}"#,
            r#"{"a":[1,]}"#,
            &format!("{{\"code\":{deep}}}"),
            &nested_records,
        ] {
            assert!(read(text).is_err(), "{text}");
        }
        let many: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect::<String>() + "\"k7\":0";
        assert!(read(&format!("{{{many}}}")).is_err());
        // Deep, but within the limit, under a name the check does not read.
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(read(&format!("{{\"code\":{deep}}}")).is_ok());
    }

    struct Collect(Vec<(usize, Range<usize>, Option<String>)>);

    impl<'a> EntrySink<'a> for Collect {
        fn stream(&mut self, t: &str) -> bool {
            t == "searchset"
        }
        fn entry(&mut self, _: &Doc<'a>, index: usize, entry: Val<'_, 'a>) -> Result<(), FhirError> {
            let url = entry.obj()?.and_then(|e| e.str("fullUrl")).map(Cow::into_owned);
            self.0.push((index, entry.span(), url));
            Ok(())
        }
    }

    #[test]
    fn a_result_bundles_entries_are_streamed_when_its_type_comes_first() {
        let body =
            r#"{"resourceType":"Bundle","type":"searchset","entry":[{"fullUrl":"a"}, {"fullUrl":"b"}],"total":2}"#;
        let mut sink = Collect(Vec::new());
        let (doc, top) = Doc::read(body, &mut sink).unwrap();
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[1].2.as_deref(), Some("b"));
        assert_eq!(&body[sink.0[1].1.clone()], r#"{"fullUrl":"b"}"#);
        assert!(doc.obj(top).get("entry").unwrap().items().is_err(), "not held");
        // Type after entry, or another type: recorded whole.
        for body in [
            r#"{"resourceType":"Bundle","entry":[{"fullUrl":"a"}],"type":"searchset"}"#,
            r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"a"}]}"#,
        ] {
            let mut sink = Collect(Vec::new());
            let (doc, top) = Doc::read(body, &mut sink).unwrap();
            assert!(sink.0.is_empty());
            assert_eq!(doc.obj(top).get("entry").unwrap().items().unwrap().unwrap().len(), 1);
        }
        // A member named twice after the list is still refused.
        let twice = r#"{"resourceType":"Bundle","type":"searchset","entry":[],"type":"collection"}"#;
        assert!(Doc::read(twice, &mut Collect(Vec::new())).is_err());
    }
}
