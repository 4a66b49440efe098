//! Zero-downtime upgrade on one host (`gateway.handover_socket`): a second process takes
//! the listening sockets over from the first under steady load; the first drains and
//! exits. No request may fail, no in-flight request may be cut, and both processes'
//! access-record chains must verify.

use crate::common::*;
use phr_test_support::cli;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Load tasks, each opening a new TLS connection per request (so connections keep
/// arriving in the socket's queue while it changes hands).
const CLIENTS: usize = 4;

/// One slot's config: its own chain (`instance_id`) and spool, the shared socket path.
fn slot_config(pki: &Pki, slot: &str, backend: std::net::SocketAddr) -> std::path::PathBuf {
    let text = base_config(
        pki,
        "",
        &format!(
            "{}\n[audit]\nspool_file = \"{slot}-spool.bin\"\n",
            plain_route("b", "/", &[backend], "")
        ),
    )
    .replacen(
        "instance_id = \"test\"",
        &format!(
            "instance_id = \"gw-{slot}\"\nhandover_socket = \"{}\"",
            pki.path("handover.sock").display()
        ),
        1,
    );
    let path = pki.path(&format!("{slot}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_new_process_takes_the_sockets_over_without_dropping_a_request() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let blue = slot_config(&pki, "blue", backend);
    let green = slot_config(&pki, "green", backend);
    let mut old = Gateway::start_with_args(&["run", "--config", blue.to_str().unwrap()], blue.clone());
    assert_eq!(old.admin("GET", "/readyz").await.0, 200, "{}", old.log_text());
    let addr = old.addr;
    let tls = client(&pki);

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, served, failed, tls) = (stop.clone(), served.clone(), failed.clone(), tls.clone());
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let outcome = match Conn::open(addr, tls.clone()).await {
                    Ok(mut c) => c.get("/").await.map(|r| r.0).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(200) => served.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Requests in flight on the old process when the new one takes over.
    let mut in_flight = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::open(addr, tls.clone()).await.unwrap();
        in_flight.push(tokio::spawn(async move { c.get("/slow?ms=1500").await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = served.load(Ordering::Relaxed);

    let new = Gateway::start_with_args(&["run", "--config", green.to_str().unwrap()], green.clone());
    assert_eq!(new.addr, addr, "the new process serves another address");
    new.wait_log("took the listening sockets over").await;
    // The old process drains its in-flight requests and exits by itself.
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            let status = old.child.wait().unwrap();
            (status, old.log_text())
        }),
    )
    .await
    .expect("the old process did not exit after the hand-over")
    .unwrap();
    assert!(exit.0.success(), "old process exited with {}:\n{}", exit.0, exit.1);
    assert!(
        exit.1.contains("a new process took the listening sockets over"),
        "{}",
        exit.1
    );
    for r in in_flight {
        let (status, _, body) = r.await.unwrap().expect("an in-flight request was cut off");
        assert_eq!((status, &body[..]), (200, &b"slow done"[..]));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.unwrap());
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("hand-over under load: {served} requests served ({before} before the new process started), {failed} failed, 2 in flight completed");
    assert_eq!(failed, 0, "requests failed during the hand-over: {errors:?}");
    assert!(served > before, "nothing was served after the hand-over");
    assert_eq!(new.admin("GET", "/readyz").await.0, 200);

    // Both chains (blue's, closed by its final checkpoint, and green's) verify.
    let out = cli::run(BIN, &["audit", "verify", "--config", green.to_str().unwrap()]);
    assert!(out.success, "audit verify: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("gw-blue") && out.stdout.contains("gw-green"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_second_process_with_the_same_chain_is_refused_and_the_first_keeps_serving() {
    let pki = Pki::new();
    let backend = start_backend().await;
    let blue = slot_config(&pki, "blue", backend);
    let old = Gateway::start_with_args(&["run", "--config", blue.to_str().unwrap()], blue.clone());
    assert_eq!(old.admin("GET", "/readyz").await.0, 200, "{}", old.log_text());
    let out = cli::run(BIN, &["run", "--config", blue.to_str().unwrap()]);
    assert!(!out.success, "a second process on the same chain started");
    assert!(
        out.stderr.contains("instance_id") && out.stderr.contains("gw-blue"),
        "{}",
        out.stderr
    );
    let mut c = Conn::open(old.addr, client(&pki)).await.unwrap();
    assert_eq!(c.get("/").await.unwrap().0, 200, "the first process stopped serving");
}
