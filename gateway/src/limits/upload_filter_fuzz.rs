//! Property/fuzz tests of the upload filter (EX-FILE-1; issue 17 item 6): the
//! ZIP, OLE, PDF, multipart and base64 readers take hostile bytes, so
//! - no input makes them panic, overflow or loop (arbitrary bytes, and bytes
//!   built from the tokens the parsers look for, so they get deep);
//! - a dangerous sample stays refused after mutations that do not change what
//!   a reader of the format would extract (fail closed).
//!
//! Cases per property: `PHR_FUZZ_CASES` (see `crate::fuzz_budget`).

use std::io::Write;

use base64::Engine;
use proptest::prelude::*;

use super::upload_filter::*;
use super::{content_sniff, embedded_parts, office_containers, pdf_scan};

fn policy() -> UploadPolicy {
    let allowed = [
        "application/pdf",
        "image/jpeg",
        "image/png",
        "application/fhir+json",
        "application/json",
        "text/plain",
        "application/vnd.openxmlformats-officedocument",
    ];
    UploadPolicy::new(
        allowed
            .iter()
            .map(|m| DetectedType::from_media_type(m).expect("a known media type"))
            .collect(),
        true,
    )
}

fn is_refused(v: &UploadVerdict) -> bool {
    matches!(v, UploadVerdict::Refused { .. })
}

/// Pieces the parsers react to, so generated bodies reach past the first check.
const TOKENS: &[&[u8]] = &[
    b"%PDF-1.7\n",
    b" obj ",
    b"endobj\n",
    b"stream\r\n",
    b"\nendstream",
    b"<< /Type /ObjStm /Filter /FlateDecode >>",
    b"/AHx",
    b"/J#61vaScript",
    b"/JS",
    b"(obj)",
    b"#",
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"\xFF\xFF\xFF\xFF",
    b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
    b"--b\r\n",
    b"\r\n--b",
    b"--b--",
    b"Content-Disposition: form-data; name=\"f\"\r\n",
    b"Content-Type: application/fhir+json\r\n\r\n",
    b"\r\n\r\n",
    b"{\"resourceType\":\"Binary\",\"data\":\"",
    b"\"contentType\":\"image/png\",\"data\":\"",
    b"\"valueBase64Binary\":\"",
    b"TVqQAAMAAAAEAAAA",
    b"\"}",
    b"<script>",
    b"MZ",
    b"\x7fELF",
];

/// Magic numbers and openings that select each parser.
const PREFIXES: &[&[u8]] = &[
    b"",
    b"%PDF-1.7\n",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
    b"--b\r\nContent-Disposition: form-data\r\n",
    b"{\"resourceType\":\"Binary\",\"data\":\"",
];

/// A body made of parser tokens and random bytes, behind one of the magic
/// numbers that select a parser.
fn tokenised_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ];
    let prefix = proptest::sample::select(PREFIXES);
    (prefix, proptest::collection::vec(piece, 0..48)).prop_map(|(p, pieces)| {
        let mut b = p.to_vec();
        pieces.iter().for_each(|x| b.extend_from_slice(x));
        b
    })
}

fn declared() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("image/png".to_owned())),
        Just(Some("multipart/form-data; boundary=b".to_owned())),
        Just(Some("multipart/mixed; boundary=\"\"".to_owned())),
        any::<String>().prop_map(Some),
    ]
}

fn run_every_reader(declared: Option<&str>, body: &[u8]) {
    let _ = policy().inspect(declared, body);
    let _ = UploadPolicy::new(Vec::new(), false).inspect(declared, body);
    let _ = pdf_scan::scan(body);
    let _ = office_containers::scan_zip(body);
    let _ = office_containers::scan_ole(body);
    let _ = content_sniff::executable(body);
    let _ = content_sniff::binary_type(body);
    if let Some(b) = embedded_parts::sniffed_boundary(body) {
        let _ = embedded_parts::split_multipart(body, &b);
    }
    if let Some(b) = declared.and_then(embedded_parts::declared_boundary) {
        let _ = embedded_parts::split_multipart(body, &b);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = embedded_parts::fhir_attachments(&v);
    }
}

fn elf() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.resize(64, 0);
    b
}

/// A valid zip: benign entries around one named `dangerous` (stored or deflated).
fn zip_with(dangerous: &str, benign: &[(String, Vec<u8>)], deflate: bool, position: usize) -> Vec<u8> {
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let at = position % (benign.len() + 1);
    for (i, (name, data)) in benign.iter().enumerate() {
        if i == at {
            w.start_file(dangerous, opts).expect("zip entry");
            w.write_all(&elf()).expect("zip write");
        }
        w.start_file(name.as_str(), opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    if at == benign.len() {
        w.start_file(dangerous, opts).expect("zip entry");
        w.write_all(&elf()).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

fn benign_entries() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            "[a-z]{1,8}/[a-z]{1,8}\\.(xml|txt|png)",
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        0..4,
    )
    .prop_map(|mut v| {
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    })
}

/// Byte ranges holding `name` (both copies: local header and central directory).
fn name_ranges(body: &[u8], name: &[u8]) -> Vec<std::ops::Range<usize>> {
    body.windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name)
        .map(|(i, _)| i..i + name.len())
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The same bytes as a FHIR attachment (inspected without the route's type list).
fn as_attachment(body: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "resourceType": "DocumentReference",
        "content": [{"attachment": {"contentType": "application/octet-stream", "data": b64(body)}}]
    })
    .to_string()
    .into_bytes()
}

fn flate_object_stream_pdf(dict: &[String], junk: &[String]) -> Vec<u8> {
    // Long enough to be really compressed (a short input is stored as is).
    let inner = "<< /Type /Action /S /JavaScript /JS (app.alert(1)) >> ".repeat(20);
    let z = miniz_oxide::deflate::compress_to_vec_zlib(inner.as_bytes(), 6);
    let mut pdf = b"%PDF-1.7\n".to_vec();
    for j in junk {
        pdf.extend_from_slice(j.as_bytes());
    }
    write!(pdf, "5 0 obj << {} >>\nstream\n", dict.join(" ")).expect("vec write");
    pdf.extend_from_slice(&z);
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
    pdf
}

/// An object stream's dictionary: its required entries and harmless extras,
/// in any order (PDF dictionaries are unordered).
fn object_stream_dict() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(dict_extra(), 0..4)
        .prop_map(|mut extras| {
            for e in ["/Type /ObjStm", "/N 1", "/First 4", "/Filter /FlateDecode"] {
                extras.push(e.to_owned());
            }
            extras
        })
        .prop_shuffle()
}

/// Harmless dictionary entries: names and strings whose text is PDF keywords.
fn dict_extra() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[A-Z][a-z]{1,8} [0-9]{1,3}",
        "/[A-Z][a-z]{1,8} \\((obj|endobj|stream|endstream|trailer|[a-z ]{0,8})\\)",
        "/[A-Z][a-z]{1,8} <</[A-Z][a-z]{1,4} (true|false)>>",
    ]
}

/// Objects and comments a PDF may hold before the interesting one.
fn pdf_junk() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,2} 0 obj << /Type /Page >> endobj\n",
        "%[a-z ]{0,20}\n",
        "[0-9]{1,2} 0 obj \\((stream|obj|text)\\) endobj\n",
        "[0-9]{1,2} 0 obj << /Length 3 >>\nstream\nabc\nendstream\nendobj\n",
    ]
}

proptest! {
    #![proptest_config(crate::fuzz_budget::config())]

    #[test]
    fn arbitrary_bytes_never_panic(declared in declared(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        run_every_reader(declared.as_deref(), &body);
    }

    #[test]
    fn tokenised_bodies_never_panic(declared in declared(), body in tokenised_body()) {
        run_every_reader(declared.as_deref(), &body);
    }

    /// One changed byte that is not part of the dangerous entry's name (both
    /// copies of which the scanner reads) cannot make the zip acceptable.
    #[test]
    fn zip_with_an_executable_stays_refused_after_one_mutation(
        benign in benign_entries(),
        deflate in any::<bool>(),
        position in any::<usize>(),
        dangerous in prop_oneof![Just("payload.exe"), Just("bin/run.sh"), Just("word/vbaProject.bin")],
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = zip_with(dangerous, &benign, deflate, position);
        let names = name_ranges(&body, dangerous.as_bytes());
        let i = at.index(body.len());
        prop_assume!(!names.iter().any(|r| r.contains(&i)));
        body[i] = byte;
        let top = policy().inspect(Some("application/zip"), &body);
        prop_assert!(is_refused(&top), "top level: {top:?}");
        let embedded = policy().inspect(Some("application/fhir+json"), &as_attachment(&body));
        prop_assert!(is_refused(&embedded), "as an attachment: {embedded:?}");
    }

    /// Zip readers find the archive from its end, so bytes put in front of it
    /// (a self-extractor stub, an image: a polyglot) do not hide its entries.
    #[test]
    fn zip_with_an_executable_stays_refused_behind_a_prefix(
        benign in benign_entries(),
        deflate in any::<bool>(),
        position in any::<usize>(),
        prefix in prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..64),
            Just(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xFF\xD9".to_vec()),
            Just(b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\xAEB`\x82".to_vec()),
        ],
    ) {
        let zip = zip_with("payload.exe", &benign, deflate, position);
        let mut body = prefix;
        body.extend_from_slice(&zip);
        let top = policy().inspect(Some("image/jpeg"), &body);
        prop_assert!(is_refused(&top), "top level: {top:?}");
        let embedded = policy().inspect(Some("application/fhir+json"), &as_attachment(&body));
        prop_assert!(is_refused(&embedded), "as an attachment: {embedded:?}");
    }

    /// JavaScript in a compressed object stream is found whatever harmless
    /// entries, strings and objects surround it.
    #[test]
    fn pdf_javascript_in_an_object_stream_stays_refused(
        dict in object_stream_dict(),
        junk in proptest::collection::vec(pdf_junk(), 0..4),
    ) {
        let pdf = flate_object_stream_pdf(&dict, &junk);
        prop_assert!(pdf_scan::scan(&pdf).is_err(), "{}", String::from_utf8_lossy(&pdf));
        prop_assert!(is_refused(&policy().inspect(Some("application/pdf"), &pdf)));
    }

    /// An executable in any part of a multipart body, or base64 in a FHIR
    /// attachment with line breaks anywhere, is refused.
    #[test]
    fn executables_in_parts_and_attachments_stay_refused(
        boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}",
        before in proptest::collection::vec("[a-z ]{0,40}", 0..3),
        breaks in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        prop_assume!(!before.iter().any(|p| p.contains(boundary.as_str())));
        let mut body = Vec::new();
        for (i, text) in before.iter().enumerate() {
            write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"t{i}\"\r\nContent-Type: text/plain\r\n\r\n{text}\r\n").expect("vec write");
        }
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.pdf\"\r\nContent-Type: application/pdf\r\n\r\n").expect("vec write");
        body.extend_from_slice(&elf());
        write!(body, "\r\n--{boundary}--\r\n").expect("vec write");
        let declared = format!("multipart/form-data; boundary=\"{boundary}\"");
        prop_assert!(is_refused(&policy().inspect(Some(&declared), &body)));

        let mut data = b64(&elf());
        let mut at: Vec<usize> = breaks.iter().map(|i| i.index(data.len() + 1)).collect();
        at.sort_unstable_by(|a, b| b.cmp(a));
        for i in at {
            data.insert_str(i, "\r\n");
        }
        let json = serde_json::json!({"resourceType": "Binary", "contentType": "application/pdf", "data": data});
        let v = policy().inspect(Some("application/fhir+json"), json.to_string().as_bytes());
        prop_assert!(is_refused(&v), "{v:?}");
    }

    /// A VBA storage in any directory slot of an OLE file, among random other
    /// entries, is found.
    #[test]
    fn ole_vba_storage_is_found_in_any_slot(
        slots in 1usize..8,
        slot in any::<prop::sample::Index>(),
        noise in proptest::collection::vec(any::<u8>(), 0..1024),
        name in prop_oneof![Just("VBA"), Just("_VBA_PROJECT_CUR"), Just("Macros"), Just("macros")],
    ) {
        let mut b = vec![0u8; 512 + slots * 128];
        let n = noise.len().min(b.len() - 512);
        b[512..512 + n].copy_from_slice(&noise[..n]);
        b[..8].copy_from_slice(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1");
        let at = 512 + slot.index(slots) * 128;
        let entry = &mut b[at..at + 128];
        entry.fill(0);
        let units: Vec<u8> = name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
        entry[..units.len()].copy_from_slice(&units);
        entry[64..66].copy_from_slice(&(units.len() as u16).to_le_bytes());
        entry[66] = 1;
        prop_assert!(is_refused(&policy().inspect(Some("application/msword"), &b)));
    }
}

// Regressions: one plain test per defect the properties above found.

/// `--b\r\n\r\n--b`: a part without headers made `split_multipart` slice
/// backwards and panic (the request's task died without an answer).
#[test]
fn regression_multipart_part_without_headers_does_not_panic() {
    let body = b"--b\r\n\r\n--b";
    let v = policy().inspect(Some("multipart/form-data; boundary=b"), body);
    assert_eq!(
        v,
        UploadVerdict::Refused {
            reason: RefusalReason::Malformed(ContainerKind::Multipart),
            status: RefusalReason::Malformed(ContainerKind::Multipart).status(),
        }
    );
    let parts = embedded_parts::split_multipart(b"--b\r\n\r\nhello\r\n--b--", "b").expect("a valid body");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].body, b"hello");
    assert_eq!(parts[0].content_type, None);
}

/// A JPEG with a zip appended (the archive's entries open in any zip reader)
/// passed as `image/jpeg`; so did the zip as a FHIR attachment behind any prefix.
#[test]
fn regression_zip_behind_an_image_is_inspected() {
    let jpeg = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xFF\xD9";
    let mut body = jpeg.to_vec();
    body.extend_from_slice(&zip_with("payload.exe", &[], false, 0));
    assert_eq!(
        policy().inspect(Some("image/jpeg"), &body),
        UploadVerdict::Refused {
            reason: RefusalReason::ArchiveExecutableEntry,
            status: RefusalReason::ArchiveExecutableEntry.status(),
        }
    );
    assert!(is_refused(
        &policy().inspect(Some("application/fhir+json"), &as_attachment(&body))
    ));
    // An image with nothing appended still passes.
    assert_eq!(
        policy().inspect(Some("image/jpeg"), jpeg),
        UploadVerdict::Allowed {
            detected: DetectedType::Jpeg
        }
    );
}

/// A zip whose first local header is damaged is no longer recognised by its
/// magic number, but readers still extract its other entries.
#[test]
fn regression_zip_with_a_damaged_first_header_is_inspected() {
    let mut body = zip_with("payload.exe", &[("a/b.txt".into(), b"hi".to_vec())], false, 1);
    body[0] = 0;
    assert!(is_refused(
        &policy().inspect(Some("application/fhir+json"), &as_attachment(&body))
    ));
}
