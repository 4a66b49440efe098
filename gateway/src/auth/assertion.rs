//! Gateway assertion: a short-lived JWT the gateway signs with its own key
//! and adds to the upstream request, so a backend can verify that a request
//! really came through the gateway and carries the identity the gateway
//! established (なりすまし対策 on the gateway→backend hop; complements
//! mTLS to the backend, EX-MTLS-1).
//!
//! Plain identity headers can be forged by anything that reaches the
//! backend directly; this assertion cannot without the gateway's key.
//! Only asymmetric algorithms (ES256, EdDSA) are offered, so backends hold
//! nothing secret; they verify with [`AssertionSigner::public_jwk`].

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::identity::Identity;
use super::jwt::{b64url, sha256};

/// Lifetime of an assertion: one request, with room for clock skew.
pub const ASSERTION_TTL_SECS: i64 = 60;

/// Why an assertion signer could not be made, or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// Only ES256 and EdDSA are offered.
    #[error("{0:?} not supported; use ES256 or EdDSA")]
    UnsupportedAlg(Algorithm),
    /// The key does not sign with the algorithm.
    #[error("unusable key: {0}")]
    UnusableKey(#[source] jsonwebtoken::errors::Error),
    /// The public JWK could not be derived, or a token could not be signed.
    #[error(transparent)]
    Jwt(jsonwebtoken::errors::Error),
    /// The public JWK could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Signs gateway assertions.
pub struct AssertionSigner {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    issuer: String,
    audience: String,
    seq: AtomicU64,
}

impl AssertionSigner {
    /// Signer from a PKCS#8 DER private key (P-256 for ES256, Ed25519 for
    /// EdDSA). `issuer` names the gateway, `audience` the backend(s).
    /// The key is tried once here, so a bad key fails at start-up.
    pub fn from_pkcs8_der(
        der: &[u8],
        alg: Algorithm,
        kid: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, AssertionError> {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_der(der),
            Algorithm::EdDSA => EncodingKey::from_ed_der(der),
            other => return Err(AssertionError::UnsupportedAlg(other)),
        };
        jsonwebtoken::crypto::sign(b"probe", &key, alg).map_err(AssertionError::UnusableKey)?;
        Ok(Self {
            key,
            alg,
            kid: kid.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            seq: AtomicU64::new(0),
        })
    }

    /// Public JWK (with `kid`, `alg`, `use`) to publish to backends.
    pub fn public_jwk(&self) -> Result<Value, AssertionError> {
        let jwk = Jwk::from_encoding_key(&self.key, self.alg).map_err(AssertionError::Jwt)?;
        let mut v = serde_json::to_value(jwk)?;
        v["kid"] = json!(self.kid);
        v["use"] = json!("sig");
        Ok(v)
    }

    /// Sign an assertion for `id`, valid for [`ASSERTION_TTL_SECS`] from `now`.
    pub fn sign(&self, id: &Identity, now: i64) -> Result<String, AssertionError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let jti = b64url(&sha256(format!("{}|{now}|{n}", id.token_hash).as_bytes()));
        let claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ASSERTION_TTL_SECS,
            "jti": jti,
            "sub": id.subject,
            "orig_iss": id.issuer,
            "client_id": id.client_id,
            "scope": id.scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" "),
            "patient": id.patient,
            "fhirUser": id.fhir_user,
            "amr": id.amr,
            "factors": id.factors.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            "acr": id.acr,
            "auth_time": id.auth_time,
            "binding": id.binding.as_str(),
            "token_hash": id.token_hash,
        });
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some("gateway-assertion+jwt".into());
        jsonwebtoken::encode(&h, &claims, &self.key).map_err(AssertionError::Jwt)
    }
}
