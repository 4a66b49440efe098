//! JUnit XML for integration pipelines: one `<testcase>` per check, with its time in
//! seconds, a `<failure>` carrying the detail for failed checks and `<skipped>` for
//! skipped ones.

use super::{Outcome, Report};
use std::fmt::Write;

/// The report as a JUnit XML document (one `<testsuite>` named after the command).
pub fn render(report: &Report) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = format!("phr-gateway {}", report.kind);
    let _ = writeln!(
        xml,
        "<testsuites tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">",
        report.checks.len(),
        report.failed,
        report.skipped,
        seconds(report.duration_ms)
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">",
        escape(&suite),
        report.checks.len(),
        report.failed,
        report.skipped,
        seconds(report.duration_ms),
        escape(&report.started_at)
    );
    let _ = writeln!(
        xml,
        "    <properties><property name=\"target\" value=\"{}\"/></properties>",
        escape(&report.target)
    );
    for c in &report.checks {
        let open = format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
            escape(&suite),
            escape(&c.name),
            seconds(c.duration_ms)
        );
        match c.outcome {
            Outcome::Pass => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(xml, "      <system-out>{}</system-out>", escape(&c.detail));
                let _ = writeln!(xml, "    </testcase>");
            }
            Outcome::Fail => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(
                    xml,
                    "      <failure message=\"{}\" type=\"probe\">{}</failure>",
                    escape(&c.detail),
                    escape(&c.detail)
                );
                let _ = writeln!(xml, "    </testcase>");
            }
            Outcome::Skip => {
                let _ = writeln!(xml, "{open}>");
                let _ = writeln!(xml, "      <skipped message=\"{}\"/>", escape(&c.detail));
                let _ = writeln!(xml, "    </testcase>");
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Escapes text for XML attributes and content; characters XML 1.0 cannot carry at all
/// (most control characters) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{now_rfc3339, Check};
    use super::*;
    use std::time::Instant;

    #[test]
    fn one_testcase_per_check_with_escaped_failures() {
        let t = Instant::now();
        let checks = vec![
            Check::pass("tls.versions", "ok", t),
            Check::fail("tokens.unsigned", "answered 200 <\"&'>\u{1}", t),
            Check::skip("patients.read", "needs --token", t),
        ];
        let xml = render(&Report::new("probe", "https://h/?a&b", now_rfc3339(), t, checks));
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("answered 200 &lt;&quot;&amp;&apos;&gt;\u{FFFD}"), "{xml}");
        assert!(xml.contains("<skipped message=\"needs --token\"/>"), "{xml}");
        assert!(xml.contains("value=\"https://h/?a&amp;b\""), "{xml}");
    }
}
