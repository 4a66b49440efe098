//! `phr-gateway residency import-apnic` and `phr-gateway residency report`: the
//! allow-list from public data, and the evidence of where every target is (DATA-JP-1,
//! DATA-LOC-1).

use super::apnic::{parse_apnic, write_allow_list, ApnicError, SourceNote};
use super::report::{build_report, TargetResolution};
use super::storage_check::{policy_of, resolve_target, StorageCheckError};
use crate::config::LoadError;
use crate::residency::egress::UpstreamResolver;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a residency command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The APNIC statistics file could not be opened.
    #[error("{}: {source}", path.display())]
    OpenInput {
        /// The input file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The APNIC statistics file is not usable.
    #[error("{}: {source}", path.display())]
    ParseInput {
        /// The input file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ApnicError,
    },
    /// The allow-list text could not be produced.
    #[error(transparent)]
    Render(std::io::Error),
    /// The allow-list file could not be written.
    #[error("{}: {source}", path.display())]
    WriteOutput {
        /// The output file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration does not load.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The residency policy of the configuration could not be built.
    #[error(transparent)]
    ResidencyPolicy(#[from] StorageCheckError),
    /// The report could not be serialised as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Converts APNIC delegated statistics into an allow-list file; returns a summary line.
pub fn import_apnic(input: &Path, out: &Path, country: &str) -> Result<String, CommandError> {
    let file = std::fs::File::open(input).map_err(|source| CommandError::OpenInput {
        path: input.to_path_buf(),
        source,
    })?;
    let import = parse_apnic(std::io::BufReader::new(file), country).map_err(|source| CommandError::ParseInput {
        path: input.to_path_buf(),
        source,
    })?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let note = SourceNote::from_header(&name, &import.header, country);
    let mut text = Vec::new();
    write_allow_list(&import.nets, &mut text, &note).map_err(CommandError::Render)?;
    std::fs::write(out, text).map_err(|source| CommandError::WriteOutput {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(format!(
        "{}: {} {country} ranges from {} records written to {}",
        input.display(),
        import.nets.len(),
        import.records_taken,
        out.display()
    ))
}

/// Resolves every target of a config and checks each address; returns the report text
/// (or JSON) and whether everything is in order.
pub async fn report(config_path: &Path, json: bool) -> Result<(String, bool), CommandError> {
    let config = crate::config::load(config_path)?;
    let r = &config.residency;
    let policy = policy_of(&config)?;
    let resolver = UpstreamResolver::new(r.hosts_file.as_deref());
    let mut inputs = Vec::new();
    for target in super::targets::from_config(&config) {
        let addresses = resolve_target(&config, &resolver, &target)
            .await
            .map(|found| found.iter().map(SocketAddr::ip).collect())
            .map_err(|e| e.to_string());
        inputs.push(TargetResolution { target, addresses });
    }
    let report = build_report(&policy, &r.required, &inputs);
    let text = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.render_text()
    };
    Ok((text, report.ok))
}
