//! End-to-end: the compliance report (サービス仕様適合開示書) and `check-config
//! --security` through the real binary (issue 20 items 1-2): the report reads a real
//! store written by a real gateway, its HTML renders in headless Chromium with every row
//! in the DOM, `--strict` gates on mandatory controls, the reference configuration is
//! lint-clean, and the demo prints the path of its own report.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN).args(args).envs(env.iter().copied()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A gateway that served one request and stopped: its store holds a chain, a data key
/// and the shutdown checkpoint.
async fn config_with_records(pki: &Pki) -> PathBuf {
    let backend = start_backend().await;
    let mut gw = Gateway::start(pki, &base_config(pki, "", &plain_route("b", "/", &[backend], "")));
    let mut c = Conn::open(gw.addr, client(pki)).await.unwrap();
    assert_eq!(c.get("/").await.unwrap().0, 200);
    drop(c);
    gw.signal("TERM");
    let exit = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait().unwrap();
        (status, gw)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{}", exit.1.log_text());
    exit.1.config.clone()
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        out.status.success().then(|| PathBuf::from(text(&out.stdout).trim()))
    })
}

/// The DOM after Chromium loaded the page (headless, no network needed: the page is
/// self-contained).
fn dump_dom(browser: &Path, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test]
async fn the_report_reads_the_real_store_and_its_html_rows_are_in_chromiums_dom() {
    let pki = Pki::new();
    let config = config_with_records(&pki).await;
    let cfg = config.to_str().unwrap();

    let out = run(&["compliance-report", "--config", cfg, "--format", "json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |id: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no row {id}"))
            .clone()
    };
    let evidence = |id: &str| -> Vec<String> {
        row(id)["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    };
    // State, not just configuration: the verify result, the data key, the certificate.
    let prot = evidence("LOG-PROT-1");
    assert!(
        prot.iter().any(|e| e.starts_with("last verify (now): RESULT: intact")),
        "{prot:?}"
    );
    assert_eq!(row("LOG-PROT-1")["state"], "met");
    let enc = evidence("DATA-ENC-1");
    assert!(enc.contains(&"data keys: 1".to_string()), "{enc:?}");
    assert!(
        enc.iter()
            .any(|e| e.starts_with("data key ") && e.contains("wrapped by KEK")),
        "{enc:?}"
    );
    let certs = evidence("EX-TLS-4");
    assert!(
        certs
            .iter()
            .any(|e| e.contains("server.pem") && e.contains("days left")),
        "{certs:?}"
    );
    assert_eq!(row("EX-TLS-4")["state"], "met");
    assert!(evidence("DATA-JP-1")
        .iter()
        .any(|e| e.starts_with("upstream b: declared JP")));
    assert_eq!(row("EX-TLS-1")["state"], "met");

    let page = pki.path("report.html");
    let out = run(
        &[
            "compliance-report",
            "--config",
            cfg,
            "--format",
            "html",
            "--lang",
            "en",
            "--out",
            page.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "chromium is required (PHR_TEST_REQUIRE_SERVICES=1): apt-get install chromium"
        );
        eprintln!("SKIPPED the headless-browser check: chromium is not installed");
        return;
    };
    let dom = dump_dom(&browser, &page);
    let rows = report["rows"].as_array().unwrap();
    for r in rows {
        let id = r["id"].as_str().unwrap();
        let state = r["state"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-id=\"{id}\" data-state=\"{state}\"")),
            "row {id} ({state}) is not in the DOM"
        );
    }
    assert_eq!(dom.matches("<tr class=").count(), rows.len());
    assert!(dom.contains("Service specification conformance disclosure"));
}

#[tokio::test]
async fn strict_fails_only_when_a_mandatory_control_is_off() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let route = plain_route("b", "/", &[backend], "");
    let file = pki.path("gateway.toml");
    let cfg = file.to_str().unwrap();

    std::fs::write(&file, base_config(&pki, "", &route)).unwrap();
    let out = run(&["compliance-report", "--config", cfg, "--strict"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| EX-TLS-1 |"));

    std::fs::write(&file, base_config(&pki, "tls_min_version = \"1.2\"", &route)).unwrap();
    let out = run(&["compliance-report", "--config", cfg, "--strict", "--lang", "en"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("mandatory controls not met: EX-TLS-1"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("WITHOUT a stated reason"));
    // Without --strict the same report exits 0.
    assert!(run(&["compliance-report", "--config", cfg], &[]).status.success());

    std::fs::write(&file, "[gateway]\nno_such_key = 1\n").unwrap();
    let out = run(&["compliance-report", "--config", cfg, "--strict"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// config/gateway.toml next to test certificates at the paths it names.
fn reference_config(pki: &Pki) -> PathBuf {
    let dir = pki.path("reference");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    std::fs::copy(reference, dir.join("gateway.toml")).unwrap();
    std::fs::copy(pki.path("server.pem"), dir.join("certs/gateway.example.jp.pem")).unwrap();
    std::fs::copy(pki.path("server-key.pem"), dir.join("certs/gateway.example.jp-key.pem")).unwrap();
    std::fs::copy(pki.path("ca.pem"), dir.join("certs/internal-ca.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("certs/gateway.example.jp-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir.join("gateway.toml")
}

#[test]
fn the_reference_config_is_security_clean_and_findings_exit_1() {
    let pki = Pki::new();
    let file = reference_config(&pki);
    let cfg = file.to_str().unwrap();
    let env = [("PHR_REDIS_PASSWORD", "test")];
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/compliance-profile.toml");

    let out = run(&["check-config", "--security", "--config", cfg], &env);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("no security findings"));
    let out = run(
        &[
            "check-config",
            "--security",
            "--config",
            cfg,
            "--profile",
            profile.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));

    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, original.replace("mode = \"durable\"", "mode = \"relaxed\"")).unwrap();
    let out = run(&["check-config", "--security", "--config", cfg], &env);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("DATA-INT-1 audit.mode: relaxed mode") && stdout.contains("Fix: set mode = \"durable\""),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    // Unusable: the environment variable the file needs is missing.
    let out = run(&["check-config", "--security", "--config", cfg], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("PHR_REDIS_PASSWORD"));
}

#[tokio::test]
async fn the_demo_prints_the_path_of_its_compliance_report() {
    let demo = Demo::start();
    let (gw, data) = (&demo.gw, &demo.data);
    let page = data.canonicalize().unwrap().join("compliance-report.html");
    gw.wait_log(&format!(
        "Compliance report (サービス仕様適合開示書) for this configuration: {}",
        page.display()
    ))
    .await;
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<html lang=\"ja\">") && html.contains("data-id=\"EX-TLS-1\" data-state=\"met\""));
    // The demo's single-factor development tokens are visible as such.
    assert!(html.contains("data-id=\"AUTH-2FA-1\" data-state=\"not_met\""));
}
