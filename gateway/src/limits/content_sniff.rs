//! Magic-number detection for the upload filter (EX-FILE-1).
//!
//! Only the bytes decide; the declared `Content-Type` is attacker-chosen.
//! Executables are looked for first and anywhere a loader would accept them
//! at offset 0, so polyglots (e.g. a PE in a DICOM preamble, CVE-2019-11687)
//! are refused as executables before any benign format is considered.

use super::upload_filter::{DetectedType, ExecutableKind};

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The executable format `body` starts with, if any.
pub(super) fn executable(body: &[u8]) -> Option<ExecutableKind> {
    if body.starts_with(b"\x7fELF") {
        return Some(ExecutableKind::Elf);
    }
    if body.starts_with(b"MZ") {
        // e_lfanew at 0x3C points at "PE\0\0" in a Windows executable; a bare
        // MZ header is a DOS executable, refused as well.
        let pe = le32(body, 0x3C)
            .and_then(|off| body.get(off as usize..off as usize + 4))
            .is_some_and(|sig| sig == b"PE\0\0");
        return Some(if pe { ExecutableKind::Pe } else { ExecutableKind::DosMz });
    }
    match be32(body, 0) {
        // Mach-O 32/64-bit, both byte orders.
        Some(0xFEED_FACE | 0xFEED_FACF | 0xCEFA_EDFE | 0xCFFA_EDFE) => return Some(ExecutableKind::MachO),
        // Universal (fat) Mach-O, 64-bit fat, and their byte-swapped forms.
        Some(0xCAFE_BABF | 0xBFBA_FECA | 0xBEBA_FECA) => return Some(ExecutableKind::MachO),
        // CAFEBABE: Java class (major version ≥ 45 at bytes 6-7) or fat
        // Mach-O (architecture count, small, at bytes 4-7).
        Some(0xCAFE_BABE) => {
            let java = be32(body, 4).is_some_and(|v| v >= 45);
            return Some(if java {
                ExecutableKind::JavaClass
            } else {
                ExecutableKind::MachO
            });
        }
        _ => {}
    }
    if body.starts_with(b"#!") || body.starts_with(b"\xEF\xBB\xBF#!") {
        return Some(ExecutableKind::Script);
    }
    if body.starts_with(b"\0asm") {
        return Some(ExecutableKind::WebAssembly);
    }
    if body.starts_with(b"\x4C\0\0\0\x01\x14\x02\0") {
        return Some(ExecutableKind::WindowsShortcut);
    }
    None
}

/// Binary formats recognised by magic number (text is handled by the caller).
pub(super) fn binary_type(body: &[u8]) -> Option<DetectedType> {
    let head = &body[..body.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Some(DetectedType::Pdf);
    }
    if body.starts_with(b"\xFF\xD8\xFF") {
        return Some(DetectedType::Jpeg);
    }
    if body.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(DetectedType::Png);
    }
    if body.starts_with(b"GIF87a") || body.starts_with(b"GIF89a") {
        return Some(DetectedType::Gif);
    }
    if body.len() >= 12 && &body[..4] == b"RIFF" && &body[8..12] == b"WEBP" {
        return Some(DetectedType::WebP);
    }
    if body.get(128..132) == Some(b"DICM") {
        return Some(DetectedType::Dicom);
    }
    if body.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        return Some(DetectedType::OleCompound);
    }
    if body.starts_with(b"PK\x03\x04") || body.starts_with(b"PK\x05\x06") {
        return Some(DetectedType::Zip);
    }
    None
}

/// `body` as text if it is UTF-8 (BOM allowed) without NUL bytes.
pub(super) fn as_text(body: &[u8]) -> Option<&str> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.contains(&0) {
        return None;
    }
    std::str::from_utf8(body).ok()
}

/// Case-insensitive ASCII substring search.
pub(super) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Markup flavour of a text body, judged from its first 4 KiB.
pub(super) fn markup_type(text: &str) -> Option<DetectedType> {
    let head = &text.as_bytes()[..text.len().min(4096)];
    if contains_ci(head, b"<svg") {
        Some(DetectedType::Svg)
    } else if contains_ci(head, b"<html") || contains_ci(head, b"<!doctype html") || contains_ci(head, b"<script") {
        Some(DetectedType::Html)
    } else if text.trim_start().starts_with("<?xml") {
        Some(DetectedType::Xml)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_recognised_by_magic() {
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert_eq!(executable(&pe), Some(ExecutableKind::Pe));
        assert_eq!(executable(b"MZ\x90\0"), Some(ExecutableKind::DosMz));
        assert_eq!(executable(b"\x7fELF\x02\x01\x01"), Some(ExecutableKind::Elf));
        for m in [0xFEEDFACEu32, 0xFEEDFACF, 0xCEFAEDFE, 0xCFFAEDFE, 0xCAFEBABF] {
            assert_eq!(executable(&m.to_be_bytes()), Some(ExecutableKind::MachO), "{m:x}");
        }
        assert_eq!(executable(b"\xCA\xFE\xBA\xBE\0\0\0\x02"), Some(ExecutableKind::MachO));
        assert_eq!(
            executable(b"\xCA\xFE\xBA\xBE\0\0\0\x34"),
            Some(ExecutableKind::JavaClass)
        );
        assert_eq!(executable(b"#!/bin/sh\nrm -rf /"), Some(ExecutableKind::Script));
        assert_eq!(executable(b"%PDF-1.7"), None);
    }
}
