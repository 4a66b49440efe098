//! The report and the lint against a fully configured gateway, and each safeguard
//! switched off in turn; the table's consistency; the docs drift check; the JSON schema;
//! the Japanese and English forms.

use super::evaluate::{Origin, Report, RowState};
use super::lint::Finding;
use super::profile::Profile;
use super::render::Lang;
use super::state::{AuditStoreState, CertEvidence, ResidencyEvidence, State, TargetEvidence};
use super::*;
use crate::compliance::catalogue::Responsibility;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Knobs that switch one safeguard off each.
#[derive(Default, Clone, Copy)]
struct Off {
    tls12: bool,
    institutions_without_certs: bool,
    route_on_public: bool,
    hsts: bool,
    two_factor: bool,
    fhir: bool,
    audit: bool,
    relaxed: bool,
    rate_limits: bool,
    optional_token: bool,
    hs256_issuer: bool,
    wide_network: bool,
    long_tail: bool,
    admin_public: bool,
    no_upload_filter: bool,
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for f in ["cert.pem", "key.pem", "ca.pem", "jwks.json"] {
            std::fs::write(dir.path().join(f), "").unwrap();
            set_mode(&dir.path().join(f), 0o600);
        }
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fully configured gateway: a public listener for patients' non-PHI route, an
    /// institutions listener with mutual TLS carrying the PHI FHIR route with two factors,
    /// rate limits, upload filter, durable signed access records, domestic targets.
    fn config_text(&self, off: Off) -> String {
        let inst_auth = match off.institutions_without_certs {
            true => "client_auth = \"none\"".to_string(),
            false => format!(
                "client_auth = \"required\"\nclient_ca_file = \"{}\"",
                self.path("ca.pem").display()
            ),
        };
        let listeners = match off.route_on_public {
            true => "[\"institutions\", \"public\"]",
            false => "[\"institutions\"]",
        };
        let hs256 = match off.hs256_issuer {
            true => "\n[[auth.issuers]]\nissuer = \"https://legacy.example.jp\"\nshared_secret = \"0123456789abcdef0123456789abcdef\"\nalgorithms = [\"HS256\"]\naudiences = [\"x\"]\njurisdiction = \"JP\"\n",
            false => "",
        };
        let upload = match off.no_upload_filter {
            true => "",
            false => "[upload_filter.routes.fhir]\nallowed_media_types = [\"application/fhir+json\"]\n",
        };
        format!(
            r#"[gateway]
instance_id = "gw-test"
{hsts}

[admin]
bind = "{admin}"

[[listeners]]
name = "public"
bind = "127.0.0.1:8443"

[[listeners.certificates]]
cert_file = "{cert}"
key_file = "{key}"

[[listeners]]
name = "institutions"
bind = "127.0.0.1:9443"
{tls12}
{inst_auth}

[[listeners.certificates]]
cert_file = "{cert}"
key_file = "{key}"

[upstreams.fhir]
endpoints = ["https://fhir.internal.example.jp:8443"]
ca_file = "{ca}"
jurisdiction = "JP"

[upstreams.public]
endpoints = ["https://www.internal.example.jp:8443"]
ca_file = "{ca}"
jurisdiction = "JP"

[[routes]]
name = "fhir"
path_prefix = "/fhir/"
upstream = "fhir"
fhir = {fhir}
listeners = {listeners}
rate_limits = {rate_limits}

[routes.auth]
mode = "{mode}"
two_factor = {two_factor}
max_auth_age = "12h"
{scopes}

[[routes]]
name = "public"
path_prefix = "/"
upstream = "public"
phi = false
listeners = ["public"]

[routes.auth]
mode = "none"

[[auth.issuers]]
issuer = "https://idp.example.jp/realms/phr"
jwks_file = "{jwks}"
audiences = ["https://gateway.example.jp/fhir"]
jurisdiction = "JP"
max_token_age = "1h"
{hs256}
[rate_limits.policies.per_ip]
key = "source_ip"
rate = 50
per = "1s"
burst = 100

[bulk_access]
window = "10m"
max_distinct_patients = 200
action = "block"

{upload}
[store]
url = "sqlite://{db}?mode=rwc"

[audit]
enabled = {audit}
mode = "{audit_mode}"
kek_file = "{dir}/kek.key"
signing_key_file = "{dir}/signing.pem"
spool_file = "{dir}/spool.bin"
checkpoint_every = {checkpoint_every}

[residency]
allowed_networks = [{networks}]
"#,
            hsts = if off.hsts { "hsts_max_age = \"0s\"" } else { "" },
            admin = if off.admin_public {
                "0.0.0.0:9901"
            } else {
                "127.0.0.1:9901"
            },
            cert = self.path("cert.pem").display(),
            key = self.path("key.pem").display(),
            ca = self.path("ca.pem").display(),
            jwks = self.path("jwks.json").display(),
            db = self.path("gateway.db").display(),
            dir = self.dir.path().display(),
            tls12 = if off.tls12 { "tls_min_version = \"1.2\"" } else { "" },
            fhir = !off.fhir,
            rate_limits = if off.rate_limits { "[]" } else { "[\"per_ip\"]" },
            mode = if off.optional_token { "optional" } else { "required" },
            two_factor = !off.two_factor,
            scopes = "",
            audit = !off.audit,
            audit_mode = if off.relaxed { "relaxed" } else { "durable" },
            checkpoint_every = if off.long_tail { 10_000 } else { 100 },
            networks = if off.wide_network { "\"0.0.0.0/4\"" } else { "" },
        )
    }

    fn config(&self, off: Off) -> crate::config::Config {
        let path = self.path("gateway.toml");
        let text = self.config_text(off);
        std::fs::write(&path, &text).unwrap();
        match crate::config::load(&path) {
            Ok(c) => c,
            Err(e) => panic!("fixture config does not load: {e}\n{text}"),
        }
    }

    /// The state a healthy deployment of it reads: valid certificates, domestic targets,
    /// no records yet.
    fn state(&self) -> State {
        let cert = |listener: &str, i: usize| CertEvidence {
            key: format!("listeners[{i}].certificates[0]"),
            listener: listener.to_string(),
            file: self.path("cert.pem"),
            subject: Some("CN=gateway.example.jp".to_string()),
            not_after: Some("Dec  1 00:00:00 2027 +00:00".to_string()),
            days_left: Some(360),
            problem: None,
        };
        State {
            certificates: vec![cert("public", 0), cert("institutions", 1)],
            residency: Some(Ok(ResidencyEvidence {
                required: "JP".to_string(),
                rows: vec![TargetEvidence {
                    kind: "upstream".to_string(),
                    name: "fhir".to_string(),
                    jurisdiction: Some("JP".to_string()),
                    address: Some("203.0.113.10".to_string()),
                    result: "allow_list".to_string(),
                    ok: true,
                }],
                problems: Vec::new(),
                ok: true,
            })),
            audit_store: AuditStoreState::NotCreated {
                file: self.path("gateway.db").display().to_string(),
            },
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

fn institutions_profile() -> Profile {
    let mut p = Profile::default();
    p.network.institutions_use_client_certificates = true;
    p
}

fn report(config: &crate::config::Config, state: &State) -> Report {
    let profile = institutions_profile();
    evaluate_with(config, state, Some(&profile), &Origin::default()).unwrap()
}

fn states(r: &Report) -> Vec<(String, RowState)> {
    r.rows.iter().map(|row| (row.id.clone(), row.state)).collect()
}

/// IDs whose state differs between two reports of the same rows.
fn flipped(a: &Report, b: &Report) -> BTreeSet<String> {
    assert_eq!(
        a.rows.iter().map(|r| &r.id).collect::<Vec<_>>(),
        b.rows.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    a.rows
        .iter()
        .zip(&b.rows)
        .filter(|(x, y)| x.state != y.state)
        .map(|(x, _)| x.id.clone())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_table_is_consistent_and_names_known_requirements() {
    let cat = catalogue::parse(catalogue::SOURCE).unwrap();
    assert!(
        cat.controls.len() >= 27,
        "every row of the former docs/compliance.md is in the table"
    );
    // Every requirement ID (not the disclosure item names) is one of the catalogue's.
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/guidelines/requirements.md");
    match std::fs::read_to_string(&requirements) {
        Ok(text) => {
            for c in &cat.controls {
                for id in c.ids.iter().filter(|id| id.is_ascii()) {
                    assert!(
                        text.contains(&format!("| {id} |")),
                        "{id} is not in {}",
                        requirements.display()
                    );
                }
            }
        }
        Err(_) => eprintln!("SKIPPED the ID check: {} not found", requirements.display()),
    }
    // Every check names an evaluator: none falls through to "unknown".
    let f = Fixture::new();
    let r = report(&f.config(Off::default()), &f.state());
    for row in &r.rows {
        assert!(
            !row.evidence.iter().any(|e| e.contains("a defect of controls.toml")),
            "{}: {:?}",
            row.id,
            row.evidence
        );
    }
}

#[test]
fn docs_compliance_md_is_generated_from_the_table() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/compliance.md");
    let committed = std::fs::read_to_string(&committed).unwrap();
    let generated = docs_text().unwrap();
    assert!(
        committed == generated,
        "docs/compliance.md differs from gateway/src/compliance/controls.toml. Regenerate it with\n    {}\n",
        docs::REGENERATE
    );
}

#[test]
fn a_fully_configured_gateway_meets_every_gateway_row() {
    let f = Fixture::new();
    let r = report(&f.config(Off::default()), &f.state());
    let not_met: Vec<_> = r
        .rows
        .iter()
        .filter(|row| row.responsibility == Responsibility::Gateway && row.state != RowState::Met)
        .map(|row| (row.id.clone(), row.state, row.evidence.clone()))
        .collect();
    assert!(not_met.is_empty(), "{not_met:#?}");
    assert!(r.strict_failures.is_empty());
    // One row per requirement ID, each ID once.
    let ids: BTreeSet<_> = r.rows.iter().map(|row| row.id.clone()).collect();
    assert_eq!(ids.len(), r.rows.len());
    for id in [
        "EX-TLS-1",
        "AUTH-2FA-2",
        "DATA-JP-3",
        "ONL-3",
        "LOG-PROT-1",
        "GOV-CERT-2",
    ] {
        assert!(ids.contains(id), "{id}");
    }
}

#[test]
fn switching_each_safeguard_off_flips_exactly_its_rows_and_fails_strict() {
    let f = Fixture::new();
    let base = report(&f.config(Off::default()), &f.state());
    let cases: Vec<(&str, Off, &[&str])> = vec![
        (
            "TLS 1.2 without reason",
            Off {
                tls12: true,
                ..Off::default()
            },
            &["EX-TLS-1"],
        ),
        (
            "institutions without client certificates",
            Off {
                institutions_without_certs: true,
                ..Off::default()
            },
            &["EX-TLS-2", "EX-MTLS-1"],
        ),
        (
            "HSTS off",
            Off {
                hsts: true,
                ..Off::default()
            },
            &["EX-TLS-3"],
        ),
        (
            "two factors off",
            Off {
                two_factor: true,
                ..Off::default()
            },
            &["AUTH-2FA-1", "AUTH-2FA-2", "AUTH-2FA-3"],
        ),
        (
            "optional token",
            Off {
                optional_token: true,
                ..Off::default()
            },
            &["AUTH-ID-1"],
        ),
        (
            "not a FHIR route",
            Off {
                fhir: true,
                ..Off::default()
            },
            &["ACL-ROLE-1", "ACL-PHR-1"],
        ),
        (
            "access records off",
            Off {
                audit: true,
                ..Off::default()
            },
            &[
                "LOG-ACC-1",
                "LOG-PROT-1",
                "LOG-RET-1",
                "DATA-ENC-1",
                "DATA-ENC-2",
                "情報の破棄",
                "DATA-INT-1",
            ],
        ),
        (
            "relaxed records",
            Off {
                relaxed: true,
                ..Off::default()
            },
            &["DATA-INT-1"],
        ),
        (
            "no rate limits",
            Off {
                rate_limits: true,
                ..Off::default()
            },
            &["AV-DOS-1"],
        ),
    ];
    for (what, off, expected) in cases {
        let r = report(&f.config(off), &f.state());
        assert_eq!(flipped(&base, &r), set(expected), "{what}");
        assert!(
            !r.strict_failures.is_empty(),
            "{what}: --strict must fail ({:?})",
            states(&r)
        );
        for id in expected {
            let row = r.rows.iter().find(|row| row.id == *id).unwrap();
            assert!(matches!(row.state, RowState::NotMet), "{what}: {id} is {:?}", row.state);
        }
    }
}

#[test]
fn state_problems_flip_their_rows() {
    let f = Fixture::new();
    let config = f.config(Off::default());
    let base = report(&config, &f.state());

    let mut expired = f.state();
    expired.certificates[1].problem = Some("certificate \"CN=x\" expired on Jan 1 2026".to_string());
    let r = report(&config, &expired);
    assert_eq!(flipped(&base, &r), set(&["EX-TLS-4"]));
    assert_eq!(r.strict_failures, vec!["EX-TLS-4".to_string()]);

    let mut abroad = f.state();
    if let Some(Ok(res)) = &mut abroad.residency {
        res.ok = false;
        res.rows[0].result = "refused".to_string();
        res.problems
            .push("upstream fhir resolves to 198.51.100.1, outside JP".to_string());
    }
    let r = report(&config, &abroad);
    assert_eq!(
        flipped(&base, &r),
        set(&["DATA-JP-1", "DATA-JP-2", "DATA-JP-3", "ONL-3"])
    );
    assert!(!r.strict_failures.is_empty());

    // The store cannot be read: the rows that need it say so instead of claiming "met".
    let mut unreachable = f.state();
    unreachable.audit_store = AuditStoreState::Unreachable {
        reason: "connection refused".to_string(),
    };
    let r = report(&config, &unreachable);
    assert_eq!(
        flipped(&base, &r),
        set(&["LOG-PROT-1", "DATA-ENC-1", "DATA-ENC-2", "情報の破棄"])
    );
    let row = r.rows.iter().find(|row| row.id == "LOG-PROT-1").unwrap();
    assert_eq!(row.state, RowState::Unknown);
    assert!(row
        .evidence
        .iter()
        .any(|e| e.contains("store unreachable: connection refused")));
    assert!(r.strict_failures.contains(&"LOG-PROT-1".to_string()));
}

#[test]
fn organisational_rows_come_from_the_profile() {
    let f = Fixture::new();
    let config = f.config(Off::default());
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/compliance-profile.toml");
    let profile = profile::load(&template).unwrap();
    let r = evaluate_with(&config, &f.state(), Some(&profile), &Origin::default()).unwrap();
    let row = |id: &str| r.rows.iter().find(|row| row.id == id).unwrap().clone();
    assert_eq!(row("GOV-CERT-1").state, RowState::Organisational);
    assert!(row("GOV-CERT-1")
        .evidence
        .iter()
        .any(|e| e.starts_with("ISMS: IS 000000")));
    assert!(row("GOV-CERT-1")
        .evidence
        .iter()
        .any(|e| e == "ISMAP: not stated in the operator profile"));
    assert!(row("AV-BK-2").evidence.iter().any(|e| e == "backup generations: 14"));
    assert!(row("物理的安全対策")
        .evidence
        .iter()
        .any(|e| e.contains("国内データセンター")));
    assert!(row("GOV-SPLIT-1")
        .evidence
        .iter()
        .any(|e| e.starts_with("security officer: ")));
    // The rows' order follows the disclosure: organisational first.
    assert_eq!(r.rows[0].group, "organisational");

    let none = evaluate_with(&config, &f.state(), None, &Origin::default()).unwrap();
    let row = none.rows.iter().find(|row| row.id == "GOV-CERT-1").unwrap();
    assert!(row.evidence[0].contains("no operator profile given"));
}

#[test]
fn a_profile_is_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[certifications]\nisms_number = \"x\"\n").unwrap();
    let e = profile::load(&file).unwrap_err().to_string();
    assert!(
        e.contains("isms_number") && e.contains("compliance-profile.toml"),
        "{e}"
    );
}

/// The (id, state) pairs of the rows of an HTML page, in order.
fn html_rows(html: &str) -> Vec<(String, String)> {
    html.split("<tr class=\"")
        .skip(1)
        .map(|tr| {
            let attr = |name: &str| {
                let start = tr.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                tr[start..].split('"').next().unwrap().to_string()
            };
            (attr("data-id"), attr("data-state"))
        })
        .collect()
}

/// The IDs of the table rows of a Markdown report, in order.
fn md_ids(md: &str) -> Vec<String> {
    md.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| 要求事項 ID") && !l.starts_with("| Requirement ID"))
        .map(|l| l[2..].split(" | ").next().unwrap().to_string())
        .collect()
}

#[test]
fn japanese_and_english_forms_carry_the_same_rows() {
    let f = Fixture::new();
    let r = report(
        &f.config(Off {
            tls12: true,
            ..Off::default()
        }),
        &f.state(),
    );
    let expected: Vec<(String, String)> = r
        .rows
        .iter()
        .map(|row| (row.id.clone(), row.state.key().to_string()))
        .collect();
    let ja = render(&r, Format::Html, Lang::Ja);
    let en = render(&r, Format::Html, Lang::En);
    assert_eq!(html_rows(&ja), expected);
    assert_eq!(html_rows(&en), expected);
    assert!(ja.contains("<html lang=\"ja\">") && ja.contains("未適合") && ja.contains("適合状況"));
    assert!(en.contains("<html lang=\"en\">") && en.contains("not met"));
    let ids: Vec<String> = r.rows.iter().map(|row| row.id.clone()).collect();
    assert_eq!(md_ids(&render(&r, Format::Md, Lang::Ja)), ids);
    assert_eq!(md_ids(&render(&r, Format::Md, Lang::En)), ids);
}

#[test]
fn html_is_self_contained_printable_and_escaped() {
    let f = Fixture::new();
    let mut state = f.state();
    state.certificates[0].subject = Some("CN=<script>alert(1)</script>".to_string());
    let r = report(&f.config(Off::default()), &state);
    let html = render(&r, Format::Html, Lang::En);
    assert!(html.contains("@media print"));
    assert!(
        !html.contains("<script"),
        "content is escaped and the page has no script"
    );
    assert!(html.contains("CN=&lt;script&gt;"));
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "no external asset ({external})");
    }
}

/// The minimal structural check of the JSON against the schema file, always run: the
/// required and allowed keys of the report and of a row, and the enums. The full
/// draft 2020-12 validation runs through Python's `jsonschema` when it is installed.
fn check_against_schema(report: &serde_json::Value, schema: &serde_json::Value) {
    let object_check = |value: &serde_json::Value, schema: &serde_json::Value, what: &str| {
        let obj = value.as_object().unwrap_or_else(|| panic!("{what} is not an object"));
        for key in schema["required"].as_array().unwrap() {
            assert!(obj.contains_key(key.as_str().unwrap()), "{what} lacks {key}");
        }
        let allowed = schema["properties"].as_object().unwrap();
        for key in obj.keys() {
            assert!(
                allowed.contains_key(key),
                "{what} has {key}, which the schema does not allow"
            );
        }
    };
    object_check(report, schema, "the report");
    assert_eq!(
        report["schema_version"],
        schema["properties"]["schema_version"]["const"]
    );
    let row_schema = &schema["$defs"]["row"];
    for row in report["rows"].as_array().unwrap() {
        object_check(row, row_schema, "a row");
        for field in ["state", "responsibility"] {
            let allowed = row_schema["properties"][field]["enum"].as_array().unwrap();
            assert!(
                allowed.contains(&row[field]),
                "{field} {} is not in the schema's enum",
                row[field]
            );
        }
        assert!(row["evidence"].as_array().unwrap().iter().all(|e| e.is_string()));
    }
}

#[test]
fn json_validates_against_its_documented_schema() {
    let f = Fixture::new();
    let r = report(
        &f.config(Off {
            relaxed: true,
            ..Off::default()
        }),
        &f.state(),
    );
    let json = render(&r, Format::Json, Lang::En);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let schema_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/compliance-report.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&schema_file).unwrap()).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    check_against_schema(&value, &schema);
    assert_eq!(value["schema_version"], evaluate::SCHEMA_VERSION);

    // Full validation with Python's jsonschema (Draft202012Validator) when present.
    let script = "import json,sys,jsonschema\nschema=json.load(open(sys.argv[1]))\njsonschema.Draft202012Validator.check_schema(schema)\njsonschema.Draft202012Validator(schema).validate(json.load(sys.stdin))\nprint('valid')";
    let has_python = std::process::Command::new("python3")
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        assert!(
            std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "python3 with jsonschema is required (PHR_TEST_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED full JSON Schema validation: python3 -c 'import jsonschema' failed");
        return;
    }
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &schema_file.display().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the report does not validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And an invalid document is refused, so the check can fail.
    let mut bad = value.clone();
    bad["rows"][0]["state"] = serde_json::json!("fine");
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &schema_file.display().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.to_string().as_bytes())
        .unwrap();
    assert!(!child.wait().unwrap().success());
}

fn findings(f: &Fixture, off: Off) -> Vec<(&'static str, String)> {
    let profile = institutions_profile();
    lint::lint(&f.config(off), Some(&profile))
        .into_iter()
        .map(|Finding { requirement, key, .. }| (requirement, key))
        .collect()
}

#[test]
fn the_lint_finds_exactly_each_safeguard_switched_off() {
    let f = Fixture::new();
    assert_eq!(
        findings(&f, Off::default()),
        vec![],
        "the fully configured gateway is clean"
    );
    let cases: Vec<(Off, (&str, &str))> = vec![
        (
            Off {
                tls12: true,
                ..Off::default()
            },
            ("EX-TLS-1", "listeners[1].tls_min_version"),
        ),
        (
            Off {
                two_factor: true,
                ..Off::default()
            },
            ("AUTH-2FA-1", "routes[0].auth.two_factor"),
        ),
        (
            Off {
                route_on_public: true,
                ..Off::default()
            },
            ("EX-TLS-2", "routes[0].listeners"),
        ),
        (
            Off {
                relaxed: true,
                ..Off::default()
            },
            ("DATA-INT-1", "audit.mode"),
        ),
        (
            Off {
                audit: true,
                ..Off::default()
            },
            ("LOG-ACC-1", "audit.enabled"),
        ),
        (
            Off {
                wide_network: true,
                ..Off::default()
            },
            ("DATA-JP-1", "residency.allowed_networks[0]"),
        ),
        (
            Off {
                hs256_issuer: true,
                ..Off::default()
            },
            ("AUTH-ID-1", "auth.issuers[1].algorithms"),
        ),
        (
            Off {
                long_tail: true,
                ..Off::default()
            },
            ("LOG-PROT-1", "audit.checkpoint_every"),
        ),
        (
            Off {
                hsts: true,
                ..Off::default()
            },
            ("EX-TLS-3", "gateway.hsts_max_age"),
        ),
        (
            Off {
                admin_public: true,
                ..Off::default()
            },
            ("EX-SEG-2", "admin.bind"),
        ),
        (
            Off {
                rate_limits: true,
                ..Off::default()
            },
            ("AV-DOS-1", "routes[0].rate_limits"),
        ),
        (
            Off {
                optional_token: true,
                ..Off::default()
            },
            ("AUTH-ID-1", "routes[0].auth.mode"),
        ),
    ];
    for (off, (requirement, key)) in cases {
        assert_eq!(
            findings(&f, off),
            vec![(requirement, key.to_string())],
            "{requirement} {key}"
        );
    }
    // A key file others can read.
    set_mode(&f.path("key.pem"), 0o644);
    let found = findings(&f, Off::default());
    set_mode(&f.path("key.pem"), 0o600);
    #[cfg(unix)]
    assert_eq!(
        found,
        vec![
            ("DATA-ENC-2", "listeners[0].certificates[0].key_file".to_string()),
            ("DATA-ENC-2", "listeners[1].certificates[0].key_file".to_string()),
        ]
    );
    let _ = found;
}

#[test]
fn every_finding_names_its_fix() {
    let f = Fixture::new();
    let profile = institutions_profile();
    let all = Off {
        tls12: true,
        two_factor: true,
        route_on_public: true,
        relaxed: true,
        wide_network: true,
        hs256_issuer: true,
        long_tail: true,
        hsts: true,
        admin_public: true,
        rate_limits: true,
        ..Off::default()
    };
    let found = lint::lint(&f.config(all), Some(&profile));
    assert_eq!(found.len(), 10);
    for finding in found {
        let text = finding.to_string();
        assert!(
            text.starts_with(finding.requirement) && text.contains(" Fix: "),
            "{text}"
        );
    }
}
