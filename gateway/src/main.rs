//! The `phr-gateway` command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    },
    /// Domestic-only egress: build the allow-list, report where every target is.
    #[command(subcommand)]
    Residency(ResidencyCommand),
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
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => match phr_gateway::config::load(&config) {
            Err(e) => fail(&e),
            Ok(cfg) => match phr_gateway::runtime::Runtime::check(&cfg) {
                Err(e) => fail(&e),
                Ok(()) => {
                    println!("{}: configuration is valid", config.display());
                    ExitCode::SUCCESS
                }
            },
        },
        Command::Run { config } => block_on(async move { phr_gateway::app::run(&config, |_, _| {}).await }),
        Command::Residency(ResidencyCommand::ImportApnic { file, out, country }) => {
            match phr_gateway::residency::cli::import_apnic(&file, &out, &country) {
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
                let (text, all_ok) = phr_gateway::residency::cli::report(&config, json).await?;
                println!("{text}");
                ok = all_ok;
                Ok::<(), String>(())
            });
            if code == ExitCode::SUCCESS && !ok {
                return ExitCode::FAILURE;
            }
            code
        }
        Command::Demo {
            data_dir,
            port,
            admin_port,
        } => block_on(async move { phr_gateway::demo::run(&data_dir, port, admin_port).await }),
    }
}

fn block_on<E: std::fmt::Display>(fut: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = std::env::var("PHR_GATEWAY_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(fut) {
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
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHR_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}
