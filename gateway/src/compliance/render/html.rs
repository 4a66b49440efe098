//! The HTML form: one self-contained page (inline CSS, no scripts, no external assets)
//! that prints well (`@media print`: A4 landscape, rows never split, headings repeated).
//! Every value is escaped. Each row is a `<tr data-id="ID" data-state="STATE">`, which
//! the headless-browser test looks for in the DOM.

use super::{group_heading, responsibility_word, state_word, used_groups, words, Lang};
use crate::compliance::evaluate::Report;
use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline Markdown code spans (`x`) become `<code>`; everything else is escaped text.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        match i % 2 {
            1 => {
                let _ = write!(out, "<code>{}</code>", escape(part));
            }
            _ => out.push_str(&escape(&part.replace("**", ""))),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: "Noto Sans JP", "Hiragino Sans", "Yu Gothic", sans-serif; margin: 2em; color: #111; font-size: 14px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 2px solid #444; }
.meta { color: #444; }
.meta dt { font-weight: bold; float: left; clear: left; width: 12em; }
.meta dd { margin-left: 12.5em; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #999; padding: 4px 6px; vertical-align: top; text-align: left; word-wrap: break-word; }
th { background: #eee; }
col.id { width: 9%; } col.req { width: 17%; } col.ctl { width: 27%; } col.st { width: 8%; } col.ev { width: 31%; } col.rs { width: 8%; }
td.state { font-weight: bold; }
tr.met td.state { background: #dff0d8; }
tr.partly td.state { background: #fcf8e3; }
tr.not_met td.state, tr.unknown td.state { background: #f2dede; }
tr.not_applicable td.state, tr.organisational td.state { background: #eef; }
ul.ev { margin: 0; padding-left: 1.1em; }
code { font-size: 0.9em; }
.ja { display: block; } .en { display: block; color: #555; font-size: 0.9em; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; font-size: 9pt; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr td.state { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// Renders the page in `lang`.
pub fn render(report: &Report, lang: Lang) -> String {
    let w = words(lang);
    let mut out = String::new();
    let html_lang = match lang {
        Lang::Ja => "ja",
        Lang::En => "en",
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{html_lang}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"meta\">{}</p>\n<dl class=\"meta\">\n",
        escape(w.title),
        escape(w.title),
        escape(w.subtitle)
    );
    let s = &report.summary;
    let profile = report.profile_file.as_deref().unwrap_or(w.none);
    let failures = match report.strict_failures.is_empty() {
        true => w.none.to_string(),
        false => report.strict_failures.join(", "),
    };
    for (k, v) in [
        (w.config, report.config_file.clone()),
        (w.profile, profile.to_string()),
        (w.instance, report.instance_id.clone()),
        (w.generated, format!("{} ({})", report.generated_at, report.generator)),
        (
            w.summary,
            format!(
                "met {}, partly {}, not met {}, not applicable {}, organisational {}, unknown {}",
                s.met, s.partly, s.not_met, s.not_applicable, s.organisational, s.unknown
            ),
        ),
        (w.strict, failures),
    ] {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    out.push_str("</dl>\n");
    for group in used_groups(report) {
        let _ = write!(
            out,
            "<h2>{}</h2>\n<table data-group=\"{}\">\n<colgroup><col class=\"id\"><col class=\"req\"><col class=\"ctl\"><col class=\"st\"><col class=\"ev\"><col class=\"rs\"></colgroup>\n<thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>\n<tbody>\n",
            escape(&group_heading(report, group, lang)),
            escape(group),
            escape(w.id),
            escape(w.requirement),
            escape(w.control),
            escape(w.state),
            escape(w.evidence),
            escape(w.responsible)
        );
        for r in report.rows.iter().filter(|r| r.group == group) {
            let (first, second) = match lang {
                Lang::Ja => (&r.requirement_ja, &r.requirement_en),
                Lang::En => (&r.requirement_en, &r.requirement_ja),
            };
            let evidence: String = r.evidence.iter().map(|e| format!("<li>{}</li>", escape(e))).collect();
            let mandatory = match r.mandatory {
                true => format!("<br><small>({})</small>", escape(w.mandatory)),
                false => String::new(),
            };
            let _ = writeln!(
                out,
                "<tr class=\"{state}\" data-id=\"{id}\" data-state=\"{state}\"><td class=\"id\">{id}</td><td><span class=\"ja\">{first}</span><span class=\"en\">{second}</span></td><td>{control}<br><small>{code}</small></td><td class=\"state\">{word}{mandatory}</td><td><ul class=\"ev\">{evidence}</ul></td><td>{resp}</td></tr>",
                state = r.state.key(),
                id = escape(&r.id),
                first = escape(first),
                second = escape(second),
                control = inline(&r.control),
                code = inline(&r.code),
                word = escape(state_word(r.state, lang)),
                resp = escape(responsibility_word(r.responsibility, lang)),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}
