//! `phr-gateway probe URL`: runs every check against a live deployment, in an order
//! that keeps the probe from locking itself out: requests with the valid token first,
//! the five forged tokens last (a gateway's auth back-off, AUTH-LOCK-1, blocks an
//! address after a few failed authentications; by default after five).

use super::http::Response;
use super::target::{self, Client, ProbeTarget};
use super::{leaks, now_rfc3339, patients, tls, tokens, Check, ProbeInputError, Report};
use std::path::PathBuf;
use std::time::Instant;

/// HSTS max-age below this fails (one year, the usual preload minimum; EX-TLS-3).
pub const MIN_HSTS_SECONDS: u64 = 31_536_000;

/// What `probe URL` was given.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `https://HOST[:PORT]/BASE`.
    pub url: String,
    /// CA bundle the deployment's certificate must chain to (default: the system's).
    pub ca: Option<PathBuf>,
    /// A patient's access token.
    pub token: Option<String>,
    /// Another patient's id, which `token` must not reach.
    pub other_patient: Option<String>,
    /// Accept a deployment that also speaks TLS 1.2 (its listener allows it on purpose).
    pub allow_tls12: bool,
}

/// Runs every check; `Err` only for unusable input (exit status 2).
pub async fn run(opts: &Options) -> Result<Report, ProbeInputError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let target = ProbeTarget::parse(&opts.url)?;
    let roots = target::roots(opts.ca.as_deref())?;
    let client = Client::new(&target, roots.clone()).await?;
    let endpoint = tls::Endpoint {
        addr: client.addr(),
        name: target.server_name()?,
        timeout: target::TIMEOUT,
    };
    let token = opts.token.as_deref();
    let mut seen: Vec<(String, Response)> = Vec::new();

    let tls_checks = tls::checks(&endpoint, roots, opts.allow_tls12).await;
    let patient_checks = patients::checks(&client, token, opts.other_patient.as_deref(), &mut seen).await;
    let leaks_started = Instant::now();
    leaks::trigger(&client, token, &mut seen).await;
    let token_checks = tokens::checks(&client, &tokens::Model::new(token), &mut seen).await;
    let hsts_check = hsts(&seen, Instant::now());
    let leak_check = leaks::check(&client, &seen, leaks_started);

    let mut checks = tls_checks;
    checks.push(hsts_check);
    checks.extend(token_checks);
    checks.extend(patient_checks);
    checks.push(leak_check);
    Ok(Report::new("probe", &opts.url, started_at, started, checks))
}

/// Every response seen must carry `Strict-Transport-Security` with a max-age of at least
/// a year (EX-TLS-3).
fn hsts(seen: &[(String, Response)], started: Instant) -> Check {
    const NAME: &str = "http.hsts";
    if seen.is_empty() {
        return Check::fail(NAME, "no response to look at", started);
    }
    for (label, resp) in seen {
        let Some(value) = resp.headers.get("strict-transport-security") else {
            return Check::fail(
                NAME,
                format!(
                    "{label} ({}): no Strict-Transport-Security header; set gateway.hsts_max_age",
                    resp.status
                ),
                started,
            );
        };
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        let max_age = value
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("max-age="))
            .find_map(|v| v.trim_matches('"').parse::<u64>().ok());
        match max_age {
            Some(s) if s >= MIN_HSTS_SECONDS => {}
            _ => {
                return Check::fail(
                    NAME,
                    format!(
                    "{label}: Strict-Transport-Security {value:?} has max-age below {MIN_HSTS_SECONDS} s (one year)"
                ),
                    started,
                )
            }
        }
    }
    let example = seen
        .first()
        .and_then(|(_, r)| r.headers.get("strict-transport-security"))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
        .unwrap_or_default();
    Check::pass(NAME, format!("{} response(s) carry {example:?}", seen.len()), started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Outcome;

    fn resp(hsts: Option<&str>) -> (String, Response) {
        let mut headers = ::http::HeaderMap::new();
        if let Some(v) = hsts {
            headers.insert("strict-transport-security", v.parse().unwrap());
        }
        (
            "r".into(),
            Response {
                status: 401,
                headers,
                body: Default::default(),
            },
        )
    }

    #[test]
    fn hsts_needs_a_year_on_every_response() {
        let t = Instant::now();
        let year = Some("max-age=31536000; includeSubDomains");
        assert_eq!(hsts(&[resp(year), resp(year)], t).outcome, Outcome::Pass);
        assert_eq!(hsts(&[resp(year), resp(None)], t).outcome, Outcome::Fail);
        assert_eq!(hsts(&[resp(Some("max-age=3600"))], t).outcome, Outcome::Fail);
        assert_eq!(hsts(&[], t).outcome, Outcome::Fail);
    }
}
