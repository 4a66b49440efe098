//! Office containers (EX-FILE-1): OOXML zips and OLE compound files with
//! macros or embedded objects are refused.
//!
//! The zip central directory is parsed by hand (names are stored
//! uncompressed there), and local file headers are scanned as well, so an
//! entry hidden from the central directory is still seen. Only
//! `[Content_Types].xml` is inflated (at most 1 MiB) to find macro-enabled
//! content types (`application/vnd.ms-word.document.macroEnabled...`, the
//! `.docm`/`.xlsm`/`.pptm` family). OLE files are scanned for directory
//! entries named `VBA`, `_VBA_PROJECT`, `_VBA_PROJECT_CUR`, `Macros`
//! (UTF-16LE, 128-byte aligned entries) and `\x01Ole10Native` (packaged files).

use super::content_sniff::contains_ci;
use super::upload_filter::{ContainerKind, DetectedType, EmbeddedObject, MacroEvidence, RefusalReason};

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

struct ZipEntry<'a> {
    name: &'a [u8],
    method: usize,
    compressed: usize,
    local_offset: usize,
}

const MALFORMED: RefusalReason = RefusalReason::Malformed(ContainerKind::Zip);

fn central_directory(body: &[u8]) -> Result<Vec<ZipEntry<'_>>, RefusalReason> {
    let tail_from = body.len().saturating_sub(22 + 65_535);
    let eocd = body[tail_from..]
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .map(|p| p + tail_from)
        .ok_or(MALFORMED)?;
    let count = le16(body, eocd + 10).ok_or(MALFORMED)?;
    let size = le32(body, eocd + 12).ok_or(MALFORMED)?;
    let declared = le32(body, eocd + 16).ok_or(MALFORMED)?;
    if declared == 0xFFFF_FFFF || count == 0xFFFF {
        return Err(MALFORMED); // zip64: not an upload an office document needs
    }
    // Zip readers find the central directory from the end (it ends where the
    // end record starts), so bytes put in front of the archive (a
    // self-extractor stub, an image: a polyglot) shift every offset by their
    // length. Read it where a reader would, and shift the entries' offsets alike.
    let mut at = declared;
    if body.get(at..at + 4) != Some(b"PK\x01\x02") {
        at = eocd.checked_sub(size).ok_or(MALFORMED)?;
    }
    let shift = at.saturating_sub(declared);
    let mut out = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        if body.get(at..at + 4) != Some(b"PK\x01\x02") {
            return Err(MALFORMED);
        }
        let name_len = le16(body, at + 28).ok_or(MALFORMED)?;
        let skip = name_len + le16(body, at + 30).ok_or(MALFORMED)? + le16(body, at + 32).ok_or(MALFORMED)?;
        out.push(ZipEntry {
            name: body.get(at + 46..at + 46 + name_len).ok_or(MALFORMED)?,
            method: le16(body, at + 10).ok_or(MALFORMED)?,
            compressed: le32(body, at + 20).ok_or(MALFORMED)?,
            local_offset: le32(body, at + 42).ok_or(MALFORMED)? + shift,
        });
        at += 46 + skip;
    }
    Ok(out)
}

/// Names from local file headers, wherever they are in the body.
fn local_names(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"PK\x03\x04")
        .filter_map(|(at, _)| {
            let len = le16(body, at + 26)?;
            body.get(at + 30..at + 30 + len)
        })
}

fn entry_data(body: &[u8], e: &ZipEntry<'_>) -> Result<Vec<u8>, RefusalReason> {
    let at = e.local_offset;
    if body.get(at..at + 4) != Some(b"PK\x03\x04") {
        return Err(MALFORMED);
    }
    let start = at + 30 + le16(body, at + 26).ok_or(MALFORMED)? + le16(body, at + 28).ok_or(MALFORMED)?;
    let raw = body.get(start..start + e.compressed).ok_or(MALFORMED)?;
    match e.method {
        0 => Ok(raw.to_vec()),
        8 => miniz_oxide::inflate::decompress_to_vec_with_limit(raw, 1 << 20).map_err(|_| MALFORMED),
        _ => Err(MALFORMED),
    }
}

fn check_name(name: &[u8]) -> Result<(), RefusalReason> {
    let lower = name.to_ascii_lowercase();
    let base = lower.rsplit(|b| *b == b'/').next().unwrap_or(&lower);
    if base == b"vbaproject.bin" || base == b"vbadata.xml" {
        return Err(RefusalReason::OfficeMacros(MacroEvidence::VbaProject));
    }
    if lower.starts_with(b"activex/") || contains_ci(&lower, b"/activex/") {
        return Err(RefusalReason::OfficeEmbeddedObject(EmbeddedObject::ActiveX));
    }
    if base.starts_with(b"oleobject") {
        return Err(RefusalReason::OfficeEmbeddedObject(EmbeddedObject::OleObject));
    }
    const RUNNABLE: &[&[u8]] = &[
        b".exe", b".dll", b".scr", b".com", b".bat", b".cmd", b".ps1", b".vbs", b".vbe", b".js", b".jse", b".wsf",
        b".hta", b".jar", b".msi", b".lnk", b".sh", b".app",
    ];
    if RUNNABLE.iter().any(|ext| base.ends_with(ext)) {
        return Err(RefusalReason::ArchiveExecutableEntry);
    }
    Ok(())
}

/// Inspects a zip: `Ooxml` when it has `[Content_Types].xml`, else `Zip`.
pub(super) fn scan_zip(body: &[u8]) -> Result<DetectedType, RefusalReason> {
    let entries = central_directory(body)?;
    for e in &entries {
        check_name(e.name)?;
    }
    for name in local_names(body) {
        check_name(name)?;
    }
    let Some(ct) = entries.iter().find(|e| e.name == b"[Content_Types].xml") else {
        return Ok(DetectedType::Zip);
    };
    let xml = entry_data(body, ct)?;
    if contains_ci(&xml, b"macroEnabled") || contains_ci(&xml, b"vnd.ms-office.vbaProject") {
        return Err(RefusalReason::OfficeMacros(MacroEvidence::MacroEnabledContentType));
    }
    if contains_ci(&xml, b"vnd.ms-office.activeX") {
        return Err(RefusalReason::OfficeEmbeddedObject(EmbeddedObject::ActiveX));
    }
    if contains_ci(&xml, b"vnd.openxmlformats-officedocument.oleObject") {
        return Err(RefusalReason::OfficeEmbeddedObject(EmbeddedObject::OleObject));
    }
    Ok(DetectedType::Ooxml)
}

/// Inspects a zip archive that does not start the body: one behind other
/// bytes (a JPEG or PNG with an archive appended, a self-extractor), or whose
/// first local header is damaged. Zip readers open such bodies from the end,
/// so their entries are refused as a zip's would be. A body whose end holds no
/// readable central directory is no archive to a reader either: `Ok`.
pub(super) fn scan_hidden_zip(body: &[u8]) -> Result<(), RefusalReason> {
    let Ok(entries) = central_directory(body) else {
        return Ok(());
    };
    for e in &entries {
        check_name(e.name)?;
    }
    for name in local_names(body) {
        check_name(name)?;
    }
    Ok(())
}

/// Inspects an OLE compound file's directory entry names.
pub(super) fn scan_ole(body: &[u8]) -> Result<(), RefusalReason> {
    let mut at = 512;
    while at + 128 <= body.len() {
        let entry = &body[at..at + 128];
        at += 128;
        let name_len = le16(entry, 64).unwrap_or(0);
        if !(2..=64).contains(&name_len) || name_len & 1 == 1 || !matches!(entry[66], 1 | 2 | 5) {
            continue;
        }
        let units: Vec<u16> = entry[..name_len - 2]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let Ok(name) = String::from_utf16(&units) else { continue };
        let upper = name.to_ascii_uppercase();
        if matches!(upper.as_str(), "VBA" | "_VBA_PROJECT" | "_VBA_PROJECT_CUR" | "MACROS") {
            return Err(RefusalReason::OfficeMacros(MacroEvidence::OleVbaStorage));
        }
        if name == "\u{1}Ole10Native" {
            return Err(RefusalReason::OfficeEmbeddedObject(EmbeddedObject::OlePackage));
        }
    }
    Ok(())
}
