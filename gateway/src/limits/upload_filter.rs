//! Upload content filter (EX-FILE-1 実行ファイル・マクロを含むファイルの送受信禁止;
//! seed: 不正ソフトウェア対策/ウイルス対策).
//!
//! Why content, not `Content-Type`: the declared type is chosen by the sender;
//! a PE renamed `scan.pdf` and sent as `application/pdf` is still a PE. Each
//! body is classified by its bytes ([`DetectedType`]); executables (ELF, PE/MZ,
//! Mach-O, `#!` scripts, Java classes, WebAssembly, Windows shortcuts) are
//! refused anywhere, Office files with macros or embedded objects, PDFs with
//! JavaScript/launch actions/embedded files, and script-bearing markup
//! declared as an image are refused, and the detected type must be in the
//! route's `allowed_media_types`. Multipart parts and base64 attachments in
//! FHIR JSON are inspected each (`embedded_parts.rs`); attachments
//! must be free of dangerous content but are not held to the route's list.
//!
//! Limits: this recognises carriers at the edge; it is no anti-virus engine
//! (no signatures, no emulation) and does not replace scanning where files
//! are stored. The gateway buffers the body (within its body-size limit)
//! before calling [`UploadFilter::inspect`], logs each refusal (route,
//! reason, detected type; counted in `phr_upload_refused_total{reason}`) and
//! answers the `status` of [`UploadVerdict::Refused`].

use std::collections::HashMap;

use http::StatusCode;
use serde_json::Value;

use super::config::UploadFilterConfig;
use super::content_sniff;
use super::embedded_parts;
use super::office_containers;
use super::pdf_scan;

/// The type of a body as judged from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DetectedType {
    /// `%PDF-` within the first KiB.
    Pdf,
    /// `FF D8 FF`.
    Jpeg,
    /// PNG signature.
    Png,
    /// `GIF87a` / `GIF89a`.
    Gif,
    /// `RIFF....WEBP`.
    WebP,
    /// `DICM` at offset 128 (DICOM Part 10).
    Dicom,
    /// UTF-8 text that is no other kind below.
    PlainText,
    /// JSON that is not a FHIR resource.
    Json,
    /// JSON object with `resourceType`.
    FhirJson,
    /// HTML (or text with `<script`).
    Html,
    /// SVG.
    Svg,
    /// Other XML.
    Xml,
    /// A macro-free OOXML document (zip with `[Content_Types].xml`).
    Ooxml,
    /// OLE compound file (legacy Office, MSI, ...) without macros.
    OleCompound,
    /// Another zip archive.
    Zip,
    /// A multipart body whose parts all passed.
    Multipart,
    /// Nothing recognised.
    Unknown,
}

/// `(config name, type)` for the types a route may allow.
const ALLOWABLE: &[(&str, DetectedType)] = &[
    ("application/pdf", DetectedType::Pdf),
    ("image/jpeg", DetectedType::Jpeg),
    ("image/png", DetectedType::Png),
    ("image/gif", DetectedType::Gif),
    ("image/webp", DetectedType::WebP),
    ("application/dicom", DetectedType::Dicom),
    ("text/plain", DetectedType::PlainText),
    ("application/json", DetectedType::Json),
    ("application/fhir+json", DetectedType::FhirJson),
    ("application/vnd.openxmlformats-officedocument", DetectedType::Ooxml),
];

impl DetectedType {
    /// The type named by an `allowed_media_types` entry (case-insensitive);
    /// `None` for types the filter cannot admit (HTML, SVG, zip, OLE, ...).
    pub fn from_media_type(m: &str) -> Option<Self> {
        ALLOWABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(m.trim()))
            .map(|(_, t)| *t)
    }

    /// A media type naming this detected type, for logs and config.
    pub fn media_type(self) -> &'static str {
        match ALLOWABLE.iter().find(|(_, t)| *t == self) {
            Some((n, _)) => n,
            None => match self {
                DetectedType::Html => "text/html",
                DetectedType::Svg => "image/svg+xml",
                DetectedType::Xml => "application/xml",
                DetectedType::OleCompound => "application/x-ole-storage",
                DetectedType::Zip => "application/zip",
                DetectedType::Multipart => "multipart/form-data",
                _ => "application/octet-stream",
            },
        }
    }
}

/// Executable formats refused wherever they appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutableKind {
    /// ELF (`\x7fELF`).
    Elf,
    /// Windows PE (`MZ` with `PE\0\0` at `e_lfanew`).
    Pe,
    /// DOS `MZ` executable without a PE header.
    DosMz,
    /// Mach-O, any magic variant including universal binaries.
    MachO,
    /// Java class file (`CAFEBABE`, major version ≥ 45).
    JavaClass,
    /// Script with a `#!` interpreter line.
    Script,
    /// WebAssembly module.
    WebAssembly,
    /// Windows shell link (`.lnk`).
    WindowsShortcut,
}

/// What shows that an Office file carries macros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacroEvidence {
    /// `vbaProject.bin` / `vbaData.xml` inside an OOXML zip.
    VbaProject,
    /// A macro-enabled content type in `[Content_Types].xml` (.docm/.xlsm/.pptm...).
    MacroEnabledContentType,
    /// A `VBA`/`_VBA_PROJECT`/`Macros` storage in an OLE file.
    OleVbaStorage,
}

/// Embedded objects refused in Office files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddedObject {
    /// ActiveX controls.
    ActiveX,
    /// Embedded OLE objects (`embeddings/oleObject*.bin`).
    OleObject,
    /// OLE Packager payload (`\x01Ole10Native`): an arbitrary embedded file.
    OlePackage,
}

/// PDF features that run or carry code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdfFeature {
    /// `/JavaScript` or `/JS`.
    JavaScript,
    /// `/Launch` (starts a program).
    Launch,
    /// `/EmbeddedFile(s)`.
    EmbeddedFile,
    /// `/RichMedia` (Flash and similar).
    RichMedia,
}

/// Containers that could not be taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// Zip central directory or entry.
    Zip,
    /// multipart/form-data.
    Multipart,
    /// base64 in a FHIR attachment.
    Base64,
}

/// Why a body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    /// An executable format.
    #[error("executable content ({0:?})")]
    Executable(ExecutableKind),
    /// An Office document with macros.
    #[error("office document with macros ({0:?})")]
    OfficeMacros(MacroEvidence),
    /// An Office document with an embedded object.
    #[error("office document with embedded object ({0:?})")]
    OfficeEmbeddedObject(EmbeddedObject),
    /// A PDF with active content.
    #[error("PDF with active content ({0:?})")]
    PdfActiveContent(PdfFeature),
    /// A PDF whose object streams could not be decoded for inspection.
    #[error("PDF could not be inspected")]
    PdfUninspectable,
    /// Markup with `<script` in a body declared as an image.
    #[error("script in a body declared as an image")]
    ScriptInImage,
    /// An archive entry with an executable's file extension.
    #[error("archive contains an executable entry")]
    ArchiveExecutableEntry,
    /// A container that could not be parsed.
    #[error("malformed {0:?} container")]
    Malformed(ContainerKind),
    /// Containers nested deeper than the filter follows.
    #[error("containers nested too deeply")]
    TooDeep,
    /// The detected type is not allowed on this route.
    #[error("detected type {} is not allowed on this route", .0.media_type())]
    NotAllowed(DetectedType),
}

impl RefusalReason {
    /// 415 when the type is wrong (executables, types not allowed), 422 when
    /// an acceptable format carries dangerous or uninspectable content.
    pub fn status(&self) -> StatusCode {
        match self {
            RefusalReason::Executable(_) | RefusalReason::NotAllowed(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// Short label for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RefusalReason::Executable(_) => "executable",
            RefusalReason::OfficeMacros(_) => "office_macros",
            RefusalReason::OfficeEmbeddedObject(_) => "office_embedded_object",
            RefusalReason::PdfActiveContent(_) => "pdf_active_content",
            RefusalReason::PdfUninspectable => "pdf_uninspectable",
            RefusalReason::ScriptInImage => "script_in_image",
            RefusalReason::ArchiveExecutableEntry => "archive_executable",
            RefusalReason::Malformed(_) => "malformed",
            RefusalReason::TooDeep => "too_deep",
            RefusalReason::NotAllowed(_) => "type_not_allowed",
        }
    }
}

/// The filter's answer for one body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadVerdict {
    /// Forward the body.
    Allowed {
        /// What the bytes are.
        detected: DetectedType,
    },
    /// Refuse with `status`.
    Refused {
        /// Why.
        reason: RefusalReason,
        /// 415 or 422 ([`RefusalReason::status`]).
        status: StatusCode,
    },
}

/// One route's rules.
#[derive(Clone, Debug)]
pub struct UploadPolicy {
    allowed: Vec<DetectedType>,
    inspect_embedded: bool,
}

/// Nesting levels followed (multipart → FHIR JSON → attachment → ...).
const MAX_DEPTH: usize = 4;

impl UploadPolicy {
    /// A policy admitting `allowed` detected types.
    pub fn new(allowed: Vec<DetectedType>, inspect_embedded: bool) -> Self {
        Self {
            allowed,
            inspect_embedded,
        }
    }

    /// Inspects `body`; `declared` is the request's `Content-Type`, used only
    /// to find a multipart boundary and for the script-in-image rule.
    pub fn inspect(&self, declared: Option<&str>, body: &[u8]) -> UploadVerdict {
        match self.classify(declared, body, 0, true) {
            Ok(detected) => UploadVerdict::Allowed { detected },
            Err(reason) => UploadVerdict::Refused {
                reason,
                status: reason.status(),
            },
        }
    }

    fn classify(
        &self,
        declared: Option<&str>,
        body: &[u8],
        depth: usize,
        enforce: bool,
    ) -> Result<DetectedType, RefusalReason> {
        if depth > MAX_DEPTH {
            return Err(RefusalReason::TooDeep);
        }
        if let Some(kind) = content_sniff::executable(body) {
            return Err(RefusalReason::Executable(kind));
        }
        let boundary = declared
            .and_then(embedded_parts::declared_boundary)
            .or_else(|| embedded_parts::sniffed_boundary(body));
        if let (Some(b), true) = (boundary, self.inspect_embedded) {
            for part in embedded_parts::split_multipart(body, &b)? {
                self.classify(part.content_type.as_deref(), part.body, depth + 1, enforce)?;
            }
            return Ok(DetectedType::Multipart);
        }
        let detected = self.detect(declared, body, depth)?;
        if enforce && !self.allowed.contains(&detected) {
            return Err(RefusalReason::NotAllowed(detected));
        }
        Ok(detected)
    }

    fn detect(&self, declared: Option<&str>, body: &[u8], depth: usize) -> Result<DetectedType, RefusalReason> {
        if let Some(t) = content_sniff::binary_type(body) {
            match t {
                DetectedType::Pdf => pdf_scan::scan(body)?,
                DetectedType::OleCompound => office_containers::scan_ole(body)?,
                DetectedType::Zip => return office_containers::scan_zip(body),
                _ => {}
            }
            // A polyglot: an image (or PDF, OLE file) with an archive appended.
            office_containers::scan_hidden_zip(body)?;
            return Ok(t);
        }
        let Some(text) = content_sniff::as_text(body) else {
            // Unknown bytes may still be an archive to a zip reader (a
            // damaged first header, a self-extractor stub).
            office_containers::scan_hidden_zip(body)?;
            return Ok(DetectedType::Unknown);
        };
        let declared_image = declared.is_some_and(|d| d.trim_start().to_ascii_lowercase().starts_with("image/"));
        if declared_image && content_sniff::contains_ci(text.as_bytes(), b"<script") {
            return Err(RefusalReason::ScriptInImage);
        }
        if text.trim_start().starts_with('{') {
            if let Ok(json) = serde_json::from_str::<Value>(text) {
                let fhir = json.get("resourceType").is_some_and(Value::is_string);
                if self.inspect_embedded {
                    for a in embedded_parts::fhir_attachments(&json)? {
                        self.classify(a.content_type.as_deref(), &a.data, depth + 1, false)?;
                    }
                }
                return Ok(if fhir {
                    DetectedType::FhirJson
                } else {
                    DetectedType::Json
                });
            }
        }
        Ok(content_sniff::markup_type(text).unwrap_or(DetectedType::PlainText))
    }
}

/// Upload policies by route name.
#[derive(Clone, Debug, Default)]
pub struct UploadFilter {
    routes: HashMap<String, UploadPolicy>,
}

impl UploadFilter {
    /// Builds the filter from validated `[upload_filter]` config (unknown
    /// media type names, rejected by validation, are ignored here).
    pub fn new(cfg: &UploadFilterConfig) -> Self {
        let routes = cfg
            .routes
            .iter()
            .map(|(name, r)| {
                let allowed = r
                    .allowed_media_types
                    .iter()
                    .filter_map(|m| DetectedType::from_media_type(m))
                    .collect();
                (name.clone(), UploadPolicy::new(allowed, r.inspect_embedded))
            })
            .collect();
        Self { routes }
    }

    /// Inspects a body sent to `route`; `None` when the route has no upload
    /// rule (its bodies are not filtered). Refusals are logged and counted.
    pub fn inspect(&self, route: &str, declared: Option<&str>, body: &[u8]) -> Option<UploadVerdict> {
        let verdict = self.routes.get(route)?.inspect(declared, body);
        if let UploadVerdict::Refused { reason, .. } = &verdict {
            metrics::counter!("phr_upload_refused_total", "reason" => reason.code()).increment(1);
            tracing::warn!(route, reason = %reason, declared = declared.unwrap_or(""), bytes = body.len(), "upload refused");
        }
        Some(verdict)
    }
}
