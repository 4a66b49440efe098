//! DPoP proof-of-possession (RFC 9449; なりすまし対策).
//!
//! A DPoP-bound token (`cnf.jkt`) is only accepted together with a fresh
//! proof JWT signed by the client's key, so a leaked token cannot be
//! replayed by someone else. Checks (RFC 9449 §4.3): one `DPoP` header,
//! `typ = dpop+jwt`, an asymmetric `alg`, a *public* `jwk` in the header
//! (here the key does come from the header — that is the design; what binds
//! it is the token's `cnf.jkt` thumbprint), valid signature, `htm`/`htu`
//! equal to this request, `iat` within the window, `ath` = hash of the
//! token, thumbprint = `cnf.jkt`, and a `jti` not seen before (replay cache
//! keyed by jti+thumbprint, entries live twice the window).

use std::time::Duration;

use jsonwebtoken::Algorithm;
use moka::sync::Cache;
use serde_json::{Map, Value};

use super::error::DpopError;
use super::jwks::parse_public_jwk;
use super::jwt::{b64url, decode_part, sha256, split};

/// Algorithms accepted for proofs (asymmetric only), as advertised in the
/// `algs` challenge parameter.
pub const DPOP_ALGS: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];

/// Largest proof accepted (an RSA-4096 `jwk` fits comfortably).
const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Why a JWK thumbprint could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ThumbprintError {
    /// A `kty` other than EC, RSA and OKP.
    #[error("unsupported kty for thumbprint")]
    UnsupportedKty,
    /// A member the thumbprint covers is missing (or not a string).
    #[error("JWK member {0} missing")]
    MissingMember(&'static str),
    /// A member could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// RFC 7638 JWK SHA-256 thumbprint (base64url): SHA-256 over the JSON of
/// the required members in lexicographic order, without whitespace.
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Result<String, ThumbprintError> {
    let members: &[&'static str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("RSA") => &["e", "kty", "n"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => return Err(ThumbprintError::UnsupportedKty),
    };
    let mut out = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let v = jwk
            .get(*m)
            .and_then(Value::as_str)
            .ok_or(ThumbprintError::MissingMember(m))?;
        if i > 0 {
            out.push(',');
        }
        // serde_json escapes exactly as JSON requires.
        out.push_str(&serde_json::to_string(m)?);
        out.push(':');
        out.push_str(&serde_json::to_string(v)?);
    }
    out.push('}');
    Ok(b64url(&sha256(out.as_bytes())))
}

/// `scheme://host[:port]/path` with scheme and host lower-cased, default
/// ports dropped, query and fragment removed (RFC 9449 §4.3 item 9).
pub fn normalize_htu(url: &str) -> Option<String> {
    let base = url.split(['?', '#']).next()?;
    let uri: http::Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = match (scheme.as_str(), uri.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => String::new(),
        (_, Some(p)) => format!(":{p}"),
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(format!("{scheme}://{host}{port}{path}"))
}

/// Verifies DPoP proofs and remembers their `jti`s.
pub struct DpopVerifier {
    window: Duration,
    seen: Cache<String, ()>,
}

impl DpopVerifier {
    /// A verifier accepting `iat` within ±`window`, remembering up to
    /// `capacity` proofs for `2 × window`.
    pub fn new(window: Duration, capacity: u64) -> Self {
        Self {
            window,
            seen: Cache::builder().max_capacity(capacity).time_to_live(window * 2).build(),
        }
    }

    /// Verify `proof` for this request and token. `htu` is the request URL
    /// as the client addressed it; `cnf_jkt` the token's bound thumbprint.
    pub fn verify(
        &self,
        proof: &str,
        method: &http::Method,
        htu: &str,
        access_token: &str,
        cnf_jkt: &str,
        now: i64,
    ) -> Result<(), DpopError> {
        let bad = |m: &str| DpopError::Malformed(m.to_string());
        if proof.len() > MAX_PROOF_BYTES {
            return Err(bad("proof too large"));
        }
        let (h, p, _) = split(proof).map_err(|_| bad("not a compact JWS"))?;
        let header = decode_part(h, "header").map_err(|_| bad("header"))?;
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(DpopError::BadTyp);
        }
        let alg_s = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if !DPOP_ALGS.contains(&alg_s) {
            return Err(DpopError::AlgNotAllowed(super::jwt::short(alg_s)));
        }
        let alg: Algorithm = alg_s.parse().map_err(|_| bad("alg"))?;
        if ["jku", "x5u", "x5c", "crit"].iter().any(|m| header.contains_key(*m)) {
            return Err(bad("proof header has jku/x5u/x5c/crit"));
        }
        let jwk_v = header.get("jwk").ok_or_else(|| DpopError::BadJwk("missing".into()))?;
        let key = parse_public_jwk(jwk_v).map_err(|e| DpopError::BadJwk(e.to_string()))?;
        if !key.kind.fits(alg) || key.alg.is_some_and(|a| a != alg) {
            return Err(DpopError::BadJwk("key type does not fit alg".into()));
        }
        let jwk_obj = jwk_v.as_object().ok_or_else(|| bad("jwk"))?;
        let jkt = jwk_thumbprint(jwk_obj).map_err(|e| DpopError::BadJwk(e.to_string()))?;
        super::jwt::verify(proof, &key.key, alg).map_err(|_| DpopError::BadSignature)?;
        // Signature good: the payload is the client's own statement now.
        let claims = decode_part(p, "payload").map_err(|_| bad("payload"))?;
        let s = |k: &str| claims.get(k).and_then(Value::as_str);
        let jti = s("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| bad("jti"))?;
        if s("htm") != Some(method.as_str()) {
            return Err(DpopError::HtmMismatch);
        }
        let want = normalize_htu(htu).ok_or_else(|| bad("request URL not absolute"))?;
        if s("htu").and_then(normalize_htu).as_deref() != Some(want.as_str()) {
            return Err(DpopError::HtuMismatch);
        }
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| bad("iat"))?;
        if now.saturating_sub(iat).unsigned_abs() > self.window.as_secs() {
            return Err(DpopError::IatOutOfWindow { iat, now });
        }
        if s("ath") != Some(b64url(&sha256(access_token.as_bytes())).as_str()) {
            return Err(DpopError::AthMismatch);
        }
        if !super::cert_binding::ct_eq(jkt.as_bytes(), cnf_jkt.as_bytes()) {
            return Err(DpopError::JktMismatch);
        }
        // Last, so an invalid proof cannot burn a jti.
        let entry = self.seen.entry(format!("{jkt}|{jti}")).or_insert(());
        if !entry.is_fresh() {
            return Err(DpopError::Replay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1 example key and thumbprint.
        let jwk = json!({"kty":"RSA",
          "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
          "e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        assert_eq!(
            jwk_thumbprint(jwk.as_object().unwrap()).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn htu_is_compared_without_case_default_port_query_or_fragment() {
        let n = |s| normalize_htu(s).unwrap();
        assert_eq!(
            n("HTTPS://API.Example.jp:443/fhir/Patient?x=1#f"),
            "https://api.example.jp/fhir/Patient"
        );
        assert_eq!(n("https://api.example.jp"), "https://api.example.jp/");
        assert_eq!(n("https://api.example.jp:8443/a"), "https://api.example.jp:8443/a");
        assert_ne!(n("https://api.example.jp/a"), n("https://api.example.jp/b"));
        assert!(normalize_htu("/relative").is_none());
    }
}
