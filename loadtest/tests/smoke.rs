//! CI smoke run (issue 22): the real gateway binary (`phr-gateway demo`, with its sample
//! backend and SQLite access records) under 10 s of the default mix from `phr-loadtest
//! --demo`: zero unexpected statuses, the three reports written, the JSON parses, the
//! HTML holds the plots, the server-side scrape is there, and reports merge.
//!
//! The gateway binary is another package's: it is looked up in this test's target dir
//! (`cargo test --workspace` builds it, for the gateway's own e2e tests). Without it the
//! test says so and passes, unless PHR_TEST_REQUIRE_SERVICES=1 (CI), where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn gateway_binary() -> Option<PathBuf> {
    // target/debug/deps/smoke-HASH → target/debug/phr-gateway
    let exe = std::env::current_exe().ok()?;
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("phr-gateway{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Demo(Child);
impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_demo(bin: &Path, data: &Path, port: u16, admin: u16) -> Demo {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let child = Command::new(bin)
        .args([
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start phr-gateway demo");
    let demo = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !data.join("tokens.env").is_file() {
        assert!(
            Instant::now() < deadline,
            "the demo did not listen on {port} within 60 s; see {}",
            data.with_extension("log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    demo
}

#[test]
fn ten_second_demo_run_has_no_unexpected_status_and_writes_reports() {
    let Some(bin) = gateway_binary() else {
        let msg = "phr-gateway binary not found next to this test's target dir; build it (cargo build -p phr-gateway) or run cargo test --workspace";
        assert!(
            std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let root = std::env::temp_dir().join(format!("phr-loadtest-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("demo");
    let (port, admin) = (free_port(), free_port());
    let _demo = start_demo(&bin, &data, port, admin);

    let out = root.join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_phr-loadtest"))
        .args([
            "--demo",
            data.to_str().unwrap(),
            "--duration",
            "10s",
            "--rate",
            "40",
            "--patients",
            "300",
        ])
        .args(["--threads", "1", "--fail-on-unexpected", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "phr-loadtest failed ({:?}):\n{stdout}\n{stderr}",
        run.status
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).expect("report.json parses");
    let totals = &report["totals"];
    assert_eq!(
        totals["unexpected"], 0,
        "unexpected statuses: {}\n{stdout}",
        totals["unexpected_statuses"]
    );
    let ok = totals["ok"].as_u64().unwrap();
    // 40 req/s for 10 s; far fewer means the pacer or the users did not run.
    assert!(ok >= 200, "only {ok} expected responses\n{stdout}");
    let per = report["per_interaction"].as_object().unwrap();
    for name in [
        "patient-read",
        "observation-write",
        "transaction-bundle",
        "document-upload",
        "refused-other-patient",
        "refused-expired-token",
    ] {
        assert!(
            per.get(name).is_some_and(|t| t["ok"].as_u64().unwrap() > 0),
            "no expected response for {name}: {per:?}"
        );
    }
    for q in ["p50", "p90", "p99", "p99.9"] {
        assert!(totals["latency_ms"][q].as_f64().unwrap() > 0.0, "{q} missing");
    }
    // Server side: the gateway's own counters moved by about what the client sent.
    let server = &report["server"][0];
    assert!(server["error"].is_null(), "metrics scrape failed: {}", server["error"]);
    let served: f64 = server["deltas"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("phr_requests_total{"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert!(
        served >= ok as f64,
        "gateway counted {served} requests, client {ok} expected responses"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for title in [
        "Throughput",
        "Latency percentiles over time",
        "Errors and 429s",
        "Latency per interaction",
    ] {
        assert!(
            html.contains(&format!("<title>{title}</title>")),
            "plot '{title}' missing from report.html"
        );
    }
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(!html.contains("<script"), "report.html must be self-contained");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| refused-expired-token |"), "{md}");

    // Two load generators' reports merge: counts add up.
    let merged_dir = root.join("merged");
    let json = out.join("report.json");
    let merge = Command::new(env!("CARGO_BIN_EXE_phr-loadtest"))
        .args([
            "merge",
            "--out",
            merged_dir.to_str().unwrap(),
            json.to_str().unwrap(),
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(merge.status.success(), "{}", String::from_utf8_lossy(&merge.stderr));
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(merged["totals"]["ok"].as_u64().unwrap(), 2 * ok);
    assert_eq!(merged["nodes"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&root);
}
