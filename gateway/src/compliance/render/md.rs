//! The Markdown form of the report.

use super::{group_heading, responsibility_word, state_word, used_groups, words, Lang};
use crate::compliance::evaluate::Report;
use std::fmt::Write as _;

/// A table cell: no line breaks, `|` escaped.
pub(crate) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Renders the report in `lang`.
pub fn render(report: &Report, lang: Lang) -> String {
    let w = words(lang);
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n\n{}\n", w.title, w.subtitle);
    let _ = writeln!(out, "- {}: `{}`", w.config, report.config_file);
    let _ = writeln!(
        out,
        "- {}: {}",
        w.profile,
        report
            .profile_file
            .as_deref()
            .map(|p| format!("`{p}`"))
            .unwrap_or_else(|| w.none.to_string())
    );
    let _ = writeln!(out, "- {}: {}", w.instance, report.instance_id);
    let _ = writeln!(out, "- {}: {} ({})", w.generated, report.generated_at, report.generator);
    let s = &report.summary;
    let _ = writeln!(
        out,
        "- {}: met {}, partly {}, not met {}, not applicable {}, organisational {}, unknown {}",
        w.summary, s.met, s.partly, s.not_met, s.not_applicable, s.organisational, s.unknown
    );
    let failures = match report.strict_failures.is_empty() {
        true => w.none.to_string(),
        false => report.strict_failures.join(", "),
    };
    let _ = writeln!(out, "- {}: {failures}", w.strict);
    for group in used_groups(report) {
        let _ = writeln!(out, "\n## {}\n", group_heading(report, group, lang));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |\n|---|---|---|---|---|---|",
            w.id, w.requirement, w.control, w.state, w.evidence, w.responsible
        );
        for r in report.rows.iter().filter(|r| r.group == group) {
            let requirement = match lang {
                Lang::Ja => format!("{}<br>{}", r.requirement_ja, r.requirement_en),
                Lang::En => format!("{}<br>{}", r.requirement_en, r.requirement_ja),
            };
            let mandatory = if r.mandatory {
                format!(" ({})", w.mandatory)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | **{}**{} | {} | {} |",
                cell(&r.id),
                cell(&requirement),
                cell(&r.control),
                state_word(r.state, lang),
                mandatory,
                r.evidence.iter().map(|e| cell(e)).collect::<Vec<_>>().join("<br>"),
                responsibility_word(r.responsibility, lang)
            );
        }
    }
    out
}
