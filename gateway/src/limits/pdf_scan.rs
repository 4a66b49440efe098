//! PDF active-content scan (EX-FILE-1): JavaScript, launch actions,
//! embedded files and rich media are refused.
//!
//! Names are compared after decoding `#xx` escapes (`/J#61vaScript` is
//! `/JavaScript`). Dictionaries hidden in compressed object streams
//! (`/Type /ObjStm`, PDF 1.5+) are inflated (bounded) and scanned too; an
//! object stream that cannot be decoded (other filters, encryption,
//! corruption, over the budget) makes the PDF uninspectable and it is
//! refused rather than waved through. `/OpenAction` by itself (e.g. "open at
//! page 2") is harmless; with JavaScript it is caught by `/JS`.
//! Names inside strings or comments can cause a false refusal, never a miss.

use super::upload_filter::{PdfFeature, RefusalReason};

/// Most bytes inflated from object streams per document.
const INFLATE_BUDGET: usize = 32 << 20;

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || b"/[]<>(){}%".contains(&b)
}

/// Calls `f` with every decoded name in `data`; stops early on `Some`.
fn for_each_name<T>(data: &[u8], mut f: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    let mut i = 0;
    let mut name = Vec::with_capacity(32);
    while i < data.len() {
        if data[i] != b'/' {
            i += 1;
            continue;
        }
        i += 1;
        name.clear();
        while i < data.len() && !is_delimiter(data[i]) {
            let b = data[i];
            let hex = |c: u8| (c as char).to_digit(16);
            if b == b'#' && i + 2 < data.len() {
                if let (Some(h), Some(l)) = (hex(data[i + 1]), hex(data[i + 2])) {
                    name.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            name.push(b);
            i += 1;
        }
        if let Some(t) = f(&name) {
            return Some(t);
        }
    }
    None
}

fn feature(name: &[u8]) -> Option<PdfFeature> {
    match name {
        b"JavaScript" | b"JS" => Some(PdfFeature::JavaScript),
        b"Launch" => Some(PdfFeature::Launch),
        b"EmbeddedFile" | b"EmbeddedFiles" => Some(PdfFeature::EmbeddedFile),
        b"RichMedia" => Some(PdfFeature::RichMedia),
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Refuses PDFs with active content; `Ok` for a clean document.
pub(super) fn scan(body: &[u8]) -> Result<(), RefusalReason> {
    if let Some(f) = for_each_name(body, feature) {
        return Err(RefusalReason::PdfActiveContent(f));
    }
    let mut budget = INFLATE_BUDGET;
    let mut at = 0;
    // Where the current stream's dictionary may begin: just after the previous
    // "stream" keyword (or the previous object stream's data). Not "the last
    // `obj`": a string `(obj)` inside the dictionary would cut it there and
    // hide the /Filter before it; and a lookback from each keyword made a body
    // of many "stream" words quadratic. Taking every name since the previous
    // keyword is a superset of the dictionary: it can cause a false refusal,
    // never a miss, and each byte is looked at once.
    let mut dict_from = 0;
    while let Some(kw) = find(body, b"stream", at) {
        at = kw + 6;
        if kw >= 3 && &body[kw - 3..kw] == b"end" {
            continue;
        }
        let dict = &body[dict_from..kw];
        dict_from = at;
        let mut object_stream = false;
        let mut flate = false;
        let mut other_filter = false;
        for_each_name(dict, |n| {
            match n {
                b"ObjStm" => object_stream = true,
                b"FlateDecode" | b"Fl" => flate = true,
                b"ASCIIHexDecode" | b"AHx" | b"ASCII85Decode" | b"A85" | b"LZWDecode" | b"LZW" | b"RunLengthDecode"
                | b"RL" | b"Crypt" => other_filter = true,
                _ => {}
            }
            None::<()>
        });
        if !object_stream {
            continue;
        }
        let mut data_start = at;
        if body.get(data_start) == Some(&b'\r') {
            data_start += 1;
        }
        if body.get(data_start) == Some(&b'\n') {
            data_start += 1;
        }
        let end = find(body, b"endstream", data_start).ok_or(RefusalReason::PdfUninspectable)?;
        let raw = &body[data_start..end];
        let decoded = if flate && !other_filter {
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(raw, budget)
                .map_err(|_| RefusalReason::PdfUninspectable)?
        } else if !flate && !other_filter && reads_as_plain_object_stream(raw) {
            raw.to_vec()
        } else {
            return Err(RefusalReason::PdfUninspectable);
        };
        budget = budget.saturating_sub(decoded.len());
        if let Some(f) = for_each_name(&decoded, feature) {
            return Err(RefusalReason::PdfActiveContent(f));
        }
        at = end + 9;
        dict_from = at;
    }
    Ok(())
}

/// Whether the data of an object stream whose dictionary names no filter reads
/// as what it then must be: object numbers and offsets, then PDF objects in
/// text. Anything else (zlib, hex or ASCII85 text, binary) means the filter was
/// not seen (a keyword inside a string can hide it), so the stream cannot be
/// inspected as plain bytes: fail closed.
fn reads_as_plain_object_stream(raw: &[u8]) -> bool {
    let text = raw.trim_ascii();
    let hex_like = text
        .strip_suffix(b">")
        .is_some_and(|h| h.iter().all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace()));
    text.first().is_some_and(u8::is_ascii_digit)
        && raw.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        && !hex_like
        && !text.ends_with(b"~>")
        && find(raw, b"stream", 0).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_are_decoded() {
        let pdf = b"%PDF-1.7\n1 0 obj << /S /J#61vaScript /J#53 (app.alert(1)) >> endobj";
        assert_eq!(scan(pdf), Err(RefusalReason::PdfActiveContent(PdfFeature::JavaScript)));
        let launch = b"%PDF-1.4\n1 0 obj << /OpenAction << /S /Launch /F (cmd.exe) >> >> endobj";
        assert_eq!(scan(launch), Err(RefusalReason::PdfActiveContent(PdfFeature::Launch)));
        assert_eq!(scan(b"%PDF-1.4\n1 0 obj << /OpenAction [3 0 R /Fit] >> endobj"), Ok(()));
    }

    #[test]
    fn javascript_in_a_compressed_object_stream_is_found() {
        let inner = b"<< /Type /Action /S /JavaScript /JS (app.alert(1)) >>";
        let z = miniz_oxide::deflate::compress_to_vec_zlib(inner, 6);
        let mut pdf = b"%PDF-1.7\n5 0 obj << /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\nstream\n".to_vec();
        pdf.extend_from_slice(&z);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        assert_eq!(scan(&pdf), Err(RefusalReason::PdfActiveContent(PdfFeature::JavaScript)));
        let mut hex = b"%PDF-1.7\n5 0 obj << /Type /ObjStm /Filter /ASCIIHexDecode >>\nstream\n".to_vec();
        hex.extend_from_slice(b"3c3c3e3e>\nendstream\nendobj\n");
        assert_eq!(scan(&hex), Err(RefusalReason::PdfUninspectable));
    }

    fn object_stream(dict: &str) -> Vec<u8> {
        // Long enough to be really compressed (a short input is stored as is,
        // and its names would be seen in the raw bytes).
        let inner = "<< /Type /Action /S /JavaScript /JS (app.alert(1)) >> ".repeat(20);
        let z = miniz_oxide::deflate::compress_to_vec_zlib(inner.as_bytes(), 6);
        assert!(
            !z.windows(10).any(|w| w == b"JavaScript"),
            "the stream must hide its names"
        );
        let mut pdf = format!("%PDF-1.7\n5 0 obj << {dict} >>\nstream\n").into_bytes();
        pdf.extend_from_slice(&z);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        pdf
    }

    #[test]
    fn regression_keyword_in_a_string_does_not_hide_the_filter() {
        // The dictionary was taken from the last "obj" before "stream", so a
        // string "(obj)" cut off the /Filter before it: the compressed stream
        // was read as plain bytes and its JavaScript was missed.
        let pdf = object_stream("/Filter /FlateDecode /T (obj) /Type /ObjStm /N 1 /First 4");
        assert_eq!(scan(&pdf), Err(RefusalReason::PdfActiveContent(PdfFeature::JavaScript)));
        let pdf = object_stream("/Filter /FlateDecode /T (endobj) /Type /ObjStm");
        assert_eq!(scan(&pdf), Err(RefusalReason::PdfActiveContent(PdfFeature::JavaScript)));
        // A keyword that cuts the dictionary the other way leaves nothing
        // readable: refused as uninspectable.
        let pdf = object_stream("/Type /ObjStm /T (stream) /Filter /FlateDecode");
        assert_eq!(scan(&pdf), Err(RefusalReason::PdfUninspectable));
        let pdf = object_stream("/Type /ObjStm /T (endstream) /Filter /FlateDecode");
        assert!(scan(&pdf).is_err());
        // An uncompressed object stream is still read as it is.
        let plain =
            b"%PDF-1.7\n5 0 obj << /Type /ObjStm /N 1 /First 4 >>\nstream\n1 0 << /S /GoTo >>\nendstream\nendobj\n";
        assert_eq!(scan(plain), Ok(()));
    }

    #[test]
    fn regression_many_stream_keywords_are_scanned_once() {
        // Each "stream" looked back to the previous "obj" (here: none), so this
        // 4 MiB body took hours; now each byte is looked at once. The body must
        // pass (no object stream is declared), and the test ends at all.
        let mut body = b"%PDF-1.7\n1 0 obj << /Length 0 >>\n".to_vec();
        while body.len() < 4 << 20 {
            body.extend_from_slice(b"stream ");
        }
        assert_eq!(scan(&body), Ok(()));
    }
}
