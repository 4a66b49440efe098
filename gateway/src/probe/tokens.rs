//! Forged tokens must be refused with 401 (AUTH-ID-1): unsigned (`alg: none`), signed
//! with a fresh random key (under the real `kid` when one is known), expired, for
//! another audience and from another issuer.
//!
//! From outside, the probe holds no issuer key, so the expired, wrong-audience and
//! wrong-issuer tokens are signed with the fresh key too: they show that no such token
//! gets through, not which of the gateway's checks stopped it (the unit tests of
//! `auth::jwt` cover each claim check with real keys). Claims are copied from `--token`
//! when given, so only the one property under test is wrong.

use super::target::Client;
use super::{http::Response, Check};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Instant;

/// Issuer and audience used without `--token`: plausible, never a real issuer.
const DEFAULT_ISSUER: &str = "https://issuer.phr-gateway-probe.invalid";
const DEFAULT_AUDIENCE: &str = "phr-gateway";

/// What the forged tokens are modelled on.
#[derive(Debug, Clone)]
pub struct Model {
    /// Claims of the given token (or plausible defaults).
    pub claims: Value,
    /// `kid` of the given token, if any.
    pub kid: Option<String>,
}

impl Model {
    /// From `--token` when given (its claims and `kid`), else plausible defaults.
    pub fn new(token: Option<&str>) -> Self {
        let now = now();
        let default_claims = json!({
            "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "phr-gateway-probe",
            "scope": "openid patient/*.rs", "iat": now, "exp": now + 600,
        });
        let Some(token) = token else {
            return Self {
                claims: default_claims,
                kid: None,
            };
        };
        let mut parts = token.split('.');
        let header = parts.next().and_then(decode_part);
        let claims = parts.next().and_then(decode_part).unwrap_or(default_claims);
        Self {
            claims,
            kid: header.and_then(|h| h["kid"].as_str().map(str::to_string)),
        }
    }
}

fn decode_part(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The forgeries: (check name, token).
pub fn forgeries(model: &Model) -> Result<Vec<(&'static str, String)>, String> {
    let now = now();
    let mut valid = model.claims.clone();
    valid["iat"] = json!(now);
    valid["nbf"] = json!(now - 5);
    valid["exp"] = json!(now + 600);
    valid["jti"] = json!(format!("probe-{}", uuid::Uuid::new_v4()));
    let unsigned = {
        let header = json!({"alg": "none", "typ": "JWT"});
        format!("{}.{}.", b64(&header), b64(&valid))
    };
    let mut expired = valid.clone();
    expired["iat"] = json!(now - 7200);
    expired["nbf"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let mut wrong_aud = valid.clone();
    wrong_aud["aud"] = json!("https://other-audience.phr-gateway-probe.invalid");
    let mut wrong_iss = valid.clone();
    wrong_iss["iss"] = json!("https://forged-issuer.phr-gateway-probe.invalid");
    let kid = model.kid.as_deref();
    Ok(vec![
        ("tokens.unsigned", unsigned),
        ("tokens.wrong_key", sign_fresh(&valid, kid)?),
        ("tokens.expired", sign_fresh(&expired, kid)?),
        ("tokens.wrong_audience", sign_fresh(&wrong_aud, kid)?),
        ("tokens.wrong_issuer", sign_fresh(&wrong_iss, kid)?),
    ])
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Signs `claims` (ES256) with a key made for this one token.
fn sign_fresh(claims: &Value, kid: Option<&str>) -> Result<String, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.unwrap_or("phr-gateway-probe").to_string());
    jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| format!("cannot sign a token: {e}"))
}

/// Sends each forgery to `BASE/Patient` and expects 401. Error responses are kept in
/// `seen` for the leak check.
pub async fn checks(client: &Client, model: &Model, seen: &mut Vec<(String, Response)>) -> Vec<Check> {
    let started = Instant::now();
    let forged = match forgeries(model) {
        Ok(f) => f,
        Err(e) => return vec![Check::fail("tokens", e, started)],
    };
    let mut out = Vec::new();
    for (name, token) in forged {
        let started = Instant::now();
        let check = match client.get("Patient", Some(&token)).await {
            Ok(resp) => {
                let check = verdict(name, resp.status, started);
                seen.push((name.to_string(), resp));
                check
            }
            Err(e) => Check::fail(name, format!("no answer: {e}"), started),
        };
        out.push(check);
    }
    out
}

fn verdict(name: &str, status: u16, started: Instant) -> Check {
    match status {
        401 => Check::pass(name, "refused with 401", started),
        429 => Check::fail(
            name,
            "answered 429 before the token was judged (rate limit or auth back-off); probe from an address the limits exempt, or wait",
            started,
        ),
        s if (200..400).contains(&s) || s == 403 || s == 404 => Check::fail(
            name,
            format!("accepted: answered {s} instead of 401; the route must require and verify tokens ([routes.auth] mode = \"required\")"),
            started,
        ),
        s => Check::fail(name, format!("answered {s} instead of 401"), started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgeries_copy_the_claims_and_break_one_property_each() {
        let model = Model {
            claims: json!({"iss": "https://i", "aud": "a", "sub": "s", "patient": "p1"}),
            kid: Some("k1".into()),
        };
        let forged = forgeries(&model).unwrap();
        let names: Vec<&str> = forged.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "tokens.unsigned",
                "tokens.wrong_key",
                "tokens.expired",
                "tokens.wrong_audience",
                "tokens.wrong_issuer"
            ]
        );
        let claims = |i: usize| decode_part(forged[i].1.split('.').nth(1).unwrap()).unwrap();
        let header = |i: usize| decode_part(forged[i].1.split('.').next().unwrap()).unwrap();
        assert_eq!(header(0)["alg"], "none");
        assert!(forged[0].1.ends_with('.'));
        assert_eq!(header(1)["kid"], "k1");
        assert_eq!(claims(1)["patient"], "p1");
        assert!(claims(2)["exp"].as_i64().unwrap() < now());
        assert_ne!(claims(3)["aud"], "a");
        assert_ne!(claims(4)["iss"], "https://i");
        assert_eq!(claims(4)["aud"], "a");
    }

    #[test]
    fn only_401_passes() {
        let t = Instant::now();
        assert_eq!(verdict("x", 401, t).outcome, super::super::Outcome::Pass);
        for s in [200, 403, 404, 429, 500] {
            assert_eq!(verdict("x", s, t).outcome, super::super::Outcome::Fail, "{s}");
        }
    }
}
