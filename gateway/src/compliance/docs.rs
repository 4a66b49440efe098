//! `docs/compliance.md`, generated from the table (`compliance-report --docs`), so the
//! map and the disclosure cannot disagree. A test compares the committed file with this.

use super::catalogue::Catalogue;
use std::fmt::Write as _;

/// The command that regenerates `docs/compliance.md` (printed by the drift test).
pub const REGENERATE: &str = "cargo run -p phr-gateway -- compliance-report --docs > docs/compliance.md";

/// The whole of `docs/compliance.md`.
pub fn render(cat: &Catalogue) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n\n{}", cat.title, cat.intro.trim());
    for section in &cat.docs_sections {
        let _ = writeln!(
            out,
            "\n## {}\n\n| ID | {} | Code | Tests |\n|---|---|---|---|",
            section.title, section.what_header
        );
        for c in cat.controls.iter().filter(|c| c.docs_section == section.key) {
            let _ = writeln!(out, "| {} | {} | {} | {} |", c.label, c.what, c.code, c.tests);
        }
    }
    let _ = writeln!(out, "\n## Not in scope of a gateway\n\n{}", cat.not_in_scope.trim());
    out
}
