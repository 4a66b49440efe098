//! End-to-end: starting, configuration errors, readiness, metrics, graceful drain, demo.

use crate::common::*;
use phr_test_support::cli;
use std::time::Duration;

#[test]
fn bad_config_exits_non_zero_with_a_precise_message() {
    let pki = Pki::new();
    let path = pki.path("gateway.toml");
    // A misspelt key is an error, not a silently ignored safeguard.
    let text = base_config(
        &pki,
        "client_auht = \"required\"",
        &plain_route("b", "/", &[closed_port()], ""),
    );
    std::fs::write(&path, text).unwrap();
    for cmd in ["check-config", "run"] {
        let out = cli::run(BIN, &[cmd, "--config", path.to_str().unwrap()]);
        let err = out.stderr;
        assert!(!out.success, "{cmd} accepted a bad config");
        assert!(
            err.contains("gateway.toml") && err.contains("client_auht"),
            "{cmd}: {err}"
        );
    }
    // Semantic errors name the key and the fix.
    let text = base_config(&pki, "client_auth = \"required\"", "[upstreams.x]\nendpoints = [\"http://10.1.2.3:80\"]\nallow_plaintext = true\njurisdiction = \"JP\"\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"nope\"\n");
    std::fs::write(&path, text).unwrap();
    let out = cli::check_config(BIN, &path);
    let err = out.stderr;
    assert!(!out.success);
    assert!(
        err.contains("listeners[0].client_auth") && err.contains("client_ca_file"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.x.endpoints[0]") && err.contains("non-loopback"),
        "{err}"
    );
    assert!(err.contains("routes[0].upstream") && err.contains("\"nope\""), "{err}");
    // Missing secret in the environment.
    std::fs::write(&path, "[gateway]\ninstance_id = \"${PHR_TEST_UNSET_VARIABLE}\"\n").unwrap();
    let out = cli::check_config(BIN, &path);
    let err = out.stderr;
    assert!(!out.success);
    assert!(
        err.contains("gateway.toml:2") && err.contains("PHR_TEST_UNSET_VARIABLE"),
        "{err}"
    );
}

/// The files in `dir`, by name.
fn files_in(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `check-config` and `run` on `config`: both must refuse with a message naming the
/// file and every `needles` entry, and `run` must have created nothing in the data dir
/// (no audit key, no signing key, no store).
fn both_refuse(pki: &Pki, config: &str, needles: &[&str]) {
    let path = pki.path("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let before = files_in(pki.dir.path());
    let out = cli::check_config(BIN, &path);
    let err = out.stderr;
    assert!(!out.success, "check-config called it valid: {err}");
    for needle in ["gateway.toml", "Fix:"].iter().chain(needles) {
        assert!(err.contains(needle), "check-config: {needle:?} missing in: {err}");
    }
    assert_eq!(files_in(pki.dir.path()), before, "check-config created files");
    let out = run_until_exit(&["run", "--config", path.to_str().unwrap()], Duration::from_secs(20))
        .expect("run started with a configuration that can only fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run: {err}");
    for needle in ["gateway.toml", "Fix:"].iter().chain(needles) {
        assert!(err.contains(needle), "run: {needle:?} missing in: {err}");
    }
    assert_eq!(
        files_in(pki.dir.path()),
        before,
        "run created files before refusing the configuration"
    );
}

#[test]
fn check_config_refuses_a_missing_jwks_file_and_run_creates_no_key() {
    let pki = Pki::new();
    let issuer =
        "[[auth.issuers]]\nissuer = \"https://idp.test\"\njwks_file = \"no-such-jwks.json\"\naudiences = [\"phr\"]\n\n";
    let config = base_config(
        &pki,
        "",
        &format!("{issuer}{}", plain_route("b", "/", &[closed_port()], "")),
    );
    both_refuse(
        &pki,
        &config,
        &[
            "auth.issuers[0].jwks_file",
            "JWKS file",
            "no-such-jwks.json",
            "issuer https://idp.test",
        ],
    );
    let out = cli::check_config(BIN, &pki.path("gateway.toml"));
    let err = out.stderr;
    // A file is called a file, and the issuer is written as words, not a code tuple.
    assert!(
        !err.contains("JWKS URL") && !err.contains("jwks_url") && !err.contains("[(\""),
        "{err}"
    );
}

#[test]
fn check_config_refuses_a_loopback_upstream_outside_the_cluster() {
    let pki = Pki::new();
    // Without in_cluster = true the residency policy refuses 127.0.0.1 on every
    // connection: a gateway that starts can only answer 502 egress_refused.
    let rest = format!(
        "[upstreams.b]\nendpoints = [\"http://{}\"]\nallow_plaintext = true\njurisdiction = \"JP\"\n\n[[routes]]\nname = \"b\"\npath_prefix = \"/\"\nupstream = \"b\"\nphi = false\n[routes.auth]\nmode = \"none\"\n",
        closed_port()
    );
    both_refuse(
        &pki,
        &base_config(&pki, "", &rest),
        &[
            "upstreams.b.endpoints[0]",
            "127.0.0.1",
            "in_cluster = true",
            "egress_refused",
        ],
    );
}

/// A reload makes the same checks: a file `check-config` refuses is not swapped in.
#[tokio::test]
async fn reload_refuses_a_loopback_upstream_outside_the_cluster() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let text = base_config(&pki, "", &plain_route("b", "/", &[backend], ""));
    let gw = Gateway::start(&pki, &text);
    let changed = text.replace("in_cluster = true\n", "");
    assert_ne!(changed, text);
    std::fs::write(&gw.config, &changed).unwrap();
    let (status, body) = gw.admin("POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("upstreams.b.endpoints[0]") && body.contains("in_cluster = true"),
        "{body}"
    );
    // The last good configuration keeps serving.
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    assert_eq!(c.get("/echo").await.unwrap().0, 200);
}

#[test]
fn check_config_names_the_key_when_a_private_key_is_given_as_cert_file() {
    let pki = Pki::new();
    let cert = format!("cert_file = \"{}\"", pki.path("server.pem").display());
    let swapped = format!("cert_file = \"{}\"", pki.path("server-key.pem").display());
    let config = base_config(&pki, "", &plain_route("b", "/", &[closed_port()], "")).replace(&cert, &swapped);
    assert!(config.contains(&swapped));
    both_refuse(
        &pki,
        &config,
        &[
            "listeners[0].certificates[0].cert_file",
            "server-key.pem",
            "holds a private key",
        ],
    );
}

#[test]
fn reference_config_is_valid() {
    // config/gateway.toml documents every key; it must parse with the real parser.
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let text = std::fs::read_to_string(reference).unwrap();
    // The reference takes the Redis password from the environment, as it recommends.
    std::env::set_var("PHR_REDIS_PASSWORD", "example");
    let parsed = phr_gateway::config::load_str(&text, std::path::Path::new(reference));
    match parsed {
        Ok(_) => {}
        // Referenced certificate files are examples; everything else must be valid.
        Err(phr_gateway::config::LoadError::Invalid { issues, .. }) => {
            for i in issues {
                assert!(
                    i.problem.contains("does not exist"),
                    "unexpected issue in the reference config: {i}"
                );
            }
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let mut gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("b", "/", &[backend], "")));
    let ready = gw.admin("GET", "/readyz").await;
    assert_eq!(ready.0, 200, "{ready:?}\n{}", gw.log_text());
    let cfg = client(&pki);
    let mut c = Conn::open(gw.addr, cfg.clone()).await.unwrap();
    let in_flight = tokio::spawn(async move { c.get("/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once draining.
    assert!(
        Conn::open(gw.addr, cfg).await.is_err(),
        "a new connection was accepted while draining"
    );
    let (status, _, body) = in_flight.await.unwrap().expect("the in-flight request was cut off");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow done");
    let exit = tokio::task::spawn_blocking(move || gw.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "gateway exited with {exit}");
}

/// A connection accepted before the drain began but whose first request had not arrived
/// yet (as during a hand-over, when the old process accepts until the new one serves)
/// still has that request answered: closing it as idle would drop a request the client
/// was already writing.
#[tokio::test]
async fn sigterm_still_answers_the_first_request_of_a_connection_accepted_before_it() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let mut gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("b", "/", &[backend], "")));
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    gw.signal("TERM");
    gw.wait_log("shutting down: no new connections").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _) = c
        .get("/")
        .await
        .expect("the first request of a connection accepted before the drain was dropped");
    assert_eq!(status, 200);
    drop(c);
    let exit = tokio::task::spawn_blocking(move || gw.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "gateway exited with {exit}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(
        &pki,
        &base_config(&pki, "", &plain_route("metered", "/", &[backend], "")),
    );
    let mut c = Conn::open(gw.addr, client(&pki)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/").await.unwrap().0, 200);
    }
    let (status, metrics) = gw.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("phr_requests_total{route=\"metered\",status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("phr_request_duration_seconds_bucket{route=\"metered\""),
        "{metrics}"
    );
    assert!(metrics.contains("phr_active_connections"), "{metrics}");
}

#[tokio::test]
async fn demo_serves_synthetic_patients() {
    let demo = Demo::start();
    let gw = &demo.gw;
    let token = |name: &str| demo.token(name);
    let mut c = Conn::open(gw.addr, client_config(&demo.ca_pem, &ClientOpts::default()))
        .await
        .unwrap();
    let mut get = async |path: &str, tok: Option<String>| {
        let mut req = http::Request::get(path).header("host", "localhost");
        if let Some(t) = tok {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        c.request(req.body(Default::default()).unwrap()).await.unwrap()
    };
    let (status, headers, body) = get("/fhir/Patient/p1", Some(token("PATIENT_TOKEN"))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["resourceType"], "Patient");
    assert!(headers.contains_key("strict-transport-security"));
    // The demo shows the safeguards: another patient's record (answered as missing, so
    // the token learns nothing about it) and no token are refused.
    assert_eq!(get("/fhir/Patient/p2", Some(token("PATIENT_TOKEN"))).await.0, 404);
    assert_eq!(get("/fhir/Patient/p2", Some(token("DOCTOR_TOKEN"))).await.0, 200);
    assert_eq!(get("/fhir/Patient/p1", None).await.0, 401);
    gw.wait_log("curl --cacert").await;
}

/// Settings read once at start-up (`gateway.instance_id`, `[store]`, ...) cannot change
/// on reload: the reload is refused as a whole and names them, rather than reporting
/// success while part of the file is not in force. With the old values back it passes.
#[tokio::test]
async fn reload_refuses_start_up_only_changes_and_names_them() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let text = base_config(&pki, "", &plain_route("b", "/", &[backend], ""));
    let gw = Gateway::start(&pki, &text);
    let changed = text.replace("instance_id = \"test\"", "instance_id = \"renamed\"")
        + "\n[store]\nurl = \"sqlite://elsewhere.db?mode=rwc\"\n";
    assert!(changed.contains("renamed"));
    std::fs::write(&gw.config, &changed).unwrap();
    let (status, body) = gw.admin("POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("gateway.instance_id") && body.contains("[store]") && body.contains("restart"),
        "{body}"
    );
    std::fs::write(&gw.config, &text).unwrap();
    let (status, body) = gw.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
}

/// The container image's HEALTHCHECK (`phr-gateway health`, deploy/Dockerfile): exit 0
/// with the admin listener's answer on a 200, non-zero with its status otherwise.
#[tokio::test]
async fn the_health_command_answers_for_the_admin_listener() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("b", "/", &[backend], "")));
    assert_eq!(gw.admin("GET", "/readyz").await.0, 200, "{}", gw.log_text());
    let health = |path: &str| {
        let url = format!("http://{}{path}", gw.admin);
        cli::run(BIN, &["health", "--url", &url])
    };
    let ok = health("/healthz");
    assert!(ok.success, "{}", ok.stderr);
    assert_eq!(ok.stdout.trim(), "ok");
    let ready = health("/readyz");
    assert!(ready.success && ready.stdout.trim() == "ready", "{}", ready.stderr);
    let missing = health("/nope");
    assert!(!missing.success, "a 404 counted as healthy");
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
    drop(gw);
    let gone = cli::run(BIN, &["health", "--url", "http://127.0.0.1:1/healthz"]);
    assert!(!gone.success && gone.stderr.contains("no answer"), "{}", gone.stderr);
}

/// The gateway turns transparent huge pages off for itself (main.rs,
/// `keep_heap_in_small_pages`): with them, idle connections and large FHIR
/// Bundles cost about a third more resident memory (bench/RESULTS.md, issue 23).
#[tokio::test]
async fn the_running_gateway_has_transparent_huge_pages_off() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let gw = Gateway::start(&pki, &base_config(&pki, "", &plain_route("r", "/", &[backend], "")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("SKIPPED: this kernel's /proc/PID/status has no THP_enabled line (Linux < 5.0)");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
