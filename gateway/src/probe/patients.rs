//! One patient's token must not reach another patient's data (ACL-ROLE-1, ACL-PHR-1: the
//! FHIR patient compartment): `GET Patient/<other>` and `GET Observation?patient=<other>` must be
//! refused (403/404) or answer without any of the other patient's resources.

use super::target::Client;
use super::{http::Response, Check};
use std::time::Instant;

/// `patients.read` and `patients.search`; skipped without `--token` and
/// `--other-patient`.
pub async fn checks(
    client: &Client,
    token: Option<&str>,
    other: Option<&str>,
    seen: &mut Vec<(String, Response)>,
) -> Vec<Check> {
    let started = Instant::now();
    let (Some(token), Some(other)) = (token, other) else {
        let why = "needs --token (a patient's token) and --other-patient (another patient's id)";
        return vec![
            Check::skip("patients.read", why, started),
            Check::skip("patients.search", why, started),
        ];
    };
    let encoded = encode(other);
    let mut out = Vec::new();
    for (name, rel) in [
        ("patients.read", format!("Patient/{encoded}")),
        ("patients.search", format!("Observation?patient={encoded}")),
    ] {
        let started = Instant::now();
        let check = match client.get(&rel, Some(token)).await {
            Ok(resp) => {
                let check = verdict(name, &rel, other, &resp, started);
                seen.push((name.to_string(), resp));
                check
            }
            Err(e) => Check::fail(name, format!("GET {rel}: no answer: {e}"), started),
        };
        out.push(check);
    }
    out
}

/// Percent-encodes what is not safe in a path segment or query value.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `resp` to `GET rel` shows any of `other`'s data.
fn verdict(name: &str, rel: &str, other: &str, resp: &Response, started: Instant) -> Check {
    match resp.status {
        403 | 404 => Check::pass(name, format!("GET {rel} refused with {}", resp.status), started),
        401 => Check::fail(
            name,
            format!("GET {rel}: the given --token was refused (401); pass a valid, unexpired patient token"),
            started,
        ),
        200..=299 => {
            if shows_patient(&resp.body, other) {
                Check::fail(
                    name,
                    format!("GET {rel} answered {} with patient {other}'s data: one patient's token reads another's (enable fhir = true and auth on the route)", resp.status),
                    started,
                )
            } else {
                Check::pass(
                    name,
                    format!("GET {rel} answered {} without patient {other}'s data", resp.status),
                    started,
                )
            }
        }
        s => Check::fail(
            name,
            format!("GET {rel} answered {s}; expected 403, 404 or no foreign data"),
            started,
        ),
    }
}

/// True when the body is that patient's resource or references it anywhere.
fn shows_patient(body: &[u8], other: &str) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        // Not JSON: a plain mention of the reference still counts.
        return String::from_utf8_lossy(body).contains(&format!("Patient/{other}"));
    };
    mentions(&value, other)
}

fn mentions(v: &serde_json::Value, other: &str) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let is_patient = map.get("resourceType").and_then(Value::as_str) == Some("Patient")
                && map.get("id").and_then(Value::as_str) == Some(other);
            let reference = format!("Patient/{other}");
            is_patient
                || map.iter().any(|(k, val)| {
                    (k == "reference"
                        && val
                            .as_str()
                            .is_some_and(|r| r == reference || r.ends_with(&format!("/{reference}"))))
                        || mentions(val, other)
                })
        }
        Value::Array(items) => items.iter().any(|i| mentions(i, other)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_patient_or_a_reference_to_it() {
        let own = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}}]});
        let foreign = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p2"}}}]});
        assert!(!mentions(&own, "p2"));
        assert!(mentions(&foreign, "p2"));
        assert!(mentions(&json!({"resourceType": "Patient", "id": "p2"}), "p2"));
        assert!(!mentions(&json!({"resourceType": "Patient", "id": "p22"}), "p2"));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
