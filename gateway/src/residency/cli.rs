//! `phr-gateway residency import-apnic` and `phr-gateway residency report`: the
//! allow-list from public data, and the evidence of where every target is (DATA-JP-1,
//! DATA-LOC-1).

use super::allow_list::AllowList;
use super::apnic::{parse_apnic, write_allow_list, SourceNote};
use super::policy::Policy;
use super::report::{build_report, TargetResolution};
use crate::proxy::egress::UpstreamResolver;
use crate::proxy::Endpoint;
use std::path::Path;

/// Converts APNIC delegated statistics into an allow-list file; returns a summary line.
pub fn import_apnic(input: &Path, out: &Path, country: &str) -> Result<String, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let import =
        parse_apnic(std::io::BufReader::new(file), country).map_err(|e| format!("{}: {e}", input.display()))?;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let note = SourceNote::from_header(&name, &import.header, country);
    let mut text = Vec::new();
    write_allow_list(&import.nets, &mut text, &note).map_err(|e| e.to_string())?;
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
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
pub async fn report(config_path: &Path, json: bool) -> Result<(String, bool), String> {
    let config = crate::config::load(config_path).map_err(|e| e.to_string())?;
    let r = &config.residency;
    let allow = AllowList::load(&r.allowed_networks, &r.allowed_networks_files).map_err(|e| e.to_string())?;
    let policy = Policy::new(allow);
    let resolver = UpstreamResolver::new(r.hosts_file.as_deref());
    let mut inputs = Vec::new();
    for target in super::targets::from_config(&config) {
        let mut addresses = Ok(Vec::new());
        for url in &config.upstreams[&target.name].endpoints {
            let resolved = match Endpoint::parse(url) {
                Ok(ep) => resolver.resolve(&ep.host, ep.port).await,
                Err(e) => Err(e),
            };
            addresses = match (addresses, resolved) {
                (Ok(mut all), Ok(found)) => {
                    all.extend(found.into_iter().map(|a| a.ip()));
                    Ok(all)
                }
                (Err(e), _) | (_, Err(e)) => Err(format!("{url}: {e}")),
            };
        }
        inputs.push(TargetResolution { target, addresses });
    }
    let report = build_report(&policy, &r.required, &inputs);
    let text = if json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    } else {
        report.render_text()
    };
    Ok((text, report.ok))
}
