//! `phr-gateway demo`: the real gateway (the same [`crate::app::run`] as `run`) with
//! embedded defaults, so a new user sees every safeguard work on one machine:
//! a generated CA and server certificate, a sample FHIR backend with synthetic patients
//! on loopback, and a generated configuration, all kept in a data directory.

mod backend;
pub mod certs;
pub mod issuer;

use std::net::SocketAddr;
use std::path::Path;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or directory of the demo (or its sample backend) failed.
    #[error("{path}: {source}")]
    Io {
        /// What failed.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA or server certificate could not be made.
    #[error("cannot generate the demo certificates: {0}")]
    Certs(#[from] certs::CertError),
    /// The development issuer could not load its key or sign a token.
    #[error("cannot generate the demo certificates: {0}")]
    Issuer(#[from] issuer::IssuerError),
    /// The gateway did not start.
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// Prepares `data_dir` (PKI, tokens in `tokens.env`, `gateway.toml`), starts the sample
/// backend, then runs the real gateway on `127.0.0.1:port` with its admin listener on
/// `127.0.0.1:admin_port` until Ctrl-C, printing `curl` commands that show each safeguard.
pub async fn run(data_dir: &Path, port: u16, admin_port: u16) -> Result<(), DemoError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| DemoError::Io { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let data_dir = data_dir.canonicalize().map_err(io(data_dir))?;
    let pki = certs::ensure_demo_pki(&data_dir)?;
    let backend = backend::start().await.map_err(io(Path::new("sample backend")))?;
    let dev = issuer::DevIssuer::ensure(&data_dir)?;
    let patient_token = dev.token("patient-p1", "openid launch/patient patient/*.rs", Some("p1"))?;
    let doctor_token = dev.token("dr-tanaka", "openid fhirUser user/*.rs", None)?;
    let tokens = data_dir.join("tokens.env");
    std::fs::write(
        &tokens,
        format!("PATIENT_TOKEN={patient_token}\nDOCTOR_TOKEN={doctor_token}\n"),
    )
    .map_err(io(&tokens))?;

    let config_path = data_dir.join("gateway.toml");
    let config = demo_config(&pki, port, admin_port, backend, &dev.jwks_file);
    std::fs::write(&config_path, config).map_err(io(&config_path))?;
    print_compliance_report(&config_path, &data_dir).await;

    let ca = pki.ca_cert.display().to_string();
    let shown = config_path.display().to_string();
    let tokens_shown = tokens.display().to_string();
    let jwks_shown = dev.jwks_file.display().to_string();
    let data_shown = data_dir.display().to_string();
    let address_file = data_dir.join(ADDRESS_FILE_NAME);
    let written = address_file.clone();
    crate::app::run(&config_path, move |listeners, admin| {
        let gw: SocketAddr = listeners[0].1;
        let base = format!("https://localhost:{}", gw.port());
        // After bind: with `--port 0` only the bound ports tell where the demo is.
        if let Err(e) = write_address_file(&written, gw, admin) {
            println!("{}: not written ({e}); `phr-loadtest --demo` will not find this demo", written.display());
        }
        println!(
            "\nphr-gateway demo is running (config: {config})\n\n  Gateway (TLS 1.3):   {base}/fhir/\n  Sample backend:      http://{backend} (loopback only)\n  Admin:               http://{admin}/healthz  /readyz  /metrics\n\nTry (tokens from the demo's development issuer, valid 12 h):\n  source {tokens}\n  curl --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" {base}/fhir/Patient/p1\n  curl --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" {base}/fhir/Observation      # only p1's\n  curl --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" {base}/fhir/Patient/p2       # 404: told nothing about p2\n  curl --cacert {ca} -H \"Authorization: Bearer $DOCTOR_TOKEN\" {base}/fhir/Patient/p2        # a practitioner may\n  curl --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" {base}/fhir-2fa/Patient/p1   # two factors required (the tokens' amr: pwd+otp)\n  curl --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" {base}/fhir-dpop/Patient/p1  # 401: DPoP-bound tokens only\n  curl --cacert {ca} {base}/fhir/Patient/p1                                              # 401 without a token\n  curl --cacert {ca} --tls-max 1.2 {base}/fhir/metadata   # refused: TLS 1.3 only\n  curl http://{admin}/metrics | grep phr_\n",
            config = shown,
            tokens = tokens_shown,
        );
        println!(
            "Rate limit per subject (burst {DEMO_BURST}, then {DEMO_RATE}/s; AV-DOS-1): 20 quick requests with one token \
             show 429 with Retry-After, RateLimit and RateLimit-Policy headers:\n  {}\n",
            burst_command(&ca, &base)
        );
        println!(
            "More tokens: phr-gateway dev-token --data-dir {data} --subject <sub> [--patient <id>]\n\
             A gateway accepts them with (issuer, audience and JWKS path):\n\n{}",
            issuer::issuer_config_snippet(&jwks_shown),
            data = data_shown,
        );
        println!(
            "Load test it: cargo run --release -p phr-loadtest -- --demo {data} (addresses in {file})",
            data = data_shown,
            file = written.display()
        );
        println!("Stop with Ctrl-C (in-flight requests are drained).\n");
    })
    .await?;
    // Stopped: the addresses are no longer true (a killed demo leaves the file behind,
    // which `phr-loadtest --demo` detects by the refused connection).
    let _ = std::fs::remove_file(&address_file);
    Ok(())
}

/// File in the data directory naming the running demo's bound addresses (JSON:
/// `gateway`, `admin` as `ip:port`, `url`, `metrics_url`, `pid`), written after bind and
/// removed on a clean stop; `phr-loadtest --demo DIR` reads it.
pub const ADDRESS_FILE_NAME: &str = "demo-address.json";

/// Writes [`ADDRESS_FILE_NAME`] atomically (a reader never sees half a file).
fn write_address_file(path: &Path, gateway: SocketAddr, admin: SocketAddr) -> std::io::Result<()> {
    let body = serde_json::json!({
        "gateway": gateway.to_string(),
        "admin": admin.to_string(),
        // The demo's certificate names localhost.
        "url": format!("https://localhost:{}", gateway.port()),
        "metrics_url": format!("http://{admin}/metrics"),
        "pid": std::process::id(),
    });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{body:#}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Generates the compliance report (HTML, Japanese) for the demo's own configuration and
/// prints its path; a failure is printed, not fatal, since the demo still runs.
async fn print_compliance_report(config_path: &Path, data_dir: &Path) {
    let out = data_dir.join("compliance-report.html");
    match crate::compliance::write_html(config_path, &out).await {
        Ok(()) => println!(
            "Compliance report (サービス仕様適合開示書) for this configuration: {}",
            out.display()
        ),
        Err(e) => println!("Compliance report not generated: {e}"),
    }
}

/// Sustained rate of the demo's per-subject limit, per second.
pub const DEMO_RATE: u32 = 2;
/// Burst of the demo's per-subject limit: a quick loop of 20 requests runs out.
pub const DEMO_BURST: u32 = 5;
/// Failed authentications from one address (within 15 min) before the demo blocks it.
pub const DEMO_AUTH_FAILURES: u32 = 20;

/// The shell loop the demo prints to show the per-subject rate limit: 20 quick reads
/// with `$PATIENT_TOKEN` (from `tokens.env`), printing each status line and the
/// rate-limit headers.
pub fn burst_command(ca: &str, base: &str) -> String {
    format!(
        "for i in $(seq 20); do curl -s -o /dev/null -D - --cacert {ca} -H \"Authorization: Bearer $PATIENT_TOKEN\" \
         {base}/fhir/Patient/p1 | grep -iE '^(HTTP/|retry-after|ratelimit)'; done"
    )
}

fn demo_config(pki: &certs::DemoPki, port: u16, admin_port: u16, backend: SocketAddr, jwks: &Path) -> String {
    format!(
        r#"# Generated by `phr-gateway demo`; see config/gateway.toml for every key explained.
[gateway]
instance_id = "demo"

[admin]
bind = "127.0.0.1:{admin_port}"

[[listeners]]
name = "public"
bind = "127.0.0.1:{port}"
tls_min_version = "1.3"
client_auth = "none"

[[listeners.certificates]]
cert_file = "{cert}"
key_file = "{key}"

[upstreams.sample-fhir]
endpoints = ["http://{backend}"]
allow_plaintext = true
in_cluster = true
jurisdiction = "JP"

{issuer_table}
# Failed-authentication back-off (AUTH-LOCK-1): as in production (15 min window and
# block) but after {failures} failures instead of 5, since `phr-loadtest --demo` sends a few
# refused tokens per run (expired, replayed DPoP proof, one factor) from one address and
# several runs in a row must not lock that address, and the demo's curl commands, out.
[auth_backoff]
after_failures = {failures}

# A small per-subject budget, so a quick loop of requests shows 429 with Retry-After
# and RateLimit headers (AV-DOS-1); production values are in config/gateway.toml.
[rate_limits.policies.per_subject]
key = "subject"
rate = {rate}
per = "1s"
burst = {burst}

[[routes]]
name = "fhir"
path_prefix = "/fhir/"
upstream = "sample-fhir"
fhir = true
rate_limits = ["per_subject"]

[routes.auth]
mode = "required"

# The same backend behind two stricter policies, so `phr-loadtest --demo` exercises them:
# only DPoP-bound tokens (cnf.jkt) with a fresh proof per request (RFC 9449) ...
[[routes]]
name = "fhir-dpop"
path_prefix = "/fhir-dpop/"
upstream = "sample-fhir"
fhir = true
rate_limits = ["per_subject"]

[routes.auth]
mode = "required"
require_dpop = true

# ... and only tokens whose amr spans two factor categories (AUTH-2FA-1; pwd+otp passes,
# pwd alone is refused).
[[routes]]
name = "fhir-2fa"
path_prefix = "/fhir-2fa/"
upstream = "sample-fhir"
fhir = true
rate_limits = ["per_subject"]

[routes.auth]
mode = "required"
two_factor = true
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        issuer_table = issuer::issuer_config_snippet(&jwks.display().to_string()),
        rate = DEMO_RATE,
        burst = DEMO_BURST,
        failures = DEMO_AUTH_FAILURES,
    )
}
