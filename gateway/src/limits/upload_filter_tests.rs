//! Tests of the upload filter: each dangerous sample is disguised with an
//! innocent declared type and must still be refused; clean samples pass.

use std::io::Write;

use base64::Engine;
use http::StatusCode;

use super::upload_filter::*;

fn policy() -> UploadPolicy {
    let allowed = [
        "application/pdf",
        "image/jpeg",
        "application/fhir+json",
        "text/plain",
        "application/vnd.openxmlformats-officedocument",
    ];
    UploadPolicy::new(
        allowed
            .iter()
            .map(|m| DetectedType::from_media_type(m).unwrap())
            .collect(),
        true,
    )
}

fn refused(declared: &str, body: &[u8]) -> RefusalReason {
    match policy().inspect(Some(declared), body) {
        UploadVerdict::Refused { reason, status } => {
            assert_eq!(status, reason.status());
            reason
        }
        v => panic!("expected refusal, got {v:?}"),
    }
}

fn allowed(declared: &str, body: &[u8]) -> DetectedType {
    match policy().inspect(Some(declared), body) {
        UploadVerdict::Allowed { detected } => detected,
        v => panic!("expected allowed, got {v:?}"),
    }
}

fn elf() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.resize(64, 0);
    b
}

fn pe() -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..2].copy_from_slice(b"MZ");
    b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b
}

fn ooxml(content_type: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let types = format!(
        r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/main.xml" ContentType="{content_type}"/></Types>"#
    );
    w.start_file("[Content_Types].xml", opts).unwrap();
    w.write_all(types.as_bytes()).unwrap();
    w.start_file("word/document.xml", opts).unwrap();
    w.write_all(b"<w:document/>").unwrap();
    for (name, data) in extra {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml";
const DOCM: &str = "application/vnd.ms-word.document.macroEnabled.main+xml";
const XLSM: &str = "application/vnd.ms-excel.sheet.macroEnabled.main+xml";

fn jpeg() -> Vec<u8> {
    let mut b = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
    b.extend_from_slice(&[0x11; 64]);
    b.extend_from_slice(b"\xFF\xD9");
    b
}

const PLAIN_PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const JS_PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction 3 0 R >> endobj\n3 0 obj << /S /JavaScript /JS (app.launchURL('x')) >> endobj\n%%EOF\n";

#[test]
fn executables_are_refused_whatever_the_declared_type() {
    assert_eq!(
        refused("application/pdf", &elf()),
        RefusalReason::Executable(ExecutableKind::Elf)
    );
    let r = refused("image/jpeg", &pe());
    assert_eq!(r, RefusalReason::Executable(ExecutableKind::Pe));
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        refused("text/plain", b"#!/bin/sh\ncurl x | sh\n"),
        RefusalReason::Executable(ExecutableKind::Script)
    );
    assert_eq!(
        refused("application/pdf", b"\xCA\xFE\xBA\xBE\0\0\0\x34"),
        RefusalReason::Executable(ExecutableKind::JavaClass)
    );
    assert_eq!(
        refused("application/pdf", &0xCFFAEDFEu32.to_be_bytes()),
        RefusalReason::Executable(ExecutableKind::MachO)
    );
}

#[test]
fn macro_enabled_office_files_are_refused() {
    let docm = ooxml(DOCM, &[("word/vbaProject.bin", b"\xD0\xCF\x11\xE0")]);
    let r = refused(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        &docm,
    );
    assert_eq!(r, RefusalReason::OfficeMacros(MacroEvidence::VbaProject));
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Macro-enabled content type alone (no vbaProject part) is enough.
    let xlsm = ooxml(XLSM, &[]);
    assert_eq!(
        refused("application/pdf", &xlsm),
        RefusalReason::OfficeMacros(MacroEvidence::MacroEnabledContentType)
    );
    let activex = ooxml(DOCX, &[("word/activeX/activeX1.xml", b"<ax/>")]);
    assert_eq!(
        refused("application/pdf", &activex),
        RefusalReason::OfficeEmbeddedObject(EmbeddedObject::ActiveX)
    );
    let ole = ooxml(DOCX, &[("word/embeddings/oleObject1.bin", b"x")]);
    assert_eq!(
        refused("application/pdf", &ole),
        RefusalReason::OfficeEmbeddedObject(EmbeddedObject::OleObject)
    );
    assert_eq!(
        allowed("application/octet-stream", &ooxml(DOCX, &[])),
        DetectedType::Ooxml
    );
}

fn ole_with_entry(name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512 + 512];
    b[..8].copy_from_slice(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1");
    let entry = &mut b[512 + 128..512 + 256];
    let units: Vec<u8> = name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
    entry[..units.len()].copy_from_slice(&units);
    entry[64..66].copy_from_slice(&(units.len() as u16).to_le_bytes());
    entry[66] = 1; // storage
    b
}

#[test]
fn ole_files_with_vba_storage_are_refused() {
    let r = refused("application/msword", &ole_with_entry("_VBA_PROJECT_CUR"));
    assert_eq!(r, RefusalReason::OfficeMacros(MacroEvidence::OleVbaStorage));
    assert_eq!(
        refused("application/msword", &ole_with_entry("Macros")),
        RefusalReason::OfficeMacros(MacroEvidence::OleVbaStorage)
    );
    // A macro-free OLE file is recognised, and refused here only because the route does not allow it.
    assert_eq!(
        refused("application/msword", &ole_with_entry("WordDocument")),
        RefusalReason::NotAllowed(DetectedType::OleCompound)
    );
}

#[test]
fn pdf_with_javascript_is_refused_and_plain_pdf_and_jpeg_pass() {
    assert_eq!(
        refused("application/pdf", JS_PDF),
        RefusalReason::PdfActiveContent(PdfFeature::JavaScript)
    );
    let escaped = b"%PDF-1.7\n1 0 obj << /S /J#61va#53cript /J#53 (x) >> endobj\n";
    assert_eq!(
        refused("image/jpeg", escaped),
        RefusalReason::PdfActiveContent(PdfFeature::JavaScript)
    );
    let embedded = b"%PDF-1.7\n1 0 obj << /Names << /EmbeddedFiles 4 0 R >> >> endobj\n";
    assert_eq!(
        refused("application/pdf", embedded),
        RefusalReason::PdfActiveContent(PdfFeature::EmbeddedFile)
    );
    assert_eq!(allowed("application/pdf", PLAIN_PDF), DetectedType::Pdf);
    assert_eq!(allowed("image/jpeg", &jpeg()), DetectedType::Jpeg);
    // A JPEG declared as PDF is still a JPEG, and allowed on this route.
    assert_eq!(allowed("application/pdf", &jpeg()), DetectedType::Jpeg);
}

#[test]
fn script_in_an_image_and_types_not_allowed_are_refused() {
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>";
    assert_eq!(refused("image/png", svg), RefusalReason::ScriptInImage);
    assert_eq!(
        refused("image/svg+xml", b"<svg></svg>"),
        RefusalReason::NotAllowed(DetectedType::Svg)
    );
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let r = refused("image/png", png);
    assert_eq!(r, RefusalReason::NotAllowed(DetectedType::Png));
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        allowed("text/plain", "検査結果: 異常なし\n".as_bytes()),
        DetectedType::PlainText
    );
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn fhir_attachments_are_decoded_and_inspected() {
    let binary = format!(
        r#"{{"resourceType":"Binary","contentType":"application/pdf","data":"{}"}}"#,
        b64(&elf())
    );
    assert_eq!(
        refused("application/fhir+json", binary.as_bytes()),
        RefusalReason::Executable(ExecutableKind::Elf)
    );
    let docref = format!(
        r#"{{"resourceType":"DocumentReference","status":"current","content":[{{"attachment":{{"contentType":"application/pdf","data":"{}"}}}},{{"attachment":{{"contentType":"application/pdf","data":"{}"}}}}]}}"#,
        b64(PLAIN_PDF),
        b64(JS_PDF)
    );
    assert_eq!(
        refused("application/fhir+json", docref.as_bytes()),
        RefusalReason::PdfActiveContent(PdfFeature::JavaScript)
    );
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":{{"resourceType":"Binary","contentType":"image/jpeg","data":"{}"}}}}]}}"#,
        b64(&pe())
    );
    assert_eq!(
        refused("application/json", bundle.as_bytes()),
        RefusalReason::Executable(ExecutableKind::Pe)
    );
    let clean = format!(
        r#"{{"resourceType":"Binary","contentType":"application/pdf","data":"{}"}}"#,
        b64(PLAIN_PDF)
    );
    assert_eq!(
        allowed("application/fhir+json", clean.as_bytes()),
        DetectedType::FhirJson
    );
    let bad = r#"{"resourceType":"Binary","contentType":"application/pdf","data":"%%%not base64"}"#;
    assert_eq!(
        refused("application/fhir+json", bad.as_bytes()),
        RefusalReason::Malformed(ContainerKind::Base64)
    );
}

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, (ct, data)) in parts.iter().enumerate() {
        write!(
            b,
            "--XyZ\r\nContent-Disposition: form-data; name=\"f{i}\"; filename=\"f{i}\"\r\nContent-Type: {ct}\r\n\r\n"
        )
        .unwrap();
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"--XyZ--\r\n");
    b
}

#[test]
fn multipart_parts_are_inspected_each() {
    let docm = ooxml(DOCM, &[("word/vbaProject.bin", b"x")]);
    let body = multipart(&[("application/pdf", PLAIN_PDF), ("application/pdf", &docm)]);
    let declared = "multipart/form-data; boundary=XyZ";
    assert_eq!(
        refused(declared, &body),
        RefusalReason::OfficeMacros(MacroEvidence::VbaProject)
    );
    // Declared as something else, the body is still recognised as multipart.
    let body = multipart(&[("image/jpeg", &jpeg()), ("text/plain", b"#!/bin/bash\nid\n")]);
    assert_eq!(
        refused("text/plain", &body),
        RefusalReason::Executable(ExecutableKind::Script)
    );
    let ok = multipart(&[("image/jpeg", &jpeg()), ("application/pdf", PLAIN_PDF)]);
    assert_eq!(allowed(declared, &ok), DetectedType::Multipart);
}

#[test]
fn filter_applies_per_route() {
    let cfg: super::config::UploadFilterConfig =
        toml::from_str("[routes.documents]\nallowed_media_types = [\"application/pdf\"]\n").unwrap();
    let f = UploadFilter::new(&cfg);
    assert_eq!(
        f.inspect("documents", Some("application/pdf"), PLAIN_PDF),
        Some(UploadVerdict::Allowed {
            detected: DetectedType::Pdf
        })
    );
    assert!(matches!(
        f.inspect("documents", Some("application/pdf"), &jpeg()),
        Some(UploadVerdict::Refused { .. })
    ));
    assert_eq!(
        f.inspect("other", None, &elf()),
        None,
        "route without rules is not filtered"
    );
}
