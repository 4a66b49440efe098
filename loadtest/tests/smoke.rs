//! CI smoke run (issue 22): the real gateway binary (`phr-gateway demo`, with its sample
//! backend and SQLite access records) under 10 s of the default mix from `phr-loadtest
//! --demo`: zero unexpected statuses (DPoP-bound and two-factor interactions and their
//! refusals included), the three reports written, the JSON parses, the HTML holds the
//! plots, the server-side scrape is there, and reports merge.
//!
//! Which gateway binary: `PHR_GATEWAY_BIN` if set, else `phr-gateway` in this test's own
//! target dir (`target/debug/`, next to `deps/`). Cargo cannot build another package's
//! binary for this test (only artifact dependencies could, and they need nightly; a
//! nested `cargo build` would wait for the lock the running `cargo test` holds), so:
//! `cargo test --workspace` (CI) builds it before any test runs; `cargo test -p
//! phr-loadtest` alone needs `cargo build -p phr-gateway` first. A binary older than any
//! source it is built from (gateway/, fhir-adapter/, Cargo.lock) fails the test rather
//! than testing old code. A missing binary skips it, except under
//! PHR_TEST_REQUIRE_SERVICES=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BUILD_IT: &str = "build it with `cargo build -p phr-gateway` (or run `cargo test --workspace`, which builds it), or point PHR_GATEWAY_BIN at one";

fn gateway_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PHR_GATEWAY_BIN") {
        return Some(PathBuf::from(bin));
    }
    // target/debug/deps/smoke-HASH → target/debug/phr-gateway
    let exe = std::env::current_exe().ok()?;
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("phr-gateway{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// The newest file (and its time) under the sources the gateway binary is built from.
fn newest_source() -> (SystemTime, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    let mut dirs = vec![root.join("gateway"), root.join("fhir-adapter")];
    let mut consider = |p: PathBuf| {
        if let Ok(t) = p.metadata().and_then(|m| m.modified()) {
            if t > newest.0 {
                newest = (t, p);
            }
        }
    };
    consider(root.join("Cargo.lock"));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            // Test-only sources do not go into the binary.
            let name = entry.file_name();
            if p.is_dir() && name != "tests" && name != "benches" {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs" || e == "toml") {
                consider(p);
            }
        }
    }
    newest
}

struct Demo(Child);
impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo on ephemeral ports (`--port 0`): `phr-loadtest --demo` finds it by the
/// address file the demo writes once it listens.
fn start_demo(bin: &Path, data: &Path) -> Demo {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let child = Command::new(bin)
        .args([
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            "0",
            "--admin-port",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start phr-gateway demo");
    let demo = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.join("demo-address.json").is_file() {
        assert!(
            Instant::now() < deadline,
            "the demo did not write demo-address.json within 60 s; see {}",
            data.with_extension("log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    demo
}

#[test]
fn ten_second_demo_run_has_no_unexpected_status_and_writes_reports() {
    let Some(bin) = gateway_binary() else {
        let msg = format!("phr-gateway binary not found in this test's target dir; {BUILD_IT}");
        assert!(
            std::env::var("PHR_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let built = bin
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let (changed, source) = newest_source();
    assert!(
        std::env::var_os("PHR_GATEWAY_BIN").is_some() || built >= changed,
        "{} is older than {}: it would test old gateway code; {BUILD_IT}",
        bin.display(),
        source.display()
    );
    let root = std::env::temp_dir().join(format!("phr-loadtest-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("demo");
    // Before the demo: the kit names what is missing.
    let early = Command::new(env!("CARGO_BIN_EXE_phr-loadtest"))
        .args(["--demo", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(early.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("is the demo running?"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    let demo = start_demo(&bin, &data);

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
        "dpop-read",
        "two-factor-read",
        "refused-other-patient",
        "refused-expired-token",
        "refused-dpop-replay",
        "refused-one-factor",
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

    // A killed demo leaves its address file behind: the kit says it is not answering.
    drop(demo);
    let stale = Command::new(env!("CARGO_BIN_EXE_phr-loadtest"))
        .args(["--demo", data.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(stale.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not answering") && err.contains("is the demo running?"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
