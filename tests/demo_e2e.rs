//! End-to-end: the demo shows every safeguard (issue 19 item 7): its per-subject rate
//! limit answers a burst with 429, `Retry-After` and `RateLimit` headers, and the demo
//! and `dev-token --help` print the issuer table a configuration needs for its tokens.

use crate::common::*;
use std::process::Command;

#[tokio::test]
async fn demo_burst_with_one_token_shows_429_with_rate_limit_headers() {
    let demo = Demo::start();
    let (gw, data) = (&demo.gw, &demo.data);
    let token = demo.token("PATIENT_TOKEN");
    let mut c = Conn::open(gw.addr, client_config(&demo.ca_pem, &ClientOpts::default()))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        let req = http::Request::get("/fhir/Patient/p1")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Default::default())
            .unwrap();
        let (status, headers, _) = c.request(req).await.unwrap();
        assert!(
            headers.contains_key("ratelimit") && headers.contains_key("ratelimit-policy"),
            "{status}: {headers:?}"
        );
        if status == 429 && refused.is_none() {
            refused = Some(headers);
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    let refused = refused.unwrap_or_else(|| panic!("no 429 in a burst of 20: {statuses:?}"));
    let retry: u64 = refused["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{refused:?}");
    assert!(
        refused["ratelimit-policy"]
            .to_str()
            .unwrap()
            .starts_with("\"per_subject\""),
        "{refused:?}"
    );

    // The demo prints the command that shows it, and the issuer table for its tokens.
    gw.wait_log("for i in $(seq 20); do curl").await;
    let out = gw.log_text();
    assert!(out.contains("Authorization: Bearer $PATIENT_TOKEN"), "{out}");
    assert!(out.contains("retry-after|ratelimit"), "{out}");
    let jwks = data.canonicalize().unwrap().join("dev-issuer-jwks.json");
    let snippet = format!(
        "[[auth.issuers]]\nissuer = \"https://dev-issuer.phr-gateway.invalid\"\njwks_file = \"{}\"\naudiences = [\"phr-gateway-demo\"]",
        jwks.display()
    );
    assert!(out.contains(&snippet), "{out}");
}

#[test]
fn dev_token_help_names_issuer_audience_and_jwks_path() {
    let out = Command::new(BIN).args(["dev-token", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "[[auth.issuers]]",
        "issuer = \"https://dev-issuer.phr-gateway.invalid\"",
        "audiences = [\"phr-gateway-demo\"]",
        "jwks_file = \"DATA_DIR/dev-issuer-jwks.json\"",
    ] {
        assert!(help.contains(want), "{want:?} missing from:\n{help}");
    }
}
