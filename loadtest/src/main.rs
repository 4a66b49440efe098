//! `phr-loadtest`: the exchange-path load test kit for a phr-gateway deployment (issue 22).
//!
//! Goose runs the users (hatching, run time, per-transaction metrics, its own Markdown
//! report); this crate adds what a PHR exchange needs: a weighted TOML mix of FHIR
//! interactions, thousands of synthetic patients with their own tokens, an open-model
//! pacer (every user sends at intended times derived from the load shape, and latency is
//! measured from the intended time, so slow responses do not hide themselves: the
//! coordinated-omission correction of wrk2/HdrHistogram), status checks (a refusal that
//! is served, or a read that is refused, is an error, not throughput; 429s are counted
//! apart with their `Retry-After`), `/metrics` scrapes before and after, and reports
//! (`report.html` with inline SVG plots, `report.json`, `summary.md`) that merge across
//! load-generator processes (`phr-loadtest merge`). See bench/README.md.

mod dpop;
mod mix;
mod report;
mod server;
mod shape;
mod stats;
mod tokens;

use clap::{Parser, Subcommand, ValueEnum};
use goose::prelude::*;
use mix::{Interaction, Mix, TokenKind};
use shape::Shape;
use stats::{Outcome, Recorder};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "phr-loadtest",
    version,
    about = "Load test a phr-gateway deployment's exchange path with a PHR-like mix"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Merge the report.json files of several load-generator processes into one report.
    Merge {
        /// Where the merged report.html, report.json and summary.md go.
        #[arg(long)]
        out: PathBuf,
        /// report.json files.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
enum ShapeArg {
    /// --rate throughout.
    Constant,
    /// From --rate to --rate-end over --duration.
    Ramp,
    /// From --rate, adding --step every --step-every (step to saturation).
    Step,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
enum HttpArg {
    /// HTTP/1.1 only.
    #[value(name = "1.1")]
    H1,
    /// HTTP/2 (negotiated with ALPN over TLS; prior knowledge on plain http).
    #[value(name = "2")]
    H2,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Use the demo (`phr-gateway demo`, already running) in DIR (default: phr-gateway-demo):
    /// its demo-address.json (written once it listens) gives the URL and admin address,
    /// ca.pem the CA, dev-issuer-key.pem the signing key; runs 30 s unless --duration is
    /// given. Starts nothing itself.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "phr-gateway-demo")]
    demo: Option<PathBuf>,
    /// Base URL of the gateway (or backend), e.g. https://gw.example.jp:8443.
    #[arg(long)]
    target: Option<String>,
    /// PEM CA certificate(s) to trust for the target (besides the built-in web roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// ES256 (P-256) PKCS#8 PEM private key the tokens are signed with.
    #[arg(long)]
    key: Option<PathBuf>,
    /// `iss` of the tokens.
    #[arg(long, default_value = "https://dev-issuer.phr-gateway.invalid")]
    issuer: String,
    /// `aud` of the tokens.
    #[arg(long, default_value = "phr-gateway-demo")]
    audience: String,
    /// `kid` of the signing key.
    #[arg(long, default_value = "dev-1")]
    kid: String,
    /// Backend patient ids the synthetic patients are bound to (round-robin), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "p1,p2,p3")]
    patient_ids: Vec<String>,
    /// Synthetic patients (each with its own subject and token).
    #[arg(long, default_value_t = 2000)]
    patients: usize,
    /// Mix file (TOML); default: the embedded phr-day mix (loadtest/mixes/phr-day.toml).
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Load shape.
    #[arg(long, value_enum, default_value = "constant")]
    shape: ShapeArg,
    /// Requests per second (start rate for ramp and step).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Final rate of a ramp.
    #[arg(long)]
    rate_end: Option<f64>,
    /// Rate added per step (step shape).
    #[arg(long, default_value_t = 50.0)]
    step: f64,
    /// Length of one step (step shape).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step_every: Duration,
    /// Run length, e.g. 30s, 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Users (concurrent request slots); default: peak rate × 0.25 s + 8, so the intended
    /// rate holds while responses take up to ~250 ms.
    #[arg(long)]
    users: Option<usize>,
    /// HTTP clients (connection pools) the users share. One load generator sends from one
    /// address, and the gateway limits connections and TLS handshakes per address
    /// (`[connection_limits]`: 64 connections, 20 handshakes/s, burst 40 by default): with
    /// HTTP/2 each client is one connection; with HTTP/1.1 a client opens one per
    /// concurrent request, so keep --users within the limit there.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// HTTP version.
    #[arg(long, value_enum, default_value = "2")]
    http: HttpArg,
    /// The gateway's Prometheus endpoint, scraped before and after (e.g. http://127.0.0.1:9901/metrics).
    #[arg(long)]
    metrics_url: Option<String>,
    /// Output directory for the reports.
    #[arg(long, default_value = "loadtest-report")]
    out: PathBuf,
    /// This process's name in merged reports (default: host-pid).
    #[arg(long)]
    node: Option<String>,
    /// Tokio worker threads of the load generator (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit non-zero when any unexpected status was seen.
    #[arg(long)]
    fail_on_unexpected: bool,
}

/// Everything the users share.
struct Ctx {
    mix: Mix,
    tokens: tokens::Tokens,
    recorder: Recorder,
    shape: Shape,
    duration: Duration,
    users: usize,
    start: Instant,
    next_patient: AtomicUsize,
    /// The mix as a shuffled table of interaction indices, each present `weight` times:
    /// requests walk it, so every stretch of the run has the mix's proportions.
    table: Vec<usize>,
    next_pick: AtomicUsize,
    /// Requests sent per interaction (for `max_per_run`).
    sent: Vec<AtomicU64>,
    /// Shared HTTP clients (connection pools); user `i` uses `clients[i % len]`.
    clients: Vec<reqwest::Client>,
    today: String,
    /// The base URL requests go to (no trailing `/`): DPoP proofs name it in `htu`.
    target: String,
    /// Signs the users' DPoP-bound tokens, valid for `valid_for_s`.
    issuer: tokens::Issuer,
    valid_for_s: i64,
    /// Per interaction: the `dpop` interaction a `dpop-replay` one replays.
    replay_source: Vec<Option<usize>>,
    /// Per `dpop` interaction: the last request answered as expected, for its replays.
    captured: Vec<Mutex<Option<Captured>>>,
}

/// A DPoP request the gateway answered as expected, kept to be replayed.
#[derive(Clone)]
struct Captured {
    path: String,
    patient: String,
    token: String,
    proof: String,
}

/// A user's state: its next intended send time, and its DPoP key and bound token.
struct UserState {
    next: Instant,
    dpop: Option<DpopUser>,
}

/// A virtual user's own DPoP key, its bound token (`cnf.jkt`) and that token's patient.
struct DpopUser {
    key: dpop::DpopKey,
    token: String,
    patient: String,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Merge { out, reports }) => merge(&out, &reports),
        None => run(cli.run),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("phr-loadtest: {e}");
            std::process::exit(2);
        }
    }
}

fn merge(out: &Path, files: &[PathBuf]) -> Result<i32, String> {
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        reports.push(
            serde_json::from_str(&text).map_err(|e| format!("{}: not a phr-loadtest report.json: {e}", f.display()))?,
        );
    }
    let merged = report::Report::merge(reports);
    merged.write(out)?;
    println!("{}", merged.markdown());
    Ok(0)
}

/// What the running demo's data dir tells: URL, admin metrics URL, CA, signing key. The
/// demo writes its bound addresses to `demo-address.json` once it listens (so a demo on
/// `--port 0` is found too) and removes the file when it stops.
fn demo_settings(dir: &Path) -> Result<(String, String, PathBuf, PathBuf), String> {
    let file = dir.join("demo-address.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e}: is the demo running? Start it with `phr-gateway demo --data-dir {}` (it writes this \
             file once it listens), or give --demo DIR with its data dir",
            file.display(),
            dir.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not the demo's address file: {e}", file.display()))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: no \"{k}\"", file.display()))
    };
    let gateway = field("gateway")?;
    let addr: std::net::SocketAddr = gateway
        .parse()
        .map_err(|e| format!("{}: gateway {gateway:?}: {e}", file.display()))?;
    // A killed demo leaves the file behind: a refused connection says so before the run.
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| {
        format!(
            "the demo is not answering at {gateway} (from {}): {e}: is the demo running? A demo that was \
             killed leaves this file behind; start it again with `phr-gateway demo --data-dir {}`",
            file.display(),
            dir.display()
        )
    })?;
    Ok((
        field("url")?,
        field("metrics_url")?,
        dir.join("ca.pem"),
        dir.join("dev-issuer-key.pem"),
    ))
}

/// How the HTTP clients are built (a builder is not `Clone`).
#[derive(Clone)]
struct ClientSpec {
    roots: Vec<reqwest::Certificate>,
    http: HttpArg,
    plain: bool,
}

impl ClientSpec {
    fn new(ca: Option<&Path>, http: HttpArg, plain: bool) -> Result<Self, String> {
        let mut roots = Vec::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| format!("CA {}: {e}", ca.display()))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("CA {}: {e}", ca.display()))?;
        }
        Ok(Self { roots, http, plain })
    }

    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        client_builder(&self.roots, self.http, self.plain).build()
    }
}

fn client_builder(roots: &[reqwest::Certificate], http: HttpArg, plain: bool) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("phr-loadtest/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4);
    for cert in roots {
        b = b.add_root_certificate(cert.clone());
    }
    match (http, plain) {
        (HttpArg::H1, _) => b.http1_only(),
        (HttpArg::H2, true) => b.http2_prior_knowledge(),
        (HttpArg::H2, false) => b,
    }
}

fn today() -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn run(a: RunArgs) -> Result<i32, String> {
    let (target, metrics_url, ca, key, default_duration) = match &a.demo {
        Some(dir) => {
            let (t, m, c, k) = demo_settings(dir)?;
            (
                a.target.clone().unwrap_or(t),
                a.metrics_url.clone().or(Some(m)),
                a.ca.clone().or(Some(c)),
                a.key.clone().unwrap_or(k),
                30,
            )
        }
        None => {
            let t = a
                .target
                .clone()
                .ok_or("give --target URL (or --demo DIR for the running demo)")?;
            let k = a
                .key
                .clone()
                .ok_or("give --key (the ES256 PEM key the gateway's issuer trusts), or --demo DIR")?;
            (t, a.metrics_url.clone(), a.ca.clone(), k, 60)
        }
    };
    let target = target.trim_end_matches('/').to_string();
    let duration = a.duration.unwrap_or(Duration::from_secs(default_duration));
    if a.rate <= 0.0 {
        return Err("--rate must be above 0".into());
    }
    let shape = match a.shape {
        ShapeArg::Constant => Shape::Constant { rate: a.rate },
        ShapeArg::Ramp => Shape::Ramp {
            from: a.rate,
            to: a.rate_end.ok_or("--shape ramp needs --rate-end")?,
        },
        ShapeArg::Step => Shape::Step {
            from: a.rate,
            step: a.step,
            every: a.step_every,
        },
    };
    let mix = Mix::load(a.mix.as_deref())?;
    let issuer = tokens::Issuer::from_key_file(&key, &a.issuer, &a.audience, &a.kid)?;
    let valid = duration.as_secs() as i64 + 3600;
    let tokens = issuer.population(a.patients.max(1), &a.patient_ids, valid)?;
    let replay_source = (0..mix.interactions.len()).map(|i| mix.replay_source(i)).collect();
    let users = a
        .users
        .unwrap_or_else(|| (shape.peak(duration) * 0.25).ceil() as usize + 8)
        .max(1);
    let plain = target.starts_with("http://");
    let client = ClientSpec::new(ca.as_deref(), a.http, plain)?;
    let node = a.node.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let scrape_client = ClientSpec {
            http: HttpArg::H1,
            ..client.clone()
        }
        .build()
        .map_err(|e| e.to_string())?;
        let before = match &metrics_url {
            Some(u) => Some(server::scrape(&scrape_client, u).await),
            None => None,
        };
        let ctx = Arc::new(Ctx {
            table: mix_table(&mix),
            sent: (0..mix.interactions.len()).map(|_| AtomicU64::new(0)).collect(),
            captured: (0..mix.interactions.len()).map(|_| Mutex::new(None)).collect(),
            replay_source,
            target: target.clone(),
            issuer,
            valid_for_s: valid,
            mix,
            tokens,
            recorder: Recorder::default(),
            shape,
            duration,
            users,
            start: Instant::now(),
            next_patient: AtomicUsize::new(0),
            next_pick: AtomicUsize::new(0),
            clients: (0..a.connections.clamp(1, users))
                .map(|_| client.build())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("HTTP client: {e}"))?,
            today: today(),
        });
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
        attack(ctx.clone(), &target, users, duration, &a.out).await?;

        let server = match (&metrics_url, before) {
            (Some(u), Some(Ok(b))) => Some(match server::scrape(&scrape_client, u).await {
                Ok(after) => server::compare(u, &b, &after),
                Err(e) => server::ServerSide {
                    url: u.clone(),
                    error: Some(e),
                    ..Default::default()
                },
            }),
            (Some(u), Some(Err(e))) => Some(server::ServerSide {
                url: u.clone(),
                error: Some(e),
                ..Default::default()
            }),
            _ => None,
        };
        let node = report::Node {
            node,
            target: target.clone(),
            shape: shape.describe(),
            duration_s: duration.as_secs_f64(),
            users,
            patients: ctx.tokens.patients.len(),
            http: match a.http {
                HttpArg::H1 => "1.1".into(),
                HttpArg::H2 => "2".into(),
            },
            started_unix,
        };
        let report = report::Report::from_series(node, ctx.recorder.take(), server);
        report.write(&a.out)?;
        println!("{}", report.markdown());
        println!("reports: {}/report.html, report.json, summary.md", a.out.display());
        Ok(if a.fail_on_unexpected && report.totals.unexpected > 0 {
            1
        } else {
            0
        })
    })
}

/// The mix's weighted table, shuffled with a fixed seed (runs are comparable).
fn mix_table(mix: &Mix) -> Vec<usize> {
    let mut table: Vec<usize> = mix
        .interactions
        .iter()
        .enumerate()
        .flat_map(|(i, it)| std::iter::repeat_n(i, it.weight))
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..table.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        table.swap(i, (seed >> 33) as usize % (i + 1));
    }
    table
}

/// Runs goose: one scenario, one transaction that sends the mix's next interaction
/// (goose's own transaction weights run each transaction `weight` times in a row, which
/// would send long runs of one interaction; goose's metrics are still per interaction,
/// by request name).
async fn attack(ctx: Arc<Ctx>, target: &str, users: usize, duration: Duration, out: &Path) -> Result<(), String> {
    let scenario = Scenario::new("exchange")
        .register_transaction(
            Transaction::new(on_start(ctx.clone()))
                .set_name("connect")
                .set_on_start(),
        )
        .register_transaction(Transaction::new(exchange_fn(ctx.clone())).set_name("exchange"));
    let goose_md = out.join("goose-report.md").display().to_string();
    let g = |e: GooseError| format!("goose: {e}");
    GooseAttack::initialize_with_config(goose::config::GooseConfiguration::default())
        .map_err(g)?
        .register_scenario(scenario)
        .set_scheduler(GooseScheduler::Random)
        .set_default(GooseDefault::Host, target)
        .map_err(g)?
        .set_default(GooseDefault::Users, users)
        .map_err(g)?
        // All users within about a second: the pacer, not the hatch, shapes the load.
        .set_default(GooseDefault::HatchRate, &*users.max(1).to_string())
        .map_err(g)?
        .set_default(GooseDefault::RunTime, duration.as_secs().max(1) as usize)
        .map_err(g)?
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(g)?
        .set_default(GooseDefault::NoWebSocket, true)
        .map_err(g)?
        .set_default(GooseDefault::NoAutoStart, false)
        .map_err(g)?
        .set_default(GooseDefault::ReportFile, &*goose_md)
        .map_err(g)?
        .set_default(GooseDefault::Quiet, 1)
        .map_err(g)?
        .set_default(GooseDefault::NoResetMetrics, true)
        .map_err(g)?
        .execute()
        .await
        .map_err(g)?;
    Ok(())
}

type TxFn = goose::goose::TransactionFunction;

fn on_start(ctx: Arc<Ctx>) -> TxFn {
    Arc::new(move |user: &mut GooseUser| {
        let ctx = ctx.clone();
        Box::pin(async move {
            user.client = ctx.clients[user.weighted_users_index % ctx.clients.len()].clone();
            // Spread first sends over one interval so users do not fire in lockstep.
            let interval = ctx.users as f64 / ctx.shape.rate_at(Duration::ZERO, ctx.duration);
            let offset = interval * (user.weighted_users_index % ctx.users) as f64 / ctx.users as f64;
            let dpop = if ctx.mix.uses_dpop() {
                dpop_user(&ctx, user.weighted_users_index)
                    .inspect_err(|e| eprintln!("phr-loadtest: user {}: {e}", user.weighted_users_index))
                    .ok()
            } else {
                None
            };
            user.set_session_data(UserState {
                next: Instant::now() + Duration::from_secs_f64(offset),
                dpop,
            });
            Ok(())
        })
    })
}

/// User `i`'s DPoP key and a token bound to it, for the `i`-th synthetic patient's
/// backend patient (its own subject, so per-subject limits see one subject per key).
fn dpop_user(ctx: &Ctx, i: usize) -> Result<DpopUser, String> {
    let node = std::process::id();
    let key = dpop::DpopKey::generate(&format!("lt-{node}-u{i}"))?;
    let patient = ctx.tokens.patients[i % ctx.tokens.patients.len()].0.clone();
    let token = ctx.issuer.sign_with(
        &format!("lt-{node}-dpop-{i}"),
        "openid launch/patient patient/*.cruds",
        Some(&patient),
        ctx.valid_for_s,
        i,
        serde_json::json!({ "cnf": { "jkt": key.jkt } }),
    )?;
    Ok(DpopUser { key, token, patient })
}

fn exchange_fn(ctx: Arc<Ctx>) -> TxFn {
    Arc::new(move |user: &mut GooseUser| {
        let ctx = ctx.clone();
        Box::pin(async move {
            let idx = next_interaction(&ctx);
            exchange(user, &ctx, idx).await
        })
    })
}

/// The next interaction from the table, skipping those past their `max_per_run`. A
/// replay's turn before its DPoP interaction was ever answered sends that one instead.
fn next_interaction(ctx: &Ctx) -> usize {
    let mut idx = 0;
    for _ in 0..ctx.table.len() {
        let pick = ctx.next_pick.fetch_add(1, Ordering::Relaxed);
        idx = ctx.table[pick % ctx.table.len()];
        if let Some(src) = ctx.replay_source[idx] {
            if ctx.captured[src].lock().map_or(true, |c| c.is_none()) {
                idx = src;
            }
        }
        let cap = ctx.mix.interactions[idx].max_per_run.unwrap_or(u64::MAX);
        if ctx.sent[idx].fetch_add(1, Ordering::Relaxed) < cap {
            return idx;
        }
    }
    idx
}

/// Waits for this user's next intended send time and returns it; schedules the one after.
async fn pace(user: &mut GooseUser, ctx: &Ctx) -> Instant {
    let intended = user
        .get_session_data::<UserState>()
        .map(|p| p.next)
        .unwrap_or_else(Instant::now);
    tokio::time::sleep_until(intended.into()).await;
    let rate = ctx
        .shape
        .rate_at(intended.saturating_duration_since(ctx.start), ctx.duration);
    let next = intended + Duration::from_secs_f64(ctx.users as f64 / rate);
    match user.get_session_data_mut::<UserState>() {
        Some(state) => state.next = next,
        None => user.set_session_data(UserState { next, dpop: None }),
    }
    intended
}

fn method(m: &str) -> GooseMethod {
    match m {
        "POST" => GooseMethod::Post,
        "PUT" => GooseMethod::Put,
        "DELETE" => GooseMethod::Delete,
        "PATCH" => GooseMethod::Patch,
        _ => GooseMethod::Get,
    }
}

fn token<'a>(ctx: &'a Ctx, it: &Interaction, n: usize) -> Option<&'a str> {
    let t = &ctx.tokens;
    match it.token {
        TokenKind::Patient => Some(&t.patients[n % t.patients.len()].1),
        TokenKind::Expired => Some(&t.expired[n % t.expired.len()]),
        TokenKind::OneFactor => Some(&t.one_factor[n % t.one_factor.len()]),
        TokenKind::Practitioner => Some(&t.practitioners[n % t.practitioners.len()]),
        TokenKind::System => Some(&t.systems[n % t.systems.len()]),
        // Sent with their proofs by `exchange`.
        TokenKind::Dpop | TokenKind::DpopReplay | TokenKind::None => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One request of interaction `idx` for the next synthetic patient.
async fn exchange(user: &mut GooseUser, ctx: &Ctx, idx: usize) -> TransactionResult {
    let it = &ctx.mix.interactions[idx];
    let intended = pace(user, ctx).await;
    let n = ctx.next_patient.fetch_add(1, Ordering::Relaxed);
    // A replay re-sends a captured request; a DPoP request is the user's own patient's.
    let replayed = ctx.replay_source[idx].and_then(|src| ctx.captured[src].lock().ok().and_then(|c| c.clone()));
    let own = user.get_session_data::<UserState>().and_then(|s| s.dpop.as_ref());
    let dpop_kind = matches!(it.token, TokenKind::Dpop | TokenKind::DpopReplay);
    let patient = match (&replayed, own) {
        (Some(c), _) => c.patient.clone(),
        (None, Some(d)) if dpop_kind => d.patient.clone(),
        _ => ctx.tokens.patients[n % ctx.tokens.patients.len()].0.clone(),
    };
    let patient = &patient;
    // "Another patient": the next distinct backend id.
    let other = ctx
        .tokens
        .patients
        .iter()
        .map(|(p, _)| p)
        .find(|p| *p != patient)
        .cloned()
        .unwrap_or_else(|| format!("{patient}-other"));
    let obs = format!("{patient}-bp{}", 1 + n % 2);
    let path = match &replayed {
        Some(c) => c.path.clone(),
        None => mix::fill(&it.path, patient, &other, &obs, &ctx.today),
    };
    // DPoP: the token and its proof (a fresh one, or the captured one for a replay).
    let dpop = match (replayed, own) {
        (Some(c), _) => Some((c.token, c.proof)),
        (None, Some(d)) if dpop_kind => {
            let url = format!("{}{path}", ctx.target);
            let proof = d.key.proof(&it.method, &url, &d.token, unix_now()).unwrap_or_else(|e| {
                // Sent without a valid proof: the refusal is counted as unexpected.
                eprintln!("phr-loadtest: {e}");
                String::new()
            });
            Some((d.token.clone(), proof))
        }
        _ => None,
    };
    let mut rb = user.get_request_builder(&method(&it.method), &path)?;
    if let Some((tok, proof)) = &dpop {
        rb = rb
            .header("authorization", format!("DPoP {tok}"))
            .header("dpop", proof.as_str());
    } else if let Some(tok) = token(ctx, it, n) {
        rb = rb.bearer_auth(tok);
    }
    if let Some(body) = &it.body {
        rb = rb
            .header("content-type", "application/fhir+json")
            .body(mix::fill(body, patient, &other, &obs, &ctx.today));
    }
    let req = GooseRequest::builder()
        .method(method(&it.method))
        .path(&*path)
        .name(&*it.name)
        .set_request_builder(rb)
        .build();
    let sent = Instant::now();
    let mut goose = user.request(req).await?;
    let done = Instant::now();
    let (status, retry_after) = match &goose.response {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok()),
        ),
        Err(_) => (0, None),
    };
    let expected = it.expect.contains(&status);
    let replayed_later = ctx.replay_source.contains(&Some(idx));
    if let (true, true, Some((token, proof))) = (expected, replayed_later, dpop) {
        // Kept for this interaction's replays.
        if let Ok(mut c) = ctx.captured[idx].lock() {
            *c = Some(Captured {
                path: path.clone(),
                patient: patient.clone(),
                token,
                proof,
            });
        }
    }
    ctx.recorder.record(
        unix_now(),
        &it.name,
        Outcome {
            status,
            expected,
            retry_after_s: retry_after,
            latency_us: done.saturating_duration_since(intended).as_micros() as u64,
            service_us: done.saturating_duration_since(sent).as_micros() as u64,
        },
    );
    // Goose counts 2xx as success by default; the mix decides instead.
    if expected {
        user.set_success(&mut goose.request)
    } else if status == 429 {
        Ok(())
    } else {
        let tag = format!("{}: status {status}, expected one of {:?}", it.name, it.expect);
        user.set_failure(&tag, &mut goose.request, None, None)
    }
}
