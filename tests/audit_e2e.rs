//! End-to-end: access records and revocation through the real binary and its operator
//! commands (LOG-ACC-1, LOG-ACC-2, LOG-PROT-1, LOG-RET-1, DATA-ENC-1/2, ACL-ACCT-1).
//!
//! Every request, allowed or refused, leaves exactly one encrypted, hash-chained record
//! that `phr-gateway audit export` reads back; `audit verify` names tampering; keys can be
//! rotated and destroyed; purging keeps the chain verifiable; a `kill -9` loses no
//! acknowledged record; a PostgreSQL outage is bridged by the spool; a revocation or a
//! block written once reaches every gateway sharing the store within 2 s.
//!
//! PostgreSQL tests read `PHR_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`)
//! and skip without it (panic instead with `PHR_TEST_REQUIRE_SERVICES=1`); each uses its
//! own schema, dropped at the end. Every loop is bounded by a count and a deadline.

use crate::common::tcp_proxy::TcpProxy;
use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use phr_gateway::audit::chain::{CheckpointKind, CheckpointSigner};
use phr_gateway::store::Store;
use phr_test_support::config::issuer;
use phr_test_support::pg::PgSchema;
use phr_test_support::services::postgres_url;
use phr_test_support::tokens;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---- services ----------------------------------------------------------------------

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A fresh PostgreSQL schema for one test (dropped with everything in it at the end).
async fn pg_schema(admin: &str) -> PgSchema {
    PgSchema::create(admin, "audit_e2e_").await
}

/// The schema's URL with the server's `host:port` replaced by `addr` (a proxy).
pub(crate) fn url_via(schema: &PgSchema, addr: SocketAddr) -> String {
    schema.url.replacen(&pg_host_port(&schema.admin), &addr.to_string(), 1)
}

/// `host:port` of a `postgres://[user@]host:port/db` URL.
pub(crate) fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap().to_string()
}

// ---- configuration -----------------------------------------------------------------

/// A gateway config with a FHIR route (`/fhir/`, tokens required) and a plain route
/// (`/plain/`, no auth), plus `extra` ([store], [audit] tables).
pub(crate) fn config(pki: &Pki, instance: &str, fhir: SocketAddr, plain: SocketAddr, extra: &str) -> String {
    let rest = format!(
        "{}\n{}\n{}\n{extra}\n",
        issuer(pki.dir.path()),
        fhir_route(fhir),
        plain_route("plain", "/plain/", &[plain], ""),
    );
    base_config(pki, "", &rest).replacen("instance_id = \"test\"", &format!("instance_id = \"{instance}\""), 1)
}

pub(crate) fn pg_store(url: &str) -> String {
    format!("[store]\nurl = \"{url}\"\njurisdiction = \"JP\"\nin_cluster = true\n")
}

/// Writes `config` as `dir/gateway.toml` and starts the gateway; its store, keys and
/// spool default to `dir`.
pub(crate) fn start_in(dir: &Path, config: &str) -> Gateway {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    Gateway::start_with_args(&["run", "--config", path.to_str().unwrap()], path.clone())
}

pub(crate) fn restart(config: &Path) -> Gateway {
    Gateway::start_with_args(&["run", "--config", config.to_str().unwrap()], config.to_path_buf())
}

/// SIGTERM, then waits (bounded) for a clean exit: the writer flushes and signs a
/// shutdown checkpoint.
pub(crate) fn stop(mut gw: Gateway) {
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = gw.child.try_wait().unwrap() {
            assert!(status.success(), "gateway exit {status}: {}", gw.log_text());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("gateway did not stop within 15 s: {}", gw.log_text());
}

// ---- tokens and requests -----------------------------------------------------------

/// An ES256 token for `sub` (patient-confined when `patient` is given) with `jti`.
pub(crate) fn token(sub: &str, patient: Option<&str>, jti: &str) -> String {
    let mut c = tokens::claims();
    c["sub"] = json!(sub);
    c["jti"] = json!(jti);
    match patient {
        Some(p) => {
            c["scope"] = json!("launch/patient openid patient/*.rs");
            c["patient"] = json!(p);
        }
        None => c["scope"] = json!("openid fhirUser user/*.rs"),
    }
    tokens::sign("ec1", Algorithm::ES256, "ec1", &c)
}

pub(crate) async fn open(gw: &Gateway, pki: &Pki, tls12: bool) -> Conn {
    let opts = ClientOpts {
        tls12_only: tls12,
        ..Default::default()
    };
    Conn::open(gw.addr, client_config(&pki.ca_pem, &opts))
        .await
        .expect("connection to the gateway")
}

/// GET `path` (optionally with a bearer token): status, request id, body.
pub(crate) async fn get(c: &mut Conn, path: &str, token: Option<&str>) -> (u16, String, Bytes) {
    let mut req = Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (status, headers, body) = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("GET {path}: no x-request-id in {headers:?}"))
        .to_str()
        .unwrap()
        .to_string();
    (status, id, body)
}

/// GET with a fresh connection per call (pollers: a refusal may close the connection).
pub(crate) async fn get_once(gw: &Gateway, pki: &Pki, path: &str, token: Option<&str>) -> (u16, String, Bytes) {
    let mut c = open(gw, pki, false).await;
    get(&mut c, path, token).await
}

/// `n` plain-route requests, each must be 200; their request ids in order.
async fn plain_requests(gw: &Gateway, pki: &Pki, n: usize) -> Vec<String> {
    let mut c = open(gw, pki, false).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, id, b) = get(&mut c, &format!("/plain/r{i}"), None).await;
        assert_eq!(s, 200, "plain request {i}: {}", String::from_utf8_lossy(&b));
        ids.push(id);
    }
    ids
}

// ---- operator commands ---------------------------------------------------------------

pub(crate) struct CliOut {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CliOut {
    pub(crate) fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `phr-gateway ARGS` (off the async workers) and waits for it.
pub(crate) async fn cli(args: &[&str]) -> CliOut {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .env("PHR_GATEWAY_WORKER_THREADS", "2")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    CliOut {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) async fn cli_ok(args: &[&str]) -> CliOut {
    let out = cli(args).await;
    assert!(out.ok, "phr-gateway {} failed:\n{}", args.join(" "), out.text());
    out
}

pub(crate) fn cfg_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON log line of the binary (it logs to stdout).
fn is_log_line(v: &Value) -> bool {
    v["level"].is_string() && v["target"].is_string() && v["fields"].is_object()
}

/// `audit export` as JSON lines; every stdout line must be one JSON object. Log lines
/// the command mixes into stdout are skipped here (see the ignored test
/// `export_stdout_holds_only_the_export_on_postgres`).
pub(crate) async fn export(config: &Path) -> (Vec<Value>, CliOut) {
    export_with(config, &[]).await
}

/// `audit export` with extra arguments (filters), as [`export`].
async fn export_with(config: &Path, extra: &[&str]) -> (Vec<Value>, CliOut) {
    let out = cli_ok(&[&["audit", "export", "-c", cfg_str(config)], extra].concat()).await;
    let lines = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}")))
        .filter(|v| !is_log_line(v))
        .collect::<Vec<Value>>();
    for l in &lines {
        assert!(
            l["seq"].is_i64() && l["record_id"].is_string(),
            "export stdout holds something other than records: {l}\n{}",
            out.text()
        );
    }
    (lines, out)
}

/// The exported records keyed by request id; panics on duplicates.
pub(crate) fn by_request_id(lines: &[Value]) -> std::collections::HashMap<String, Value> {
    let mut m = std::collections::HashMap::new();
    for l in lines {
        let id = l["record"]["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no record.request_id in {l}"))
            .to_string();
        assert!(
            m.insert(id.clone(), l.clone()).is_none(),
            "two records for request {id}"
        );
    }
    m
}

async fn verify(config: &Path) -> CliOut {
    cli(&["audit", "verify", "-c", cfg_str(config)]).await
}

pub(crate) async fn assert_intact(config: &Path, what: &str) -> CliOut {
    let out = verify(config).await;
    assert!(out.ok, "{what}: verify failed:\n{}", out.text());
    assert!(out.stdout.contains("RESULT: intact"), "{what}:\n{}", out.text());
    out
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("phr-gateway.db").display())
}

pub(crate) async fn connect(url: &str) -> Store {
    Store::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Every file of the SQLite store (database, WAL) and the spool, concatenated.
fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["phr-gateway.db", "phr-gateway.db-wal", "audit-spool.bin"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---- 1. one record per request, on SQLite and PostgreSQL ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_allowed_or_refused_has_one_encrypted_record_sqlite() {
    every_request_has_one_record(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_allowed_or_refused_has_one_encrypted_record_postgres() {
    let Some(admin) = postgres_url() else { return };
    let schema = pg_schema(&admin).await;
    every_request_has_one_record(Some(&schema.url)).await;
}

async fn every_request_has_one_record(pg: Option<&str>) {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let store = pg.map(pg_store).unwrap_or_default();
    // TLS 1.2 allowed, so the record's TLS version is seen to be the negotiated one.
    let cfg = config(&pki, "test", fhir, plain, &store).replacen(
        "name = \"public\"\nbind = \"127.0.0.1:0\"\n",
        "name = \"public\"\nbind = \"127.0.0.1:0\"\ntls_min_version = \"1.2\"\n",
        1,
    );
    assert!(cfg.contains("tls_min_version"));
    let gw = Gateway::start(&pki, &cfg);
    let subject = unique("subject-");
    let jti = unique("jti-");
    let tok = token(&subject, Some("pa"), &jti);
    let mut c = open(&gw, &pki, false).await;
    let mut c12 = open(&gw, &pki, true).await;

    let (s, read, b) = get(&mut c, "/fhir/Patient/pa", Some(&tok)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, search, b) = get(&mut c, "/fhir/Observation?code=secret-value", Some(&tok)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, no_token, _) = get(&mut c, "/fhir/Patient/pa", None).await;
    assert_eq!(s, 401);
    // Answered exactly as a missing resource (ACL-PHR-1); the record keeps the reason.
    let (s, other, _) = get(&mut c, "/fhir/Patient/pb", Some(&tok)).await;
    assert_eq!(s, 404);
    let (s, no_route, _) = get(&mut c12, "/nowhere?code=secret-value", None).await;
    assert_eq!(s, 404);
    let (s, plain_ok, _) = get(&mut c, "/plain/echo?code=secret-value&x=1", None).await;
    assert_eq!(s, 200);
    drop((c, c12));

    // Durable mode: every response was released after its record was committed,
    // and the writer's counters say so on /metrics.
    let (_, metrics) = gw.admin("GET", "/metrics").await;
    for line in [
        "phr_audit_records_committed_total 6",
        "phr_audit_failed_records_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
    }
    let (lines, out) = export(&gw.config).await;
    assert_eq!(lines.len(), 6, "one record per request:\n{}", out.stdout);
    assert!(
        out.stderr.contains("6 records exported, 0 unreadable"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("secret-value"),
        "a query value reached the access records:\n{}",
        out.stdout
    );
    let recs = by_request_id(&lines);
    let rec = |id: &str| -> &Value {
        &recs
            .get(id)
            .unwrap_or_else(|| panic!("no record for request {id}:\n{}", out.stdout))["record"]
    };
    let seqs: std::collections::BTreeSet<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=6).collect(), "one chain, no gaps");

    let fhir_addr = fhir.to_string();
    let plain_addr = plain.to_string();
    let common = json!({"instance": "test", "source_ip": "127.0.0.1", "method": "GET"});
    let expected: Vec<(&str, &str, Value)> = vec![
        (
            "allowed read",
            &read,
            json!({"status": 200, "decision": "allowed", "reason": null, "route": "fhir",
                   "path": "/fhir/Patient/pa", "subject": subject, "token_issuer": tokens::ISS,
                   "jti": jti, "client_id": "phr-app", "patients": ["pa"], "interaction": "read",
                   "resource_type": "Patient", "resource_id": "pa", "tls_version": "TLSv1.3",
                   "upstream": "fhir", "upstream_addr": fhir_addr}),
        ),
        (
            "allowed search",
            &search,
            json!({"status": 200, "decision": "allowed", "reason": null, "route": "fhir",
                   "path": "/fhir/Observation?code=***", "subject": subject, "patients": ["pa"],
                   "interaction": "search-type", "resource_type": "Observation", "resource_id": null,
                   "tls_version": "TLSv1.3", "upstream_addr": fhir_addr}),
        ),
        (
            "no token",
            &no_token,
            json!({"status": 401, "decision": "refused", "reason": "missing_token", "route": "fhir",
                   "path": "/fhir/Patient/pa", "subject": null, "jti": null, "patients": [],
                   "upstream_addr": null, "tls_version": "TLSv1.3"}),
        ),
        (
            "other patient",
            &other,
            json!({"status": 404, "decision": "refused", "reason": "other_patient_concealed", "route": "fhir",
                   "path": "/fhir/Patient/pb", "subject": subject, "jti": jti, "upstream_addr": null,
                   "tls_version": "TLSv1.3"}),
        ),
        (
            "no route",
            &no_route,
            json!({"status": 404, "decision": "refused", "reason": "no_route", "route": "",
                   "path": "/nowhere?code=***", "subject": null, "upstream": null, "upstream_addr": null,
                   "tls_version": "TLSv1.2"}),
        ),
        (
            "plain route",
            &plain_ok,
            json!({"status": 200, "decision": "allowed", "reason": null, "route": "plain",
                   "path": "/plain/echo?code=***&x=***", "subject": null, "patients": [],
                   "interaction": null, "upstream": "plain", "upstream_addr": plain_addr,
                   "tls_version": "TLSv1.3"}),
        ),
    ];
    for (what, id, want) in &expected {
        let r = rec(id);
        assert_eq!(r["request_id"], json!(id), "{what}");
        for (k, v) in want.as_object().unwrap().iter().chain(common.as_object().unwrap()) {
            assert_eq!(&r[k], v, "{what}: field {k} in {r}");
        }
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{what}: {r}");
    }

    // Filters go through the keyed-hash columns.
    let (lines, out) = export_with(&gw.config, &["--subject", &subject]).await;
    assert_eq!(lines.len(), 3, "the subject's three requests:\n{}", out.stdout);
    let (lines, out) = export_with(&gw.config, &["--patient", "pa"]).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [read.as_str(), search.as_str()], "{}", out.stdout);

    // At rest: the rows hold ciphertext and keyed hashes only.
    let url = pg.map(str::to_string).unwrap_or_else(|| sqlite_url(pki.dir.path()));
    let st = connect(&url).await;
    let rows = st.audit_rows_page("test", None, 100).await.unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        for secret in [subject.as_str(), "Patient/pa", "secret-value", "/plain/echo"] {
            assert!(!contains(&r.ciphertext, secret), "{secret} in clear in a ciphertext");
            assert!(!r.subject_mac.contains(secret) && !r.patient_macs.contains(secret));
        }
    }
    st.close().await;
    if pg.is_none() {
        let raw = raw_bytes(pki.dir.path());
        assert!(raw.len() > 4096, "no database file next to the config?");
        for secret in [
            subject.as_str(),
            jti.as_str(),
            "Patient/pa",
            "secret-value",
            "/plain/echo",
            "127.0.0.1",
        ] {
            assert!(!contains(&raw, secret), "{secret:?} is in clear in the SQLite files");
        }
    }
    assert_intact(&gw.config, "after the requests").await;
}

// ---- 2. tampering is named --------------------------------------------------------

/// A fresh SQLite log of five records (gateway stopped cleanly), then `tamper`; returns
/// the verify output (which must fail), what `tamper` returned, the config, and the PKI
/// (it holds the directory).
async fn tampered(case: &str, tamper: impl AsyncFnOnce(&Store) -> String) -> (CliOut, String, PathBuf, Pki) {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path(case);
    let gw = start_in(&dir, &config(&pki, "test", fhir, plain, ""));
    plain_requests(&gw, &pki, 5).await;
    let cfg = gw.config.clone();
    stop(gw);
    let out = assert_intact(&cfg, case).await;
    assert!(out.stdout.contains("seq 1..=5, 5 records"), "{case}: {}", out.stdout);
    let store = connect(&sqlite_url(&dir)).await;
    let named = tamper(&store).await;
    store.close().await;
    let out = verify(&cfg).await;
    assert!(!out.ok, "{case}: verify passed on a tampered log:\n{}", out.text());
    assert!(out.stderr.contains("RESULT: TAMPERED"), "{case}:\n{}", out.text());
    (out, named, cfg, pki)
}

async fn record_id_at(store: &Store, seq: i64) -> String {
    store.audit_row_at("test", seq).await.unwrap().unwrap().record_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_modified_record() {
    let (out, id, cfg, _pki) = tampered("modified", async |st: &Store| {
        let row = st.audit_row_at("test", 3).await.unwrap().unwrap();
        let mut ct = row.ciphertext.clone();
        ct[0] ^= 0x01;
        sqlx::query("UPDATE audit_records SET ciphertext = $1 WHERE seq = 3")
            .bind(ct)
            .execute(st.pool())
            .await
            .unwrap();
        row.record_id
    })
    .await;
    assert!(
        out.stderr
            .contains(&format!("TAMPERED test seq 3 record {id}: Modified")),
        "{}",
        out.text()
    );
    // Export still lists it, as damaged, and the others as readable; damage is not a
    // destroyed key: the export names it and exits non-zero (DATA-INT-1).
    let out = export_result(&cfg).await;
    assert!(!out.ok, "export passed over a damaged record:\n{}", out.text());
    assert!(
        out.stderr
            .contains("4 records exported, 1 unreadable (0 destroyed keys, 1 damaged)")
            && out.stderr.contains("DAMAGED"),
        "{}",
        out.text()
    );
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| !is_log_line(v))
        .collect();
    assert_eq!(lines.len(), 5);
    let bad: Vec<&Value> = lines.iter().filter(|l| l.get("unreadable").is_some()).collect();
    assert_eq!(bad.len(), 1, "{lines:?}");
    assert_eq!(bad[0]["record_id"], json!(id));
    assert_eq!(bad[0]["unreadable"]["reason"], "damaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_deleted_record() {
    let (out, next, _, _pki) = tampered("deleted", async |st: &Store| {
        let next = record_id_at(st, 4).await;
        sqlx::query("DELETE FROM audit_records WHERE seq = 3")
            .execute(st.pool())
            .await
            .unwrap();
        next
    })
    .await;
    assert!(
        out.stderr.contains("TAMPERED test seq 3 record -: Deleted"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr.contains(&format!("missing before record {next}")),
        "{}",
        out.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_inserted_copy() {
    let (out, id, _, _pki) = tampered("inserted", async |st: &Store| {
        // Make room at 3 (renumber the rest), then put a copy of record 2 there.
        for sql in [
            "UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 3",
            "UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1003",
        ] {
            sqlx::query(sql).execute(st.pool()).await.unwrap();
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query(
            "INSERT INTO audit_records (instance, seq, record_id, recorded_ms, key_id, nonce, ciphertext,
               subject_mac, patient_macs, prev_hash, hash)
             SELECT instance, 3, $1, recorded_ms, key_id, nonce, ciphertext, subject_mac, patient_macs,
               prev_hash, hash FROM audit_records WHERE seq = 2",
        )
        .bind(&id)
        .execute(st.pool())
        .await
        .unwrap();
        id
    })
    .await;
    assert!(
        out.stderr
            .contains(&format!("TAMPERED test seq 3 record {id}: Inserted")),
        "{}",
        out.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_two_swapped_records() {
    let (out, id, _, _pki) = tampered("swapped", async |st: &Store| {
        let fourth = record_id_at(st, 4).await;
        for sql in [
            "UPDATE audit_records SET seq = -3 WHERE seq = 3",
            "UPDATE audit_records SET seq = 3 WHERE seq = 4",
            "UPDATE audit_records SET seq = 4 WHERE seq = -3",
        ] {
            sqlx::query(sql).execute(st.pool()).await.unwrap();
        }
        fourth
    })
    .await;
    assert!(
        out.stderr
            .contains(&format!("TAMPERED test seq 3 record {id}: Reordered")),
        "{}",
        out.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_truncated_tail_against_the_shutdown_checkpoint() {
    let (out, _, _, _pki) = tampered("truncated", async |st: &Store| {
        sqlx::query("DELETE FROM audit_records WHERE seq = 5")
            .execute(st.pool())
            .await
            .unwrap();
        String::new()
    })
    .await;
    assert!(
        out.stderr.contains("TAMPERED test seq 5 record -: Deleted"),
        "{}",
        out.text()
    );
    assert!(out.stderr.contains("shutdown checkpoint"), "{}", out.text());
}

/// Rewrites chain `instance` as if its records had been made `age_ms` ago, keeping it
/// self-consistent (what someone who deletes checkpoints can also do); returns the head.
async fn age_chain(store: &Store, instance: &str, age_ms: i64) -> (i64, Vec<u8>) {
    let then = phr_gateway::audit::time::now_ms() - age_ms;
    let mut prev = phr_gateway::audit::chain::GENESIS_HASH.to_vec();
    let mut seq = 0;
    for mut row in store.audit_rows_page(instance, None, 1000).await.unwrap() {
        row.recorded_ms = then + row.seq;
        row.prev_hash = prev.clone();
        row.hash = phr_gateway::audit::chain::link_hash(&prev, row.seq, &row).to_vec();
        prev = row.hash.clone();
        seq = row.seq;
        sqlx::query(
            "UPDATE audit_records SET recorded_ms = $1, prev_hash = $2, hash = $3 WHERE instance = $4 AND seq = $5",
        )
        .bind(row.recorded_ms)
        .bind(row.prev_hash)
        .bind(row.hash)
        .bind(instance)
        .bind(row.seq)
        .execute(store.pool())
        .await
        .unwrap();
    }
    (seq, prev)
}

/// LOG-PROT-1: after kill -9, records since the last checkpoint (here: every record,
/// the checkpoints deleted too) could be cut without trace; verify used to say
/// "intact". Now a tail older than the bound a running gateway keeps fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_on_a_cut_tail_left_without_checkpoints_after_kill_9() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("cut-tail");
    let gw = start_in(&dir, &config(&pki, "test", fhir, plain, ""));
    plain_requests(&gw, &pki, 5).await;
    // A running gateway's tail is reported and passes (it is young and short).
    let out = assert_intact(&gw.config, "while running").await;
    assert!(out.stdout.contains("unvouched tail: "), "{}", out.text());
    let cfg = gw.config.clone();
    drop(gw); // SIGKILL: no shutdown checkpoint
    let store = connect(&sqlite_url(&dir)).await;
    for sql in [
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_records WHERE seq >= 4",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    // The crash was an hour ago: ages the three remaining records (rehashing them).
    age_chain(&store, "test", 3_600_000).await;
    store.close().await;
    let out = verify(&cfg).await;
    assert!(
        !out.ok,
        "verify passed on a chain with no checkpoint and an hour-old tail:\n{}",
        out.text()
    );
    assert!(
        out.stdout.contains("unvouched tail: 3 records after seq 0")
            || out.stderr.contains("unvouched tail: 3 records after seq 0"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr.contains("UNVOUCHED test seq 1 record -: UnvouchedTail")
            && out.stderr.contains("no signed checkpoint covers this chain")
            && out.stderr.contains("RESULT: UNVOUCHED TAIL"),
        "{}",
        out.text()
    );
    // Starting the gateway again signs a start checkpoint over what is there now.
    let gw = restart(&cfg);
    plain_requests(&gw, &pki, 1).await;
    stop(gw);
    assert_intact(&cfg, "after a restart").await;
    // Checkpoints cannot be switched off.
    let never = dir.join("never.toml");
    let text = std::fs::read_to_string(&cfg).unwrap() + "\n[audit]\ncheckpoint_every = 0\n";
    std::fs::write(&never, text).unwrap();
    let out = cli(&["check-config", "-c", cfg_str(&never)]).await;
    assert!(
        !out.ok && out.stderr.contains("audit.checkpoint_every"),
        "{}",
        out.text()
    );
}

/// LOG-PROT-1 with `audit.checkpoint_file`: records *and* the checkpoints that vouched
/// for them deleted from the database; the published file still names the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_on_a_cut_the_published_checkpoints_cover() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("published");
    let file = pki.path("other-volume").join("checkpoints.log");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let extra = format!("[audit]\ncheckpoint_file = \"{}\"\n", file.display());
    let gw = start_in(&dir, &config(&pki, "test", fhir, plain, &extra));
    plain_requests(&gw, &pki, 5).await;
    let cfg = gw.config.clone();
    stop(gw);
    let published = std::fs::read_to_string(&file).unwrap();
    assert!(published.contains("\"shutdown\""), "{published}");
    assert_intact(&cfg, "before the cut").await;
    // Operator commands publish their checkpoints too; a shredded key is not damage.
    let store = connect(&sqlite_url(&dir)).await;
    let key = data_keys(&store).await[0].0.clone();
    cli_ok(&["keys", "destroy", "-c", cfg_str(&cfg), "--key-id", &key]).await;
    let published = std::fs::read_to_string(&file).unwrap();
    assert!(
        published.contains("\"key_destroyed\"") && published.contains(&key),
        "{published}"
    );
    let (_, out) = export(&cfg).await;
    assert!(
        out.stderr
            .contains("0 records exported, 5 unreadable (5 destroyed keys, 0 damaged)"),
        "{}",
        out.text()
    );
    for sql in [
        "DELETE FROM audit_checkpoints WHERE seq >= 4",
        "DELETE FROM audit_records WHERE seq >= 4",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    store.close().await;
    let out = verify(&cfg).await;
    assert!(
        !out.ok,
        "verify passed on a cut the published checkpoints cover:\n{}",
        out.text()
    );
    assert!(
        out.stderr.contains("TAMPERED test seq 4 record -: Deleted")
            && out.stderr.contains(&format!("published in {}", file.display())),
        "{}",
        out.text()
    );
    // Deleting the file is not a way out: verify cannot read it and says so.
    std::fs::remove_file(&file).unwrap();
    let out = verify(&cfg).await;
    assert!(!out.ok && out.stderr.contains("checkpoints.log"), "{}", out.text());
}

// ---- 3. FHIR export ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_export_is_a_bundle_of_balp_audit_events() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let gw = Gateway::start(&pki, &config(&pki, "test", fhir, plain, ""));
    let subject = unique("subject-");
    let tok = token(&subject, Some("pa"), &unique("jti-"));
    let mut c = open(&gw, &pki, false).await;
    let (s, read, _) = get(&mut c, "/fhir/Patient/pa", Some(&tok)).await;
    assert_eq!(s, 200);
    let (s, search, _) = get(&mut c, "/fhir/Observation?code=secret-value", Some(&tok)).await;
    assert_eq!(s, 200);
    let (s, refused, _) = get(&mut c, "/fhir/Patient/pa", None).await;
    assert_eq!(s, 401);
    drop(c);

    let out = cli_ok(&["audit", "export", "-c", cfg_str(&gw.config), "--format", "fhir"]).await;
    let bundle: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("FHIR export is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert!(!out.stdout.contains("secret-value"));
    let entries = bundle["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 3, "{bundle}");
    let (ids, _) = export(&gw.config).await;
    let record_of = by_request_id(&ids);
    let event = |req: &str| -> Value {
        let rid = record_of[req]["record_id"].as_str().unwrap();
        entries
            .iter()
            .find(|e| e["resource"]["id"] == rid)
            .unwrap_or_else(|| panic!("no AuditEvent {rid}: {bundle}"))["resource"]
            .clone()
    };
    for e in entries {
        let ev = &e["resource"];
        assert_eq!(ev["resourceType"], "AuditEvent", "{ev}");
        assert!(e["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"), "{e}");
        assert_eq!(ev["type"]["code"], "rest", "{ev}");
        assert!(ev["subtype"][0]["code"].is_string(), "{ev}");
        assert!(
            ["C", "R", "U", "D", "E"].contains(&ev["action"].as_str().unwrap()),
            "{ev}"
        );
        assert!(ev["recorded"].as_str().unwrap().ends_with('Z'), "{ev}");
        assert!(
            ev["source"]["observer"]["display"].as_str().unwrap().contains("test"),
            "{ev}"
        );
        let agents = ev["agent"].as_array().unwrap();
        assert!(agents.iter().any(|a| a["network"]["address"] == "127.0.0.1"), "{ev}");
    }

    let ev = event(&read);
    assert_eq!(
        ev["meta"]["profile"][0],
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    );
    assert_eq!(ev["subtype"][0]["code"], "read");
    assert_eq!(ev["action"], "R");
    assert_eq!(ev["outcome"], "0");
    let user = ev["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["requestor"] == true)
        .cloned();
    let user = user.unwrap_or_else(|| panic!("no requestor agent: {ev}"));
    assert_eq!(user["who"]["identifier"]["value"], json!(subject));
    assert_eq!(user["who"]["identifier"]["system"], tokens::ISS);
    let entity = ev["entity"].as_array().unwrap();
    assert!(
        entity
            .iter()
            .any(|x| x["what"]["reference"] == "Patient/pa" && x["role"]["code"] == "1"),
        "{ev}"
    );

    let ev = event(&search);
    assert_eq!(
        ev["meta"]["profile"][0],
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    );
    assert_eq!(ev["action"], "E");
    let query = ev["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"]["code"] == "24")
        .unwrap_or_else(|| panic!("no query entity: {ev}"))["query"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let query = base64::engine::general_purpose::STANDARD.decode(query).unwrap();
    assert_eq!(String::from_utf8(query).unwrap(), "GET /fhir/Observation?code=***");

    let ev = event(&refused);
    assert_eq!(ev["outcome"], "4", "{ev}");
    assert_eq!(ev["outcomeDesc"], "missing_token", "{ev}");
}

// ---- 4. keys: rotation, loss, crypto-shredding --------------------------------------

async fn data_keys(store: &Store) -> Vec<(String, i64)> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT k.key_id AS key_id, MAX(r.seq) AS last_seq FROM audit_keys k JOIN audit_records r
           ON r.key_id = k.key_id WHERE k.purpose = 'data' GROUP BY k.key_id ORDER BY last_seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| (r.get::<String, _>("key_id"), r.get::<i64, _>("last_seq")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_keep_records_readable_and_destroyed_keys_shred_them() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("keys");
    // Two runs: a data key per start.
    let gw = start_in(&dir, &config(&pki, "test", fhir, plain, ""));
    let mut first = plain_requests(&gw, &pki, 3).await;
    let cfg = gw.config.clone();
    stop(gw);
    let gw = restart(&cfg);
    let second = plain_requests(&gw, &pki, 3).await;
    stop(gw);
    let store = connect(&sqlite_url(&dir)).await;
    let keys = data_keys(&store).await;
    assert_eq!(keys.len(), 2, "one data key per start: {keys:?}");
    assert_eq!(keys[0].1, 3);
    store.close().await;

    // Rotation: every key is re-wrapped under the new KEK; the old one no longer opens them.
    let new_kek = dir.join("kek-2.key");
    let out = cli_ok(&[
        "keys",
        "rotate",
        "-c",
        cfg_str(&cfg),
        "--new-key-file",
        cfg_str(&new_kek),
    ])
    .await;
    assert!(
        out.stdout.contains("re-wrapped 3 data keys"),
        "2 data keys + index: {}",
        out.text()
    );
    assert!(!export_result(&cfg).await.ok, "the retired KEK still opens the records");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let rotated = text.clone() + &format!("\n[audit]\nkek_file = \"{}\"\n", new_kek.display());
    std::fs::write(&cfg, &rotated).unwrap();
    let (lines, out) = export(&cfg).await;
    assert!(
        out.stderr.contains("6 records exported, 0 unreadable"),
        "{}",
        out.text()
    );
    first.extend(second.iter().cloned());
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, first.iter().map(String::as_str).collect::<Vec<_>>());
    assert_intact(&cfg, "after rotation").await;

    // Without the KEK nothing is readable.
    let away = dir.join("kek-2.key.away");
    std::fs::rename(&new_kek, &away).unwrap();
    let out = export_result(&cfg).await;
    assert!(!out.ok, "export without the KEK succeeded: {}", out.text());
    assert!(!out.stdout.contains("request_id"), "{}", out.text());
    assert!(out.stderr.contains("no audit key-encryption key"), "{}", out.text());
    std::fs::rename(&away, &new_kek).unwrap();

    // A new gateway run under the rotated KEK writes readable records too.
    let gw = restart(&cfg);
    let third = plain_requests(&gw, &pki, 1).await;
    stop(gw);

    // Crypto-shredding the first run's key: its three records stay listed, unreadable.
    let out = cli(&["keys", "destroy", "-c", cfg_str(&cfg), "--key-id", "index-v1"]).await;
    assert!(!out.ok, "the index key is not a data key: {}", out.text());
    let out = cli(&["keys", "destroy", "-c", cfg_str(&cfg), "--key-id", "no-such-key"]).await;
    assert!(!out.ok && out.stderr.contains("no data key"), "{}", out.text());
    let doomed = &keys[0].0;
    cli_ok(&["keys", "destroy", "-c", cfg_str(&cfg), "--key-id", doomed]).await;
    let (lines, out) = export(&cfg).await;
    assert!(
        out.stderr.contains("4 records exported, 3 unreadable"),
        "{}",
        out.text()
    );
    assert_eq!(lines.len(), 7);
    for l in &lines[..3] {
        assert_eq!(
            l["unreadable"],
            json!({"reason": "key_destroyed", "key_id": doomed}),
            "{l}"
        );
        assert!(l.get("record").is_none(), "{l}");
    }
    let readable: Vec<&str> = lines[3..]
        .iter()
        .map(|l| l["record"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        readable,
        [&second[..], &third[..]]
            .concat()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let out = assert_intact(&cfg, "after destroying a key").await;
    assert!(out.stdout.contains("7 records"), "{}", out.stdout);
    let out = cli(&["keys", "destroy", "-c", cfg_str(&cfg), "--key-id", doomed]).await;
    assert!(
        !out.ok && out.stderr.contains("no data key"),
        "destroyed twice: {}",
        out.text()
    );
}

/// A KEK that cannot open the store's keys (another instance's, or a replaced
/// KEK file) used to start a gateway that served while every commit failed and
/// every record went to the spool, never to the store. Now `run` refuses to
/// start and names the key, both KEKs and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_encryption_key_that_cannot_open_the_stores_keys_refuses_to_start() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("foreign-kek");
    let gw = start_in(&dir, &config(&pki, "test", fhir, plain, ""));
    plain_requests(&gw, &pki, 1).await;
    let cfg = gw.config.clone();
    stop(gw);
    let kek = dir.join("audit-kek.key");
    assert!(kek.exists(), "the first start created {}", kek.display());
    // The next start creates a new, different KEK where the first one was.
    std::fs::rename(&kek, dir.join("audit-kek.key.first")).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_until_exit(&["run", "--config", cfg_str(&cfg)], Duration::from_secs(20))
    })
    .await
    .unwrap()
    .expect("the gateway started with a KEK that cannot open the store's keys");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("index-v1") && err.contains("kek_file") && err.matches("kek-").count() >= 2,
        "names the key, both KEKs and the fix: {err}"
    );
}

async fn export_result(config: &Path) -> CliOut {
    cli(&["audit", "export", "-c", cfg_str(config)]).await
}

// ---- 5. purge ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_expired_records_and_verify_still_passes() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("purge");
    let gw = start_in(
        &dir,
        &config(&pki, "test", fhir, plain, "[audit]\nretention_days = 1\n"),
    );
    let ids = plain_requests(&gw, &pki, 6).await;
    let cfg = gw.config.clone();
    // SIGKILL: no shutdown checkpoint vouches for the current hashes, so the test can
    // age the first three records (rewriting the chain consistently, as a writer
    // recording them two days ago would have).
    drop(gw);
    let store = connect(&sqlite_url(&dir)).await;
    let two_days_ago = phr_gateway::audit::time::now_ms() - 2 * 86_400_000;
    let mut prev = phr_gateway::audit::chain::GENESIS_HASH.to_vec();
    for mut row in store.audit_rows_page("test", None, 100).await.unwrap() {
        if row.seq <= 3 {
            row.recorded_ms = two_days_ago + row.seq;
        }
        row.prev_hash = prev.clone();
        row.hash = phr_gateway::audit::chain::link_hash(&prev, row.seq, &row).to_vec();
        prev = row.hash.clone();
        sqlx::query("UPDATE audit_records SET recorded_ms = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(row.recorded_ms)
            .bind(row.prev_hash)
            .bind(row.hash)
            .bind(row.seq)
            .execute(store.pool())
            .await
            .unwrap();
    }
    // The checkpoints the writer signed vouch for the hashes before the ageing; a writer
    // that recorded these two days ago would have signed the aged chain instead.
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(store.pool())
        .await
        .unwrap();
    let signer = CheckpointSigner::load_or_generate(&dir.join("audit-signing.pem")).unwrap();
    let c = signer
        .checkpoint("test", 6, &prev, CheckpointKind::Periodic, "")
        .unwrap();
    store.audit_insert_checkpoint(&c).await.unwrap();
    store.close().await;
    assert_intact(&cfg, "aged chain").await;

    // retention_days = 0 is refused, not "delete everything".
    let zero = dir.join("zero.toml");
    std::fs::write(
        &zero,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("retention_days = 1", "retention_days = 0"),
    )
    .unwrap();
    let out = cli(&["audit", "purge", "-c", cfg_str(&zero)]).await;
    assert!(!out.ok, "retention_days = 0 purged: {}", out.text());
    assert_eq!(export(&cfg).await.0.len(), 6);

    let out = cli_ok(&["audit", "purge", "-c", cfg_str(&cfg)]).await;
    assert!(
        out.stdout.contains("deleted: 3") && out.stdout.contains("through_seq: 3"),
        "{}",
        out.text()
    );
    let out = assert_intact(&cfg, "after purge").await;
    assert!(out.stdout.contains("seq 4..=6, 3 records"), "{}", out.stdout);
    let (lines, _) = export(&cfg).await;
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids[3..].iter().map(String::as_str).collect::<Vec<_>>());
    // Purging again is a no-op; the chain continues after a restart.
    cli_ok(&["audit", "purge", "-c", cfg_str(&cfg)]).await;
    let gw = restart(&cfg);
    plain_requests(&gw, &pki, 2).await;
    stop(gw);
    let out = assert_intact(&cfg, "after purge and more records").await;
    assert!(out.stdout.contains("seq 4..=8, 5 records"), "{}", out.stdout);

    // The purge checkpoint is what keeps verify green: a deletion without one is caught.
    let store = connect(&sqlite_url(&dir)).await;
    sqlx::query("DELETE FROM audit_records WHERE seq = 4")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let out = verify(&cfg).await;
    assert!(!out.ok && out.stderr.contains("Deleted"), "{}", out.text());
}

// ---- 6. kill -9 under load -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_record() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let mut gw = Gateway::start(&pki, &config(&pki, "test", fhir, plain, ""));
    let cfg = gw.config.clone();
    let client = client(&pki);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut clients = Vec::new();
    for n in 0..4 {
        let (addr, client) = (gw.addr, client.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, String)> = Vec::new();
            let mut errors = 0u32;
            let mut conn: Option<Conn> = None;
            for i in 0..20_000u32 {
                if Instant::now() >= deadline {
                    break;
                }
                if conn.is_none() {
                    conn = Conn::open(addr, client.clone()).await.ok();
                    if conn.is_none() {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let c = conn.as_mut().unwrap();
                match c.get(&format!("/plain/c{n}/{i}")).await {
                    Ok((status, headers, _)) => {
                        let id = headers["x-request-id"].to_str().unwrap().to_string();
                        seen.push((status, id));
                    }
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            (seen, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    let mut acked = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (seen, e) = c.await.unwrap();
        acked.extend(seen);
        errors += e;
    }
    drop(gw);
    assert!(acked.len() >= 20, "too little load to mean anything: {}", acked.len());
    assert!(errors > 0, "the kill happened after the load ended");
    assert!(acked.iter().all(|(s, _)| *s == 200), "{acked:?}");

    let gw = restart(&cfg);
    let after = plain_requests(&gw, &pki, 2).await;
    let (lines, out) = export(&cfg).await;
    let recs = by_request_id(&lines);
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(s, _)| *s < 500)
        .map(|(_, id)| id)
        .filter(|id| !recs.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged requests have no record after kill -9: {missing:?}\n{}",
        missing.len(),
        acked.len(),
        out.stderr
    );
    for id in &after {
        assert!(recs.contains_key(id), "a request after the restart has no record");
    }
    let out = assert_intact(&cfg, "after kill -9 and restart").await;
    eprintln!("{} acknowledged before kill -9; {}", acked.len(), out.stdout.trim());
}

// ---- 7. PostgreSQL outage: spool, then replay ----------------------------------------

/// A gateway whose PostgreSQL store is reached through a [`TcpProxy`], with three
/// records committed while the database is up.
struct Outage {
    gw: Gateway,
    pki: Pki,
    proxy: TcpProxy,
    /// A direct connection to the schema, around the proxy.
    direct: Store,
    spool: PathBuf,
    ids: Vec<String>,
    _schema: PgSchema,
}

async fn outage_setup() -> Option<Outage> {
    let admin = postgres_url()?;
    let schema = pg_schema(&admin).await;
    let target: SocketAddr = pg_host_port(&admin).parse().expect("PHR_TEST_POSTGRES_URL host:port");
    assert!(target.ip().is_loopback(), "only a loopback PostgreSQL is used in tests");
    let proxy = TcpProxy::start(target).await;
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let via = url_via(&schema, proxy.addr);
    let gw = Gateway::start(&pki, &config(&pki, "test", fhir, plain, &pg_store(&via)));
    let ids = plain_requests(&gw, &pki, 3).await;
    let direct = connect(&schema.url).await;
    let o = Outage {
        spool: pki.path("audit-spool.bin"),
        gw,
        pki,
        proxy,
        direct,
        ids,
        _schema: schema,
    };
    assert_eq!(o.count().await, 3, "committed while the database is up");
    Some(o)
}

impl Outage {
    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_records")
            .fetch_one(self.direct.pool())
            .await
            .unwrap()
    }

    fn spool_len(&self) -> u64 {
        std::fs::metadata(&self.spool).map(|m| m.len()).unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_spools_records_and_replays_them_in_order() {
    let Some(mut o) = outage_setup().await else { return };
    o.proxy.stop().await;
    // Two requests during the outage (each more would cost seconds: see the ignored
    // test below).
    let during = plain_requests(&o.gw, &o.pki, 2).await;
    o.ids.extend(during.iter().cloned());
    assert_eq!(o.count().await, 3, "the database was reachable after all");
    assert!(o.spool_len() > 0, "records not spooled during the outage");
    assert!(
        !contains(&std::fs::read(&o.spool).unwrap(), "/plain/r"),
        "the spool holds records in clear"
    );

    o.proxy.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while o.count().await < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        o.count().await,
        5,
        "spool not replayed within 15 s: {}",
        o.gw.log_text()
    );
    let after = plain_requests(&o.gw, &o.pki, 2).await;
    o.ids.extend(after);

    let (lines, out) = export(&o.gw.config).await;
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "{}", out.stdout);
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        o.ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "records out of request order"
    );
    assert_intact(&o.gw.config, "after the outage").await;
    assert_eq!(o.spool_len(), 0, "spool not emptied after the replay");
    o.direct.close().await;
}

// ---- 8. revocation and blocks across processes (ACL-ACCT-1) -------------------------

/// Polls `GET /fhir/Patient/pa` with `tok` on every gateway every 100 ms until each
/// answers `want`; returns the time since `since` when the last one did.
pub(crate) async fn until_all(gws: &[&Gateway], pki: &Pki, tok: &str, want: u16, since: Instant) -> Duration {
    let mut done = vec![None; gws.len()];
    let mut last = vec![0u16; gws.len()];
    for _ in 0..40 {
        for (i, gw) in gws.iter().enumerate() {
            if done[i].is_none() {
                last[i] = get_once(gw, pki, "/fhir/Patient/pa", Some(tok)).await.0;
                if last[i] == want {
                    done[i] = Some(since.elapsed());
                }
            }
        }
        if done.iter().all(Option::is_some) {
            return done.into_iter().flatten().max().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every gateway answers {want} after {:?}: {last:?}", since.elapsed());
}

pub(crate) async fn status_on_all(gws: &[&Gateway], pki: &Pki, tok: &str) -> Vec<u16> {
    let mut v = Vec::new();
    for gw in gws {
        v.push(get_once(gw, pki, "/fhir/Patient/pa", Some(tok)).await.0);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_blocks_reach_every_gateway_sharing_the_store_within_2s() {
    let Some(admin) = postgres_url() else { return };
    let schema = pg_schema(&admin).await;
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    // Both instances read each other's records: one KEK and one checkpoint key.
    let shared = format!(
        "{}[audit]\nkek_file = \"{}\"\nsigning_key_file = \"{}\"\n",
        pg_store(&schema.url),
        pki.path("shared-kek.key").display(),
        pki.path("shared-signing.pem").display()
    );
    let a = start_in(&pki.path("a"), &config(&pki, "gw-a", fhir, plain, &shared));
    let b = start_in(&pki.path("b"), &config(&pki, "gw-b", fhir, plain, &shared));
    let gws = [&a, &b];
    let iss = tokens::ISS;

    // One token by jti.
    let (alice_jti, alice_other_jti) = (unique("jti-"), unique("jti-"));
    let alice = token("alice", Some("pa"), &alice_jti);
    let alice_other = token("alice", Some("pa"), &alice_other_jti);
    assert_eq!(status_on_all(&gws, &pki, &alice).await, [200, 200]);
    let t = Instant::now();
    let out = cli_ok(&[
        "tokens",
        "revoke",
        "-c",
        cfg_str(&a.config),
        "--issuer",
        iss,
        "--jti",
        &alice_jti,
    ])
    .await;
    assert!(out.stdout.contains("revoked token"), "{}", out.text());
    let took = until_all(&gws, &pki, &alice, 401, t).await;
    assert!(took <= Duration::from_millis(2500), "jti revocation took {took:?}");
    assert_eq!(
        status_on_all(&gws, &pki, &alice_other).await,
        [200, 200],
        "only that jti"
    );
    let (s, _, body) = get_once(&b, &pki, "/fhir/Patient/pa", Some(&alice)).await;
    assert_eq!(s, 401);
    assert!(
        String::from_utf8_lossy(&body).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Every token of a subject.
    let bob1 = token("bob", Some("pa"), &unique("jti-"));
    let bob2 = token("bob", None, &unique("jti-"));
    let carol = token("carol", Some("pa"), &unique("jti-"));
    assert_eq!(status_on_all(&gws, &pki, &bob1).await, [200, 200]);
    let t = Instant::now();
    cli_ok(&[
        "tokens",
        "revoke",
        "-c",
        cfg_str(&b.config),
        "--issuer",
        iss,
        "--subject",
        "bob",
    ])
    .await;
    let took = until_all(&gws, &pki, &bob1, 401, t).await;
    assert!(took <= Duration::from_millis(2500), "subject revocation took {took:?}");
    assert_eq!(status_on_all(&gws, &pki, &bob2).await, [401, 401], "every token of bob");
    assert_eq!(status_on_all(&gws, &pki, &carol).await, [200, 200], "only bob");
    let out = cli(&["tokens", "revoke", "-c", cfg_str(&a.config), "--issuer", iss]).await;
    assert!(!out.ok, "revoke without --jti/--subject: {}", out.text());

    // Block and unblock.
    let t = Instant::now();
    cli_ok(&["subjects", "block", "-c", cfg_str(&a.config), "carol", "--note", "e2e"]).await;
    let took = until_all(&gws, &pki, &carol, 403, t).await;
    assert!(took <= Duration::from_millis(2500), "block took {took:?}");
    let out = cli_ok(&["subjects", "list", "-c", cfg_str(&b.config)]).await;
    assert!(
        out.stdout.contains("carol\t") && out.stdout.contains("e2e"),
        "{}",
        out.text()
    );
    let t = Instant::now();
    cli_ok(&["subjects", "unblock", "-c", cfg_str(&b.config), "carol"]).await;
    let took = until_all(&gws, &pki, &carol, 200, t).await;
    assert!(took <= Duration::from_millis(2500), "unblock took {took:?}");
    let out = cli(&["subjects", "unblock", "-c", cfg_str(&b.config), "carol"]).await;
    assert!(!out.ok, "unblocking twice: {}", out.text());

    // Both instances' refusals are on record, each in its own chain, and both verify.
    let (lines, _) = export(&a.config).await;
    let instances: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["instance"].as_str().unwrap()).collect();
    assert_eq!(instances, ["gw-a", "gw-b"].into());
    let reasons: Vec<&str> = lines.iter().filter_map(|l| l["record"]["reason"].as_str()).collect();
    assert!(reasons.contains(&"revoked"), "{reasons:?}");
    assert!(reasons.contains(&"subject_blocked"), "{reasons:?}");
    let out = assert_intact(&b.config, "two instances").await;
    assert!(
        out.stdout.contains("chain gw-a") && out.stdout.contains("chain gw-b"),
        "{}",
        out.stdout
    );
    drop((a, b));
}

// ---- known bugs (ignored until fixed; see the commit message) ----------------------

/// `audit export` writes the evidence to stdout, and so does the binary's logger: on
/// PostgreSQL the schema check's `CREATE TABLE IF NOT EXISTS` notices ("relation ...
/// already exists, skipping", logged by sqlx at INFO) land in front of the records, so
/// `audit export > evidence.jsonl` holds log lines and `--format fhir` is not JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_stdout_holds_only_the_export_on_postgres() {
    let Some(admin) = postgres_url() else { return };
    let schema = pg_schema(&admin).await;
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let gw = Gateway::start(&pki, &config(&pki, "test", fhir, plain, &pg_store(&schema.url)));
    plain_requests(&gw, &pki, 2).await;
    let out = cli_ok(&["audit", "export", "-c", cfg_str(&gw.config)]).await;
    for l in out.stdout.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(!is_log_line(&v), "a log line in the export:\n{}", out.stdout);
    }
    let out = cli_ok(&["audit", "export", "-c", cfg_str(&gw.config), "--format", "fhir"]).await;
    let bundle: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the FHIR export is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(bundle["entry"].as_array().map(Vec::len), Some(2));
}

/// A panic inside a phase (injected through a debug-build-only hook, see
/// `gateway/src/fault.rs`) answers that request 500 in the route's error format, writes
/// its access record with the refusal code, counts it, and the gateway keeps serving
/// (on the same connection and on new ones). Before, the connection dropped with no
/// response and no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_phase_is_a_recorded_500_and_the_gateway_keeps_serving() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let dir = pki.path("panic");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config(&pki, "test", fhir, plain, "")).unwrap();
    let gw = Gateway::start_with_env(
        &["run", "--config", cfg_str(&path)],
        path.clone(),
        &[("PHR_GATEWAY_TEST_PANIC_ON_PATH", "/plain/boom,/fhir/Observation/boom")],
    );
    let tok = token(&unique("subject-"), Some("pa"), &unique("jti-"));
    let mut c = open(&gw, &pki, false).await;

    let (s, plain_boom, body) = get(&mut c, "/plain/boom", None).await;
    assert_eq!(s, 500, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["error"]["code"], "internal_error", "{v}");
    assert_eq!(v["error"]["request_id"], json!(plain_boom), "{v}");
    assert!(
        !String::from_utf8_lossy(&body).contains("injected"),
        "the panic message stays in the log: {v}"
    );
    // The same connection goes on serving.
    let (s, _, _) = get(&mut c, "/plain/after", None).await;
    assert_eq!(s, 200, "the connection survives the panic");

    let mut c2 = open(&gw, &pki, false).await;
    let (s, fhir_boom, body) = get(&mut c2, "/fhir/Observation/boom", Some(&tok)).await;
    assert_eq!(s, 500, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    assert_eq!(v["issue"][0]["code"], "exception", "{v}");
    let (s, _, _) = get(&mut c2, "/fhir/Patient/pa", Some(&tok)).await;
    assert_eq!(s, 200, "the gateway keeps serving FHIR requests");
    drop((c, c2));

    let (_, metrics) = gw.admin("GET", "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("phr_request_panics_total") && l.ends_with(" 2")),
        "panics counted:\n{metrics}"
    );
    assert!(
        gw.log_text().contains("a phase panicked: injected panic"),
        "{}",
        gw.log_text()
    );
    let (lines, _) = export(&gw.config).await;
    let recs = by_request_id(&lines);
    for (what, id) in [("plain", &plain_boom), ("fhir", &fhir_boom)] {
        let r = &recs
            .get(id)
            .unwrap_or_else(|| panic!("no record for the {what} panic {id}"))["record"];
        assert_eq!(r["status"], 500, "{what}: {r}");
        assert_eq!(r["decision"], "refused", "{what}: {r}");
        assert_eq!(r["reason"], "internal_error", "{what}: {r}");
    }
    assert_intact(&gw.config, "after panics").await;
}

/// A refused FHIR request is recorded without what it tried to reach: `interaction`,
/// `resource_type` and `resource_id` are null on the refusal of `GET /fhir/Patient/pb`
/// (and for a search such as `?patient=pb` the scrubbed path keeps no trace of whose
/// data was sought). `ctx.fhir` is only set once authorisation succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_fhir_requests_record_what_was_attempted() {
    let pki = Pki::new();
    let fhir = fhir_backend::start().await;
    let plain = start_backend().await;
    let gw = Gateway::start(&pki, &config(&pki, "test", fhir, plain, ""));
    let tok = token(&unique("subject-"), Some("pa"), &unique("jti-"));
    let (s, other, _) = get_once(&gw, &pki, "/fhir/Patient/pb", Some(&tok)).await;
    assert_eq!(s, 404, "answered as a missing resource");
    let (lines, _) = export(&gw.config).await;
    let r = &by_request_id(&lines)[&other]["record"];
    assert_eq!(r["decision"], "refused");
    assert_eq!(r["interaction"], "read", "{r}");
    assert_eq!(r["resource_type"], "Patient", "{r}");
    assert_eq!(r["resource_id"], "pb", "{r}");
}

/// While PostgreSQL is unreachable every request waits for the writer's database retries:
/// measured 3 s, then about 12 s per sequential request, although the store's timeouts are
/// "short on purpose so the audit writer falls back to its spool quickly instead of
/// holding requests while the database is away". No request should wait much longer than
/// one `acquire_timeout` (3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_postgres_outage_are_not_held_for_seconds() {
    let Some(o) = outage_setup().await else { return };
    o.proxy.stop().await;
    let mut c = open(&o.gw, &o.pki, false).await;
    let mut took = Vec::new();
    for i in 0..4 {
        let t = Instant::now();
        let (s, _, _) = get(&mut c, &format!("/plain/outage{i}"), None).await;
        assert_eq!(s, 200);
        took.push(t.elapsed());
    }
    eprintln!("request times during the outage: {took:?}");
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(4)),
        "requests held during the outage: {took:?}"
    );
}
