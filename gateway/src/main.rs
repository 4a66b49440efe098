//! The `phr-gateway` command.

use clap::{Parser, Subcommand};
use phr_gateway::ops;
use std::path::PathBuf;
use std::process::ExitCode;

// Every request allocates and frees many small buffers (headers, records,
// FHIR entries) on the proxy's worker threads; glibc's malloc showed up at
// about 15 % of the gateway's CPU in profiles, and paired bench runs gave a
// FHIR read 14-25 % less CPU with mimalloc (bench/PIPELINE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, before it serves anything.
///
/// Why: mimalloc asks the kernel for huge pages on its arenas, so every 2 MiB region a
/// few connections touch becomes resident whole. Holding 5,000 idle TLS keep-alive
/// connections, that made 41 KiB per connection on HTTP/1.1 and 57 KiB on HTTP/2
/// where the buffers the connections really hold come to 29 and 38 KiB; a 20 MiB FHIR
/// Bundle's peak rose the same way (issue 23, bench/RESULTS.md). The prctl flag applies
/// to every mapping, those mimalloc made before `main` included, and to child
/// processes. It only changes how memory is backed, so a kernel that refuses it (older
/// than 3.15, or a sandbox) costs memory, not a safeguard: a warning, and go on.
fn keep_heap_in_small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("phr-gateway: warning: could not turn transparent huge pages off ({e}); idle connections will use more memory");
    }
}

#[derive(Parser)]
#[command(
    name = "phr-gateway",
    version,
    about = "A gateway that enforces Japan's medical-information safeguards in front of PHR and online-consultation APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file (including certificates and keys) and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Lint the configuration against the guideline instead (TLS 1.2 without a reason,
        /// PHI routes without two factors, relaxed access records, loose key files ...).
        /// Each finding names its requirement ID, key and fix. Exit status: 0 clean,
        /// 1 findings, 2 unusable configuration.
        #[arg(long)]
        security: bool,
        /// Operator profile (with --security): whether institutions use client certificates.
        #[arg(long, requires = "security")]
        profile: Option<PathBuf>,
    },
    /// The サービス仕様適合開示書 (technical part): one row per requirement ID with its
    /// state and evidence under this configuration. Exit status: 0, 1 with --strict when a
    /// mandatory control is not met, 2 for an unusable configuration or profile.
    ComplianceReport {
        #[arg(long, short, required_unless_present = "docs")]
        config: Option<PathBuf>,
        /// Operator profile for the organisational rows (template: config/compliance-profile.toml).
        #[arg(long)]
        profile: Option<PathBuf>,
        #[arg(long, default_value = "md", value_parser = ["md", "html", "json"])]
        format: String,
        #[arg(long, default_value = "ja", value_parser = ["ja", "en"])]
        lang: String,
        /// Exit 1 when a mandatory control is not met (gate a deployment on it).
        #[arg(long)]
        strict: bool,
        /// Write the report to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print docs/compliance.md as generated from the control table, and nothing else.
        #[arg(long, conflicts_with_all = ["config", "profile", "strict", "out"])]
        docs: bool,
    },
    /// Token revocation (ACL-ACCT-1): every instance sharing the store refuses within 2 s.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The subject block list (bulk-access detector, operators).
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// Access records: verify the chain, export, review, purge.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access-record keys: rotation and crypto-shredding.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Domestic-only egress: build the allow-list, report where every target is.
    #[command(subcommand)]
    Residency(ResidencyCommand),
    /// Print tokens signed by the demo's development issuer (one per line), for demos,
    /// load tests and integration tests. Its JWKS is `dev-issuer-jwks.json` in DATA_DIR.
    #[command(after_help = phr_gateway::demo::issuer::dev_token_help())]
    DevToken {
        #[arg(long, default_value = "phr-gateway-demo")]
        data_dir: PathBuf,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value = "openid patient/*.rs")]
        scope: String,
        #[arg(long)]
        patient: Option<String>,
        /// How many distinct tokens (distinct jti) to print.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Run the real gateway with embedded defaults: generated certificates, a sample FHIR
    /// backend with synthetic patients, on loopback.
    Demo {
        /// Where certificates and the generated config are kept between runs.
        #[arg(long, default_value = "phr-gateway-demo")]
        data_dir: PathBuf,
        /// Port of the gateway's TLS listener.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Port of the admin listener (health, readiness, metrics).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
    /// Check a running deployment from outside (`probe https://HOST[:PORT]/BASE`), or every
    /// configured upstream from the gateway's host (`probe upstreams --config F`).
    /// Exits 0 when every check passes, 1 when one fails, 2 on unusable input.
    Probe(ProbeArgs),
    /// Ask a running gateway's admin listener whether it is healthy: exits 0 on a 200,
    /// non-zero otherwise (the container image's HEALTHCHECK; it has no curl).
    Health {
        /// `/healthz` (the process serves) or `/readyz` (it can take traffic).
        #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
        /// Give up after this long, e.g. "3s".
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `probe URL ...` or `probe upstreams ...`: the syntax, with the URL and the
/// subcommand mutually exclusive.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ProbeArgs {
    #[command(subcommand)]
    command: Option<ProbeCommand>,
    /// The deployment's public URL, `https://HOST[:PORT]/BASE` (e.g. https://phr.example.jp/fhir).
    #[arg(required = true)]
    url: Option<String>,
    /// CA bundle (PEM) the deployment's certificate must chain to; default: the system's.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// One patient's access token, for the cross-patient checks (and to model forgeries on).
    #[arg(long)]
    token: Option<String>,
    /// Another patient's id, which the token must not read or search.
    #[arg(long)]
    other_patient: Option<String>,
    /// Pass `tls.versions` when TLS 1.2 is accepted too (a listener with
    /// `tls_min_version = "1.2"` on purpose); TLS 1.3 is still required.
    #[arg(long)]
    allow_tls12: bool,
    #[command(flatten)]
    output: ProbeOutput,
}

#[derive(clap::Args)]
struct ProbeOutput {
    /// Also write the results as JUnit XML (one test case per check) to this file.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Print the results as JSON (evidence for the compliance report; docs/probe.md).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ProbeCommand {
    /// For every configured upstream, from this host: resolution and residency of each
    /// address, TCP, TLS, certificate, client certificate, FHIR `metadata`.
    Upstreams {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        output: ProbeOutput,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Revoke one token by `jti`, or every token of a subject issued before now.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        jti: Option<String>,
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Subcommand)]
enum SubjectsCommand {
    /// Block a subject on every instance.
    Block {
        #[arg(long, short)]
        config: PathBuf,
        subject: String,
        #[arg(long, default_value = "blocked by an operator")]
        note: String,
    },
    /// Lift a block (for example after a bulk-access alert was reviewed).
    Unblock {
        #[arg(long, short)]
        config: PathBuf,
        subject: String,
    },
    /// List blocked subjects.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every hash chain and signed checkpoint; names the first modified, deleted,
    /// inserted or reordered record and exits non-zero.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Decrypt records to JSON lines, or to a FHIR Bundle of AuditEvents (IHE BALP).
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// RFC 3339, e.g. 2026-11-01T00:00:00Z
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "fhir"])]
        format: String,
    },
    /// The periodic review: top subjects, off-hours access, many patients, refusals.
    Report {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Remove records older than audit.retention_days (verification still passes).
    Purge {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new key-encryption key and re-wrap every data key under it.
    Rotate {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Destroy one data key: its records become unreadable (crypto-shredding).
    Destroy {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Subcommand)]
enum ResidencyCommand {
    /// Turn APNIC delegated statistics (delegated-apnic-extended-latest) into an
    /// allow-list file of one country's IPv4/IPv6 ranges.
    ImportApnic {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "JP")]
        country: String,
    },
    /// List every target, its declared jurisdiction, its resolved addresses and whether
    /// each is allowed. Exits non-zero if anything is not.
    Report {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    keep_heap_in_small_pages();
    let cli = Cli::parse();
    // The server logs to stdout (collected by the platform); every other command keeps
    // stdout for its own output (exports, reports) and logs to stderr.
    init_logging(matches!(cli.command, Command::Run { .. } | Command::Demo { .. }));
    match cli.command {
        Command::CheckConfig {
            config,
            security: true,
            profile,
        } => security_lint(&config, profile.as_deref()),
        Command::ComplianceReport {
            config,
            profile,
            format,
            lang,
            strict,
            out,
            docs,
        } => compliance_report(config, profile, &format, &lang, strict, out, docs),
        Command::CheckConfig { config, .. } => block_on(async move {
            // The very checks `run` makes before it creates a file or serves; only what
            // needs the network (the store's KEK, JWKS URLs) is left to `run`.
            phr_gateway::startup::check(&config).await.map_err(|e| e.to_string())?;
            println!("{}: configuration is valid", config.display());
            Ok::<(), String>(())
        }),
        Command::Run { config } => {
            // `gateway.worker_threads` sizes the runtime, so it is read before the
            // runtime exists; a config that does not load fails again, with the
            // precise message, inside `app::run`.
            let configured = phr_gateway::config::load(&config).map_or(0, |c| c.gateway.worker_threads);
            block_on_threads(
                configured,
                async move { phr_gateway::app::run(&config, |_, _| {}).await },
            )
        }
        Command::Residency(ResidencyCommand::ImportApnic { file, out, country }) => {
            match phr_gateway::residency::commands::import_apnic(&file, &out, &country) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Residency(ResidencyCommand::Report { config, json }) => {
            let mut ok = false;
            let code = block_on(async {
                let (text, all_ok) = phr_gateway::residency::commands::report(&config, json).await?;
                println!("{text}");
                ok = all_ok;
                Ok::<(), phr_gateway::residency::commands::CommandError>(())
            });
            if code == ExitCode::SUCCESS && !ok {
                return ExitCode::FAILURE;
            }
            code
        }
        Command::Tokens(TokensCommand::Revoke {
            config,
            issuer,
            jti,
            subject,
        }) => ops(async move { ops::revoke(&config, &issuer, jti.as_deref(), subject.as_deref()).await }),
        Command::Subjects(SubjectsCommand::Block { config, subject, note }) => {
            ops(async move { ops::block(&config, &subject, &note).await })
        }
        Command::Subjects(SubjectsCommand::Unblock { config, subject }) => {
            ops(async move { ops::unblock(&config, &subject).await })
        }
        Command::Subjects(SubjectsCommand::List { config }) => ops(async move { ops::list_blocked(&config).await }),
        Command::Audit(AuditCommand::Verify { config }) => ops(async move { ops::verify(&config).await }),
        Command::Audit(AuditCommand::Export {
            config,
            from,
            to,
            patient,
            subject,
            format,
        }) => ops(async move {
            let mut out = std::io::stdout().lock();
            let summary = ops::export_records(
                &config,
                from.as_deref(),
                to.as_deref(),
                patient,
                subject,
                format == "fhir",
                &mut out,
            )
            .await?;
            eprintln!("{summary}");
            Ok(String::new())
        }),
        Command::Audit(AuditCommand::Report { config, from, to }) => {
            ops(async move { ops::report(&config, from.as_deref(), to.as_deref()).await })
        }
        Command::Audit(AuditCommand::Purge { config }) => ops(async move { ops::purge(&config).await }),
        Command::Keys(KeysCommand::Rotate { config, new_key_file }) => {
            ops(async move { ops::rotate_key(&config, &new_key_file).await })
        }
        Command::Keys(KeysCommand::Destroy { config, key_id }) => {
            ops(async move { ops::destroy_key(&config, &key_id).await })
        }
        Command::DevToken {
            data_dir,
            subject,
            scope,
            patient,
            count,
        } => {
            let issued = std::fs::create_dir_all(&data_dir)
                .map_err(|e| e.to_string())
                .and_then(|_| phr_gateway::demo::issuer::DevIssuer::ensure(&data_dir).map_err(|e| e.to_string()))
                .and_then(|dev| {
                    (0..count)
                        .map(|_| dev.token(&subject, &scope, patient.as_deref()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())
                });
            match issued {
                Ok(tokens) => {
                    println!("{}", tokens.join("\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Demo {
            data_dir,
            port,
            admin_port,
        } => block_on(async move { phr_gateway::demo::run(&data_dir, port, admin_port).await }),
        Command::Probe(args) => probe(args),
        Command::Health { url, timeout } => block_on_threads(1, async move {
            let answer = phr_gateway::healthcheck::check(&url, timeout).await?;
            println!("{answer}");
            Ok::<(), phr_gateway::healthcheck::HealthError>(())
        }),
    }
}

/// `check-config --security`: 0 clean, 1 findings, 2 unusable configuration.
fn security_lint(config: &std::path::Path, profile: Option<&std::path::Path>) -> ExitCode {
    match phr_gateway::compliance::security_lint(config, profile) {
        Err(e) => {
            eprintln!("phr-gateway: {e}");
            ExitCode::from(2)
        }
        Ok(findings) if findings.is_empty() => {
            println!("{}: no security findings", config.display());
            ExitCode::SUCCESS
        }
        Ok(findings) => {
            for f in &findings {
                println!("{f}");
            }
            eprintln!("{}: {} security finding(s)", config.display(), findings.len());
            ExitCode::from(1)
        }
    }
}

/// `compliance-report`: 0, 1 when --strict and a mandatory row is not met, 2 unusable input.
fn compliance_report(
    config: Option<PathBuf>,
    profile: Option<PathBuf>,
    format: &str,
    lang: &str,
    strict: bool,
    out: Option<PathBuf>,
    docs: bool,
) -> ExitCode {
    use phr_gateway::compliance::{self, render::Lang, Format};
    let unusable = |e: &dyn std::fmt::Display| {
        eprintln!("phr-gateway: {e}");
        ExitCode::from(2)
    };
    if docs {
        return match compliance::docs_text() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => unusable(&e),
        };
    }
    let (Some(config), Some(format), Some(lang)) = (config, Format::parse(format), Lang::parse(lang)) else {
        return unusable(&"give --config FILE");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return unusable(&e),
    };
    let report = match runtime.block_on(compliance::report(&config, profile.as_deref())) {
        Ok(report) => report,
        Err(e) => return unusable(&e),
    };
    let text = compliance::render(&report, format, lang);
    match &out {
        Some(file) => {
            if let Err(e) = std::fs::write(file, &text) {
                return unusable(&format!("{}: cannot write the report: {e}", file.display()));
            }
            eprintln!("{}: compliance report written", file.display());
        }
        None => print!("{text}"),
    }
    if strict && !report.strict_failures.is_empty() {
        eprintln!(
            "phr-gateway: mandatory controls not met: {} (see their rows)",
            report.strict_failures.join(", ")
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Runs `probe` or `probe upstreams`, prints one line per check (or JSON), writes the
/// JUnit file; exit status 0 all passed, 1 a check failed, 2 unusable input.
fn probe(args: ProbeArgs) -> ExitCode {
    use phr_gateway::probe;
    let (run, output) = match args.command {
        Some(ProbeCommand::Upstreams { config, output }) => (
            futures_util::future::Either::Left(async move { probe::upstreams::run(&config).await }),
            output,
        ),
        None => {
            let opts = probe::deployment::Options {
                url: args.url.unwrap_or_default(),
                ca: args.ca,
                token: args.token,
                other_patient: args.other_patient,
                allow_tls12: args.allow_tls12,
            };
            (
                futures_util::future::Either::Right(async move { probe::deployment::run(&opts).await }),
                args.output,
            )
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let report = match runtime.block_on(run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phr-gateway probe: {e}");
            return ExitCode::from(2);
        }
    };
    if output.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(&e),
        }
    } else {
        println!("{}", report.render_text());
    }
    if let Some(file) = output.junit {
        if let Err(e) = std::fs::write(&file, probe::junit::render(&report)) {
            eprintln!("phr-gateway probe: cannot write {}: {e}", file.display());
            return ExitCode::from(2);
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs an operator command and prints its result.
fn ops(fut: impl std::future::Future<Output = Result<String, ops::OpsError>>) -> ExitCode {
    block_on(async move {
        let text = fut.await?;
        if !text.is_empty() {
            println!("{}", text.trim_end());
        }
        Ok::<(), ops::OpsError>(())
    })
}

fn block_on<E: std::fmt::Display>(fut: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    block_on_threads(0, fut)
}

/// Runs `fut` on a runtime with `PHR_GATEWAY_WORKER_THREADS` threads, else
/// `configured` ones, else one per core (0 = not set).
fn block_on_threads<E: std::fmt::Display>(
    configured: usize,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let threads = std::env::var("PHR_GATEWAY_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .or(Some(configured))
        .filter(|n| *n > 0);
    // One thread asked for (a gateway pinned to one core): the single-threaded
    // scheduler, which skips the work-stealing machinery that has nobody to
    // steal from. Otherwise one worker per core, or the number asked for.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(fut);
    // Dropping a runtime waits for every blocking task; one stuck in a system call would
    // keep a drained gateway from exiting (a hand-over offer once did). Whatever must
    // finish (the drain, the access-record writer's flush and last checkpoint) has been
    // awaited by `fut`, so a bounded wait loses nothing.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("phr-gateway: {e}");
    tracing::error!(error = %e, "phr-gateway stopped");
    ExitCode::FAILURE
}

/// JSON log lines on stdout. No request header, cookie, token or body is ever logged.
fn init_logging(to_stdout: bool) {
    // rustls warns on every handshake that sends an IP address as SNI; a client could
    // flood the log with that, so only its errors are kept.
    let default = if to_stdout {
        "info,rustls=error"
    } else {
        "warn,rustls=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHR_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false);
    if to_stdout {
        builder.init();
    } else {
        builder.with_writer(std::io::stderr).init();
    }
}
