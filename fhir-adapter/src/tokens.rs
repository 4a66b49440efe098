//! A validating JSON tokenizer over UTF-8 text: the primitives [`crate::scan`] reads a
//! backend's body with, each byte visited once.
//!
//! Requirements: EX-SEG-1 (only well-formed JSON is released).
//!
//! Why not a crate: `jiter` (pydantic's pull parser) was the first choice and does fit
//! the shape, but its per-token cost came to about 20 instructions a byte on a FHIR
//! Bundle, most of the check's cost. This one validates exactly what serde_json does
//! (the check it replaced; RFC 8259's grammar: numbers, escapes with paired surrogates,
//! no control characters in strings, no trailing commas), skips strings eight bytes at a
//! time, and skips nested values iteratively, so a deep or long body cannot exhaust the
//! stack. UTF-8 is checked once, before (the caller holds a `&str`).

use std::ops::Range;

/// Nesting of skipped values before the body is refused (serde_json's own limit).
const SKIP_DEPTH: u32 = 128;

/// Why the text is not JSON, and where.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) what: &'static str,
    pub(crate) at: usize,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A string token: the bytes between its quotes, and whether they hold an escape.
pub(crate) struct Str {
    pub(crate) inner: Range<usize>,
    pub(crate) escaped: bool,
}

pub(crate) struct Tokens<'a> {
    b: &'a [u8],
    i: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` below `n` (exact for the lowest such byte; a
/// borrow may mark bytes above it too).
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// Marks the bytes of `w` that end a plain run of string text: `"`, `\` or a control
/// character (below 0x20); the lowest mark is the first such byte.
fn specials(w: u64) -> u64 {
    below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) | below(w, 0x20)
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Tokens {
            b: text.as_bytes(),
            i: 0,
        }
    }

    /// The position of the next byte.
    pub(crate) fn index(&self) -> usize {
        self.i
    }

    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(Error { what, at: self.i })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The first byte of the next token (whitespace skipped), not consumed.
    pub(crate) fn peek(&mut self) -> Result<u8> {
        self.ws();
        match self.b.get(self.i) {
            Some(&c) => Ok(c),
            None => self.err("unexpected end of the JSON text"),
        }
    }

    /// Nothing but whitespace after the document.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            self.err("trailing characters after the JSON document")
        }
    }

    /// A string, at its opening quote.
    pub(crate) fn string(&mut self) -> Result<Str> {
        if self.b.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.plain_run();
            match self.b.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    let inner = start..self.i;
                    self.i += 1;
                    return Ok(Str { inner, escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(&c) if c < 0x20 => return self.err("control character in a string"),
                Some(_) => self.i += 1,
            }
        }
    }

    /// Moves to the next `"`, `\` or control character of a string (or the end of the
    /// text): eight bytes at a time, then to the first one in the eight.
    fn plain_run(&mut self) {
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let Ok(bytes) = <[u8; 8]>::try_from(chunk) else { return };
            let marks = specials(u64::from_le_bytes(bytes));
            if marks != 0 {
                self.i += (marks.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// One escape, at its backslash.
    fn escape(&mut self) -> Result<()> {
        self.i += 1;
        match self.b.get(self.i) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                let n = self.hex4()?;
                match n {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by a low one (serde_json
                        // refuses a lone one when it decodes the string).
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return self.err("lone leading surrogate in a \\u escape");
                        }
                        self.i += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => self.err("lone leading surrogate in a \\u escape"),
                        }
                    }
                    0xDC00..=0xDFFF => self.err("lone trailing surrogate in a \\u escape"),
                    _ => Ok(()),
                }
            }
            Some(_) => self.err("invalid escape"),
            None => self.err("unterminated string"),
        }
    }

    fn hex4(&mut self) -> Result<u16> {
        let mut n = 0u16;
        for _ in 0..4 {
            let d = match self.b.get(self.i) {
                Some(&c @ b'0'..=b'9') => c - b'0',
                Some(&c @ b'a'..=b'f') => c - b'a' + 10,
                Some(&c @ b'A'..=b'F') => c - b'A' + 10,
                Some(_) => return self.err("invalid \\u escape"),
                None => return self.err("unterminated string"),
            };
            n = (n << 4) | u16::from(d);
            self.i += 1;
        }
        Ok(n)
    }

    fn digits(&mut self) -> Result<()> {
        if !matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
            return self.err("invalid number");
        }
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return self.err("invalid number"),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("expected a JSON value")
        }
    }

    /// A string, number or literal at the parser's position (after [`Tokens::peek`]).
    fn scalar(&mut self, first: u8) -> Result<()> {
        match first {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.err("expected a JSON value"),
        }
    }

    /// A member name and its colon, at the name's quote (whitespace skipped).
    fn key(&mut self) -> Result<Str> {
        if self.peek()? != b'"' {
            return self.err("expected a member name");
        }
        let key = self.string()?;
        if self.peek()? != b':' {
            return self.err("expected ':'");
        }
        self.i += 1;
        Ok(key)
    }

    /// At an object's `{`: its first member's name, or `None` when it is empty.
    pub(crate) fn object_first(&mut self) -> Result<Option<Str>> {
        self.i += 1;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// After a member's value: the next member's name, or `None` at the object's end.
    pub(crate) fn object_next(&mut self) -> Result<Option<Str>> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.key().map(Some)
            }
            b'}' => {
                self.i += 1;
                Ok(None)
            }
            _ => self.err("expected ',' or '}'"),
        }
    }

    /// At an array's `[`: whether it has an item (the parser is then before it).
    pub(crate) fn array_first(&mut self) -> Result<bool> {
        self.i += 1;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an item: whether another follows.
    pub(crate) fn array_next(&mut self) -> Result<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Ok(true)
            }
            b']' => {
                self.i += 1;
                Ok(false)
            }
            _ => self.err("expected ',' or ']'"),
        }
    }

    /// Validates and passes over one value, its first byte `first` (from
    /// [`Tokens::peek`]). Nested objects and arrays are followed on a bit stack, not
    /// by recursion.
    pub(crate) fn skip(&mut self, first: u8) -> Result<()> {
        // Bit `d` of `objects`: whether the container at depth `d` is an object.
        let mut objects: u128 = 0;
        let mut depth: u32 = 0;
        let mut c = first;
        loop {
            // A value starts at `c`.
            let opened = match c {
                b'{' => {
                    self.i += 1;
                    if self.peek()? == b'}' {
                        self.i += 1;
                        false
                    } else {
                        self.key()?;
                        objects |= 1 << depth;
                        true
                    }
                }
                b'[' => {
                    self.i += 1;
                    if self.peek()? == b']' {
                        self.i += 1;
                        false
                    } else {
                        objects &= !(1 << depth);
                        true
                    }
                }
                _ => {
                    self.scalar(c)?;
                    false
                }
            };
            if opened {
                depth += 1;
                if depth >= SKIP_DEPTH {
                    return self.err("the JSON is nested too deeply");
                }
                c = self.peek()?;
                continue;
            }
            // The value ended: close what ends with it, up to the next value.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = objects & (1 << (depth - 1)) != 0;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if in_object {
                            self.key()?;
                        }
                        c = self.peek()?;
                        break;
                    }
                    b'}' if in_object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    b']' if !in_object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return self.err("expected ',' or the end of an object or array"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\"a\"",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\/\\n\"",
        "\"\\q\"",
        "\"\u{1}\"",
        "\"é\"",
        "\"",
        "\\",
        "0",
        "1",
        "9",
        "-",
        ".",
        "e",
        "E",
        "+",
        "true",
        "false",
        "null",
        "nul",
        "x",
    ];

    /// Scalars, most valid, some one mistake away.
    const LEXEMES: &[&str] = &[
        "0",
        "-0",
        "12",
        "1.5",
        "-1.5e+3",
        "1E-2",
        "01",
        "1.",
        "-",
        "1e",
        ".5",
        "+1",
        "00",
        "-01",
        "true",
        "false",
        "null",
        "tru",
        "\"\"",
        "\"a b\"",
        "\"\\u00e9\\n\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\u{1f}\"",
        "\"\u{7f}é\"",
        "\"abcdefghijklmnopq\\\"r\"",
    ];

    fn document() -> impl Strategy<Value = String> {
        let leaf = proptest::sample::select(LEXEMES).prop_map(str::to_owned);
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..4), any::<bool>()).prop_map(|(v, trailing)| format!(
                    "[{}{}]",
                    v.join(","),
                    if trailing { "," } else { "" }
                )),
                proptest::collection::vec((proptest::sample::select(LEXEMES), inner), 0..4).prop_map(|m| {
                    let members: Vec<String> = m.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    format!("{{ {} }}", members.join(", "))
                }),
            ]
        })
    }

    fn skip_all(text: &str) -> Result<()> {
        let mut t = Tokens::new(text);
        let c = t.peek()?;
        t.skip(c)?;
        t.finish()
    }

    #[test]
    fn strings_end_at_their_quote_past_escapes_and_long_runs() {
        let text = r#""a long run of plain text, then \"quoted\" and \u00e9\ud83d\ude00 é!" 1"#;
        let mut t = Tokens::new(text);
        let s = t.string().unwrap();
        assert!(s.escaped);
        assert_eq!(&text[s.inner.end..s.inner.end + 1], "\"");
        assert_eq!(t.index(), text.len() - 2);
    }

    proptest! {
        #![proptest_config(crate::fuzz_tests::config())]

        /// The tokenizer accepts exactly what serde_json accepts, on text made of JSON's
        /// pieces and on generated JSON with a byte changed or cut short.
        #[test]
        fn accepts_what_serde_json_accepts(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..12)) {
            let text = pieces.concat();
            let serde = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            prop_assert_eq!(skip_all(&text).is_ok(), serde, "{:?}", text);
        }

        /// JSON documents whose scalars are drawn from valid and invalid lexemes.
        #[test]
        fn accepts_what_serde_json_accepts_in_documents(text in document()) {
            let serde = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            prop_assert_eq!(skip_all(&text).is_ok(), serde, "{:?}", text);
        }

        #[test]
        fn accepts_what_serde_json_accepts_near_valid_json(
            v in crate::fuzz_tests::backend_body(),
            at in any::<prop::sample::Index>(),
            byte in 0u8..0x80,
            cut in any::<bool>(),
        ) {
            let mut text = serde_json::to_string(&v).unwrap();
            let at = at.index(text.len());
            if cut {
                text.truncate(at);
            } else {
                text.replace_range(at..at + 1, &char::from(byte).to_string());
            }
            let serde = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            prop_assert_eq!(skip_all(&text).is_ok(), serde, "{:?}", text);
        }
    }

    #[test]
    fn refusals() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for text in [
            "",
            " ",
            "01",
            "1.",
            "-",
            "1e",
            ".5",
            "+1",
            "[1,]",
            r#"{"a":1,}"#,
            "[1 2]",
            r#"{"a" 1}"#,
            "tru",
            "nul",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\x""#,
            "\"\u{1}\"",
            r#""abc"#,
            "{",
            "[",
            r#"{1:2}"#,
            "NaN",
            "[1]]",
            &deep,
        ] {
            assert!(skip_all(text).is_err(), "{text:?}");
        }
        for text in [
            "0",
            "-0.5e+10",
            "[]",
            "{}",
            r#"{"a":[1,{"b":null}],"c":"\ud83d\ude00"}"#,
            " true ",
        ] {
            assert!(skip_all(text).is_ok(), "{text:?}");
        }
    }
}
