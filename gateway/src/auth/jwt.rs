//! JWT parsing, header screening, signature verification and claim checks
//! (AUTH-ID-1, なりすまし対策).
//!
//! The header is screened on its raw JSON *before* anything trusts it:
//! `alg: none`, unknown algorithms, `crit`, and any key material or key
//! location (`jku`, `x5u`, `jwk`, `x5c`) are refused outright — keys only
//! ever come from the issuer's configured JWKS. Signature checking is done by
//! `jsonwebtoken`; the claim checks are done here so each failure has its
//! own precise [`AuthError`] and the clock is the gateway's.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::AuthError;
use crate::config::auth::IssuerConfig;

/// base64url without padding (JOSE encoding).
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// SHA-256 of a token string: cache key, `ath` input, and the only form in
/// which a token may appear in logs.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The three parts of a compact JWS, refusing anything else (JWE has five).
pub fn split(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(AuthError::Malformed("not a compact JWS".into())),
    }
}

/// Decode one base64url JSON object part.
pub fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Malformed(format!("{what} is not a JSON object"))),
    }
}

/// Header members that carry a key or say where to fetch one.
pub const KEY_MEMBERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// Screen an access-token header: returns the algorithm and `kid`.
pub fn screen_header(h: &Map<String, Value>) -> Result<(Algorithm, Option<String>), AuthError> {
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(AuthError::Malformed("header has no alg".into())),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNone);
    }
    for m in KEY_MEMBERS {
        if h.contains_key(m) {
            return Err(AuthError::KeyInHeader(m));
        }
    }
    if h.contains_key("crit") || h.contains_key("b64") {
        return Err(AuthError::CritHeader);
    }
    let alg: Algorithm = alg.parse().map_err(|_| AuthError::AlgNotAllowed(short(alg)))?;
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed("kid is not a string".into())),
    };
    Ok((alg, kid))
}

/// Truncate attacker-chosen text before it goes into errors/logs.
pub fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Verify the signature with `key` for exactly `alg`, returning the payload.
/// Claim validation is switched off here and done by [`TokenClaims::check`].
pub fn verify(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, AuthError> {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::KeyTypeMismatch {
                alg: format!("{alg:?}"),
                kty: "other".into(),
            },
            k => AuthError::Malformed(format!("{k:?}")),
        })
}

/// Claims the gateway uses, taken from a *verified* payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub` (required: every request must name a user, AUTH-ID-1).
    pub subject: String,
    /// `aud` as a list (string or array in the token).
    pub audiences: Vec<String>,
    /// `exp`.
    pub exp: i64,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `iat`.
    pub iat: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
    /// `client_id`, else `azp`.
    pub client_id: Option<String>,
    /// `scope` (space-separated) ∪ `scp` (string or array), sorted, deduplicated.
    pub scopes: BTreeSet<String>,
    /// SMART on FHIR launch context `patient`.
    pub patient: Option<String>,
    /// SMART `fhirUser`.
    pub fhir_user: Option<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `auth_time`.
    pub auth_time: Option<i64>,
    /// `cnf["x5t#S256"]` (RFC 8705).
    pub cnf_x5t_s256: Option<String>,
    /// `cnf.jkt` (RFC 9449).
    pub cnf_jkt: Option<String>,
}

fn num(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, AuthError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| AuthError::Malformed(format!("{k} is not a NumericDate"))),
        Some(_) => Err(AuthError::Malformed(format!("{k} is not a number"))),
    }
}

fn string(m: &Map<String, Value>, k: &str) -> Result<Option<String>, AuthError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::Malformed(format!("{k} is not a string"))),
    }
}

fn strings(m: &Map<String, Value>, k: &str, split_spaces: bool) -> Result<Vec<String>, AuthError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if split_spaces => Ok(s.split_ascii_whitespace().map(String::from).collect()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AuthError::Malformed(format!("{k} has a non-string member"))),
        Some(_) => Err(AuthError::Malformed(format!("{k} is not a string or array"))),
    }
}

impl TokenClaims {
    /// Extract and type-check the claims; `exp` and `sub` are mandatory.
    pub fn from_payload(m: &Map<String, Value>) -> Result<Self, AuthError> {
        let cnf = match m.get("cnf") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => return Err(AuthError::Malformed("cnf is not an object".into())),
        };
        let mut scopes: BTreeSet<String> = strings(m, "scope", true)?.into_iter().collect();
        scopes.extend(strings(m, "scp", true)?);
        Ok(Self {
            issuer: string(m, "iss")?.ok_or_else(|| AuthError::MissingClaim("iss".into()))?,
            subject: string(m, "sub")?.ok_or_else(|| AuthError::MissingClaim("sub".into()))?,
            audiences: strings(m, "aud", false)?,
            exp: num(m, "exp")?.ok_or_else(|| AuthError::MissingClaim("exp".into()))?,
            nbf: num(m, "nbf")?,
            iat: num(m, "iat")?,
            jti: string(m, "jti")?,
            client_id: string(m, "client_id")?.or(string(m, "azp")?),
            scopes,
            patient: string(m, "patient")?,
            fhir_user: string(m, "fhirUser")?,
            amr: strings(m, "amr", false)?,
            acr: string(m, "acr")?,
            auth_time: num(m, "auth_time")?,
            cnf_x5t_s256: string(&cnf, "x5t#S256")?,
            cnf_jkt: string(&cnf, "jkt")?,
        })
    }

    /// Time, audience and required-claim checks for `cfg` at `now`.
    pub fn check(&self, payload: &Map<String, Value>, cfg: &IssuerConfig, now: i64) -> Result<(), AuthError> {
        self.check_times(cfg, now)?;
        if !self.audiences.iter().any(|a| cfg.audiences.contains(a)) {
            return Err(AuthError::BadAudience);
        }
        for c in &cfg.required_claims {
            if payload.get(c).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim(c.clone()));
            }
        }
        Ok(())
    }

    /// The time-dependent checks (`exp`, `nbf`, `iat`, `max_token_age`):
    /// re-run on every cache hit, since a cached token ages too.
    pub fn check_times(&self, cfg: &IssuerConfig, now: i64) -> Result<(), AuthError> {
        let skew = cfg.clock_skew.as_secs() as i64;
        if now > self.exp.saturating_add(skew) {
            return Err(AuthError::Expired { exp: self.exp, now });
        }
        if let Some(nbf) = self.nbf {
            if nbf > now.saturating_add(skew) {
                return Err(AuthError::NotYetValid { nbf, now });
            }
        }
        if let Some(iat) = self.iat {
            if iat > now.saturating_add(skew) {
                return Err(AuthError::BadIssuedAt { iat, now });
            }
        }
        if let Some(max) = cfg.max_token_age {
            let iat = self.iat.ok_or_else(|| AuthError::MissingClaim("iat".into()))?;
            if now.saturating_sub(iat) > max.as_secs() as i64 + skew {
                return Err(AuthError::BadIssuedAt { iat, now });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn headers_with_alg_none_embedded_keys_or_crit_are_refused() {
        assert_eq!(screen_header(&obj(json!({"alg":"none"}))), Err(AuthError::AlgNone));
        assert_eq!(screen_header(&obj(json!({"alg":"NONE"}))), Err(AuthError::AlgNone));
        for m in KEY_MEMBERS {
            let h = obj(json!({"alg":"ES256", m: "x"}));
            assert_eq!(screen_header(&h), Err(AuthError::KeyInHeader(m)));
        }
        assert_eq!(
            screen_header(&obj(json!({"alg":"ES256","crit":["exp"]}))),
            Err(AuthError::CritHeader)
        );
        assert_eq!(
            screen_header(&obj(json!({"alg":"XS1"}))).unwrap_err().code(),
            "alg_not_allowed"
        );
        assert_eq!(
            screen_header(&obj(json!({"alg":"ES256","kid":"k"}))),
            Ok((Algorithm::ES256, Some("k".into())))
        );
    }

    #[test]
    fn scope_and_scp_claims_are_merged_and_exp_is_required() {
        let c = TokenClaims::from_payload(&obj(json!({
            "iss":"i","sub":"s","exp":1,"aud":"a",
            "scope":"patient/*.read  openid", "scp":["openid","fhirUser"]
        })))
        .unwrap();
        let v: Vec<_> = c.scopes.into_iter().collect();
        assert_eq!(v, ["fhirUser", "openid", "patient/*.read"]);
        assert_eq!(c.audiences, ["a"]);
        let e = TokenClaims::from_payload(&obj(json!({"iss":"i","sub":"s","aud":"a"})));
        assert_eq!(e.unwrap_err(), AuthError::MissingClaim("exp".into()));
    }

    #[test]
    fn split_refuses_jwe_and_garbage() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b.c.d.e").is_err());
        assert!(split("abc").is_err());
    }
}
