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
    while let Some(kw) = find(body, b"stream", at) {
        at = kw + 6;
        if kw >= 3 && &body[kw - 3..kw] == b"end" {
            continue;
        }
        // The stream's dictionary: back to the preceding "obj" keyword.
        let dict_start = body[..kw].windows(3).rposition(|w| w == b"obj").unwrap_or(0);
        let dict = &body[dict_start..kw];
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
        } else if !flate && !other_filter {
            raw.to_vec()
        } else {
            return Err(RefusalReason::PdfUninspectable);
        };
        budget = budget.saturating_sub(decoded.len());
        if let Some(f) = for_each_name(&decoded, feature) {
            return Err(RefusalReason::PdfActiveContent(f));
        }
        at = end + 9;
    }
    Ok(())
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
}
