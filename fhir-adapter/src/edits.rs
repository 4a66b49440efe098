//! Byte splices on a backend's response: the response check's output as changes to the
//! backend's bytes, not as a new document.
//!
//! Requirements: ACL-PHR-1 / EX-SEG-1 (the filtered, rebased Bundle is exactly the
//! backend's bytes minus what was removed, with the rewritten URLs spliced in).
//!
//! Why splices: a Bundle that needs no change is released as the very bytes the backend
//! sent, and one that does is edited where it must be, so the memory a 20 MiB Bundle
//! needs is the body itself ([`Edits::apply_in_place`]) and the CPU is that of the
//! changed spans, not of re-encoding every entry.

use std::ops::Range;

/// Whether `text` is its own JSON string text (nothing in it needs an escape).
pub(crate) fn is_plain_json_text(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Replacements of byte ranges of one body: sorted, never overlapping. The replacement
/// bytes share one buffer (a Bundle of 50,000 entries has 50,000 `fullUrl`s to splice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// (range of the body, range of `with`)
    edits: Vec<(Range<usize>, Range<usize>)>,
    with: Vec<u8>,
}

impl Edits {
    /// Whether the body is released as it is.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Number of splices.
    pub fn len(&self) -> usize {
        self.edits.len()
    }

    pub(crate) fn push(&mut self, range: Range<usize>, with: &[u8]) {
        // The same replacement as the last edit's (every `fullUrl` of a Bundle gets the
        // same public base): shared, so 50,000 rebased URLs cost their ranges only.
        if let Some((_, last)) = self.edits.last() {
            if &self.with[last.clone()] == with {
                let last = last.clone();
                self.edits.push((range, last));
                return;
            }
        }
        let at = self.with.len();
        self.with.extend_from_slice(with);
        self.edits.push((range, at..self.with.len()));
    }

    /// Replaces `range` with `text` as a JSON string.
    pub(crate) fn push_json_str(&mut self, range: Range<usize>, text: &str) {
        let at = self.with.len();
        serde_json::to_writer(&mut self.with, text).expect("a string always serialises");
        self.edits.push((range, at..self.with.len()));
    }

    /// Replaces `range`, a part of a JSON string's text that holds no escape, with
    /// `text` escaped as in a JSON string (the base URL of a rebased URL: the rest of the
    /// string stays the backend's bytes).
    pub(crate) fn push_str_part(&mut self, range: Range<usize>, text: &str) {
        if is_plain_json_text(text) {
            // Nothing to escape: the text is its own JSON.
            self.push(range, text.as_bytes());
        } else {
            let quoted = serde_json::to_string(text).expect("a string always serialises");
            self.push(range, &quoted.as_bytes()[1..quoted.len() - 1]);
        }
    }

    /// Forgets the edits made since [`Edits::len`] was `mark` (an entry that is removed
    /// whole needs none of the edits inside it).
    pub(crate) fn truncate(&mut self, mark: usize) {
        if mark >= self.edits.len() {
            return;
        }
        // Replacements are appended in order (a shared one ends where the last did), so
        // the bytes still needed end with the last kept edit's.
        let keep = mark.checked_sub(1).map_or(0, |k| self.edits[k].1.end);
        self.with.truncate(keep);
        self.edits.truncate(mark);
    }

    /// The edits in order, each with its replacement bytes.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (&Range<usize>, &[u8])> {
        self.edits.iter().map(|(r, w)| (r, &self.with[w.clone()]))
    }

    /// Sorts the edits and checks they fit `len` bytes and do not overlap; `false` when
    /// they do not (a bug, which the caller turns into a refusal).
    pub(crate) fn finish(&mut self, len: usize) -> bool {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let mut end = 0;
        for (r, _) in &self.edits {
            if r.start < end || r.end < r.start || r.end > len {
                return false;
            }
            end = r.end;
        }
        true
    }

    /// The length of the edited body.
    pub fn edited_len(&self, len: usize) -> usize {
        self.edits.iter().fold(len, |n, (r, with)| n - r.len() + with.len())
    }

    /// The edited body, as a new buffer.
    pub fn apply(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.edited_len(body.len()));
        let mut at = 0;
        for (r, with) in self.iter() {
            out.extend_from_slice(&body[at..r.start]);
            out.extend_from_slice(with);
            at = r.end;
        }
        out.extend_from_slice(&body[at..]);
        out
    }

    /// Edits `buf` (the body these edits were made for) in place: only the edited length
    /// beyond the body is ever allocated.
    ///
    /// The kept spans between edits move by the sum of the length changes before them.
    /// Spans moving left are moved first, in order, then spans moving right, in reverse
    /// order; no move overwrites a span not yet moved, because the edited spans keep
    /// their order and do not overlap. Replacements are written last.
    pub fn apply_in_place(&self, buf: &mut Vec<u8>) {
        if self.edits.is_empty() {
            return;
        }
        let old_len = buf.len();
        let new_len = self.edited_len(old_len);
        // (source start, destination start, length) of each kept span.
        let mut spans = Vec::with_capacity(self.edits.len() + 1);
        let mut writes = Vec::with_capacity(self.edits.len());
        let (mut at, mut out) = (0usize, 0usize);
        for (r, with) in self.iter() {
            spans.push((at, out, r.start - at));
            out += r.start - at;
            writes.push((out, with));
            out += with.len();
            at = r.end;
        }
        spans.push((at, out, old_len - at));
        if new_len > old_len {
            buf.resize(new_len, 0);
        }
        for &(from, to, n) in spans.iter().filter(|(from, to, _)| to < from) {
            buf.copy_within(from..from + n, to);
        }
        for &(from, to, n) in spans.iter().rev().filter(|(from, to, _)| to > from) {
            buf.copy_within(from..from + n, to);
        }
        for (to, with) in writes {
            buf[to..to + with.len()].copy_from_slice(with);
        }
        buf.truncate(new_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edits(list: &[(Range<usize>, &str)]) -> Edits {
        let mut e = Edits::default();
        for (r, w) in list {
            e.push(r.clone(), w.as_bytes());
        }
        assert!(e.finish(usize::MAX));
        e
    }

    #[test]
    fn splices_grow_shrink_and_remove() {
        let body = b"0123456789";
        let e = edits(&[(1..3, "ab"), (4..5, ""), (6..6, "XYZ"), (8..10, "!")]);
        let want = b"0ab35XYZ67!".to_vec();
        assert_eq!(e.apply(body), want);
        let mut buf = body.to_vec();
        e.apply_in_place(&mut buf);
        assert_eq!(buf, want);
    }

    #[test]
    fn a_shared_replacement_survives_truncation() {
        let body = b"aaXbbXccXdd";
        let mut e = Edits::default();
        e.push(2..3, b"--");
        e.push(5..6, b"--");
        e.push(8..9, b"++");
        e.truncate(2);
        e.push(8..9, b"**");
        e.truncate(1);
        e.push(8..9, b"--");
        assert!(e.finish(body.len()));
        assert_eq!(e.apply(body), b"aa--bbXcc--dd");
    }

    #[test]
    fn a_part_of_a_string_is_replaced_as_json_text() {
        for (text, base) in [
            ("http://b:1/fhir/Observation/1", "https://gw.example/api"),
            ("http://b/x/é", "a\"\\\u{1}é"),
        ] {
            let body = serde_json::to_string(text).unwrap();
            let mut e = Edits::default();
            e.push_str_part(1..1 + "http://b".len(), base);
            assert!(e.finish(body.len()));
            let want = serde_json::to_string(&format!("{base}{}", &text["http://b".len()..])).unwrap();
            assert_eq!(String::from_utf8(e.apply(body.as_bytes())).unwrap(), want);
        }
    }

    #[test]
    fn overlapping_or_out_of_range_edits_are_refused() {
        let mut e = Edits::default();
        e.push(2..5, b"");
        e.push(4..6, b"");
        assert!(!e.finish(10));
        let mut e = Edits::default();
        e.push(8..12, b"");
        assert!(!e.finish(10));
    }

    proptest! {
        /// In place or into a new buffer, the same bytes.
        #[test]
        fn in_place_equals_a_copy(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec((0usize..64, 0usize..8, proptest::collection::vec(any::<u8>(), 0..12)), 0..8),
        ) {
            let mut e = Edits::default();
            let mut at = 0;
            let mut sorted = cuts.clone();
            sorted.sort_by_key(|c| c.0);
            for (start, len, with) in sorted {
                let start = start.max(at).min(body.len());
                let end = (start + len).min(body.len());
                e.push(start..end, &with);
                at = end;
            }
            prop_assert!(e.finish(body.len()));
            let copy = e.apply(&body);
            let mut buf = body.clone();
            e.apply_in_place(&mut buf);
            prop_assert_eq!(buf, copy);
        }
    }
}
