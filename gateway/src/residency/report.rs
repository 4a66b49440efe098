//! The data-location report (`phr-gateway residency report --config F`):
//! evidence for DATA-JP-1 / DATA-JP-2 / DATA-JP-3 and DATA-LOC-1.
//!
//! Auditors ask "where does patient data go?". This module answers from the
//! same declarations and address policy the gateway enforces, so the report
//! cannot drift from what is actually enforced. It is pure: the caller
//! resolves the targets (with the same [`super::resolve::Resolver`] the connector
//! uses) and passes the answers in, which keeps it testable offline.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::jurisdiction::{check_declaration, Jurisdiction, Target, TargetKind};
use super::policy::{AddressVerdict, Refusal, ResidencyPolicy};

/// One target with the outcome of resolving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResolution {
    /// The target as configured.
    pub target: Target,
    /// Its addresses, or why resolution failed (shown verbatim).
    pub addresses: Result<Vec<IpAddr>, String>,
}

/// What the report says about one address of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowResult {
    /// In the domestic allow-list.
    AllowList,
    /// Private/loopback address of an in-cluster target.
    InCluster,
    /// The gateway would refuse to connect.
    Refused,
    /// No address could be obtained, so the location cannot be evidenced.
    Unresolved,
}

/// One line of the report: one address of one target (or one target that
/// did not resolve). Flat so it maps directly to a table or a CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// Role of the target.
    pub kind: TargetKind,
    /// Name in the configuration.
    pub name: String,
    /// URL or host as configured.
    pub url: String,
    /// Declared jurisdiction, if any.
    pub jurisdiction: Option<Jurisdiction>,
    /// Whether the declaration matches the required jurisdiction.
    pub declaration_ok: bool,
    /// Whether the target is declared in-cluster.
    pub in_cluster: bool,
    /// The address, `None` when resolution failed.
    pub address: Option<IpAddr>,
    /// The address decision.
    pub result: RowResult,
    /// Refusal reason or resolution error, if any.
    pub detail: Option<String>,
    /// True only if both the declaration and the address are acceptable.
    pub ok: bool,
}

/// The whole report; serialize it (e.g. with `serde_json`) for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The jurisdiction every target must be in.
    pub required_jurisdiction: Jurisdiction,
    /// One row per address (or per unresolved target), in target order.
    pub rows: Vec<ReportRow>,
    /// Every problem as a full operator message, for the end of the report.
    pub problems: Vec<String>,
    /// True if there are no problems; the CLI should exit non-zero otherwise.
    pub ok: bool,
}

/// Builds the report from targets, their resolutions and the policy.
pub fn build_report(policy: &ResidencyPolicy, required: &Jurisdiction, inputs: &[TargetResolution]) -> Report {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        let t = &input.target;
        let declaration = check_declaration(required, t);
        let declaration_ok = declaration.is_ok();
        if let Err(e) = declaration {
            problems.push(e.to_string());
        }
        let row = |address: Option<IpAddr>, result: RowResult, detail: Option<String>| ReportRow {
            kind: t.kind,
            name: t.name.clone(),
            url: t.url_or_host.clone(),
            jurisdiction: t.jurisdiction,
            declaration_ok,
            in_cluster: t.in_cluster,
            address,
            result,
            ok: declaration_ok && matches!(result, RowResult::AllowList | RowResult::InCluster),
            detail,
        };
        let addresses: &[IpAddr] = match &input.addresses {
            Ok(list) => list,
            Err(_) => &[],
        };
        if addresses.is_empty() {
            let why = match &input.addresses {
                Err(e) => e.clone(),
                Ok(_) => "resolved to no addresses".to_owned(),
            };
            problems.push(format!(
                "{}: could not resolve ({why}); its location cannot be checked",
                t.label()
            ));
            rows.push(row(None, RowResult::Unresolved, Some(why)));
            continue;
        }
        for &addr in addresses {
            let (result, detail) = match policy.classify(addr, t.in_cluster) {
                AddressVerdict::AllowList => (RowResult::AllowList, None),
                AddressVerdict::InCluster => (RowResult::InCluster, None),
                AddressVerdict::Refused(reason) => {
                    if let Err(e) = policy.check_target_address(t, addr) {
                        problems.push(e.to_string());
                    }
                    (RowResult::Refused, Some(refusal_text(reason).to_owned()))
                }
            };
            rows.push(row(Some(addr), result, detail));
        }
    }
    Report {
        required_jurisdiction: *required,
        ok: problems.is_empty(),
        rows,
        problems,
    }
}

fn refusal_text(reason: Refusal) -> &'static str {
    match reason {
        Refusal::NotInAllowList => "not in allow-list",
        Refusal::PrivateNotInCluster => "private address, target not in_cluster",
        Refusal::Unroutable => "unspecified/multicast/broadcast",
    }
}

impl Report {
    /// Renders the report as a plain-text table followed by the problems,
    /// for a terminal or to attach to an audit record.
    pub fn render_text(&self) -> String {
        let header = ["KIND", "NAME", "URL", "JURISDICTION", "ADDRESS", "RESULT"];
        let cells: Vec<[String; 6]> = self.rows.iter().map(row_cells).collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Domestic-egress report (required jurisdiction: {})\n",
            self.required_jurisdiction
        );
        let header_cells = header.map(str::to_owned);
        for row in std::iter::once(&header_cells).chain(&cells) {
            let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if !self.problems.is_empty() {
            let _ = writeln!(out, "\nProblems ({}):", self.problems.len());
            for p in &self.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        let _ = writeln!(
            out,
            "\nResult: {} ({} row{}, {} problem{})",
            if self.ok { "OK" } else { "FAIL" },
            self.rows.len(),
            plural(self.rows.len()),
            self.problems.len(),
            plural(self.problems.len()),
        );
        out.push_str(
            "Note: the address check uses registry data, which records where an address\n\
             holder registered, not where a server stands. The declared jurisdiction and\n\
             the hosting contract (DATA-LOC-1) remain the primary evidence.\n",
        );
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn row_cells(r: &ReportRow) -> [String; 6] {
    let juris = match (r.jurisdiction, r.declaration_ok) {
        (Some(j), true) => j.to_string(),
        (Some(j), false) => format!("{j} (refused)"),
        (None, _) => "none (refused)".to_owned(),
    };
    let address = r.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let result = match (r.result, &r.detail) {
        (RowResult::AllowList, _) => "ok: in allow-list".to_owned(),
        (RowResult::InCluster, _) => "ok: in-cluster".to_owned(),
        (RowResult::Refused, Some(d)) => format!("REFUSED: {d}"),
        (RowResult::Refused, None) => "REFUSED".to_owned(),
        (RowResult::Unresolved, Some(d)) => format!("UNRESOLVED: {d}"),
        (RowResult::Unresolved, None) => "UNRESOLVED".to_owned(),
    };
    [
        r.kind.to_string(),
        r.name.clone(),
        r.url.clone(),
        juris,
        address,
        result,
    ]
}

#[cfg(test)]
mod tests {
    use super::super::allow_list::AllowList;
    use super::*;

    fn target(kind: TargetKind, name: &str, url: &str, j: Option<&str>, in_cluster: bool) -> Target {
        Target {
            kind,
            name: name.into(),
            url_or_host: url.into(),
            jurisdiction: j.map(|j| j.parse().unwrap()),
            in_cluster,
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sample() -> Report {
        let policy = ResidencyPolicy::new(AllowList::from_nets(["127.0.0.1/32".parse().unwrap()]));
        let inputs = vec![
            TargetResolution {
                target: target(TargetKind::Upstream, "fhir", "https://fhir.test", Some("JP"), false),
                addresses: Ok(vec![ip("127.0.0.1"), ip("127.0.0.2")]),
            },
            TargetResolution {
                target: target(TargetKind::Redis, "cache", "redis:6379", Some("JP"), true),
                addresses: Ok(vec![ip("10.0.0.5")]),
            },
            TargetResolution {
                target: target(TargetKind::Jwks, "idp", "https://idp.test/jwks", None, false),
                addresses: Err("no such host".into()),
            },
        ];
        build_report(&policy, &Jurisdiction::JP, &inputs)
    }

    #[test]
    fn rows_and_problems() {
        let r = sample();
        assert!(!r.ok);
        let summary: Vec<(String, Option<IpAddr>, RowResult, bool)> = r
            .rows
            .iter()
            .map(|row| (row.name.clone(), row.address, row.result, row.ok))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("fhir".into(), Some(ip("127.0.0.1")), RowResult::AllowList, true),
                ("fhir".into(), Some(ip("127.0.0.2")), RowResult::Refused, false),
                ("cache".into(), Some(ip("10.0.0.5")), RowResult::InCluster, true),
                ("idp".into(), None, RowResult::Unresolved, false),
            ]
        );
        assert_eq!(r.problems.len(), 3, "{:#?}", r.problems);
        assert!(r.problems[0].contains("address 127.0.0.2"), "{}", r.problems[0]);
        assert!(r.problems[1].contains("no jurisdiction declared"), "{}", r.problems[1]);
        assert!(r.problems[2].contains("no such host"), "{}", r.problems[2]);
    }

    #[test]
    fn all_good_is_ok() {
        let policy = ResidencyPolicy::new(AllowList::from_nets(["1.0.16.0/20".parse().unwrap()]));
        let inputs = [TargetResolution {
            target: target(TargetKind::Upstream, "fhir", "https://fhir.test", Some("JP"), false),
            addresses: Ok(vec![ip("1.0.16.1")]),
        }];
        let r = build_report(&policy, &Jurisdiction::JP, &inputs);
        assert!(r.ok && r.problems.is_empty());
        assert!(r.render_text().contains("Result: OK (1 row, 0 problems)"));
    }

    #[test]
    fn text_table_is_aligned() {
        let text = sample().render_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "KIND      NAME   URL                    JURISDICTION    ADDRESS    RESULT"
        );
        assert_eq!(
            lines[4],
            "upstream  fhir   https://fhir.test      JP              127.0.0.2  REFUSED: private address, target not in_cluster"
        );
        assert_eq!(
            lines[6],
            "jwks      idp    https://idp.test/jwks  none (refused)  -          UNRESOLVED: no such host"
        );
        assert!(text.contains("Problems (3):\n  - upstream \"fhir\""), "{text}");
        assert!(text.contains("Result: FAIL (4 rows, 3 problems)"), "{text}");
    }
}
