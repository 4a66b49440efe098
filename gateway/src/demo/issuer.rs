//! The demo's development token issuer: an ES256 key kept in the data directory, its
//! JWKS as a file the gateway reads (`jwks_file`), and ready-made tokens for a patient
//! and a practitioner. For the demo only: a real deployment trusts a real IdP.

use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Why the development issuer could not load its key or sign a token.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The key could not be generated.
    #[error(transparent)]
    Generate(#[from] rcgen::Error),
    /// The new key could not be saved.
    #[error(transparent)]
    Save(#[from] super::certs::CertError),
    /// The key file could not be read.
    #[error("{}: {source}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no PKCS#8 key.
    #[error("{}: {source}", path.display())]
    ParseKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The public key could not be expressed as a JWK, or a token could not be signed.
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// The JWKS could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The JWKS file could not be written.
    #[error(transparent)]
    WriteJwks(std::io::Error),
}

/// `iss` of the demo tokens; `.invalid` so it can never name a real issuer.
pub const ISSUER: &str = "https://dev-issuer.phr-gateway.invalid";
/// `aud` of the demo tokens, and the audience the demo configuration accepts.
pub const AUDIENCE: &str = "phr-gateway-demo";

/// File name of the development issuer's JWKS in the data directory.
pub const JWKS_FILE_NAME: &str = "dev-issuer-jwks.json";

/// The `[[auth.issuers]]` table a gateway configuration needs to accept the development
/// issuer's tokens, with `jwks_file` shown as `jwks` (a path, or a placeholder).
pub fn issuer_config_snippet(jwks: &str) -> String {
    format!("[[auth.issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"{jwks}\"\naudiences = [\"{AUDIENCE}\"]\n")
}

/// `dev-token --help` text after the options: what the tokens carry and the issuer
/// table that accepts them (`DATA_DIR` is the `--data-dir` given to `dev-token`).
pub fn dev_token_help() -> String {
    format!(
        "Tokens: iss = {ISSUER}, aud = {AUDIENCE}, ES256 with kid \"dev-1\", valid 12 h.\n\
         The JWKS is written to DATA_DIR/{JWKS_FILE_NAME}. A gateway accepts these tokens with:\n\n{}",
        issuer_config_snippet(&format!("DATA_DIR/{JWKS_FILE_NAME}"))
    )
}

/// The demo's signing key and the JWKS file that publishes it to the gateway.
pub struct DevIssuer {
    /// `dev-issuer-jwks.json` in the data directory: the `jwks_file` of the demo issuer.
    pub jwks_file: PathBuf,
    key: EncodingKey,
}

impl DevIssuer {
    /// Loads the key from `dir`, or creates it (mode 0600) with its JWKS.
    pub fn ensure(dir: &Path) -> Result<Self, IssuerError> {
        let key_file = dir.join("dev-issuer-key.pem");
        let jwks_file = dir.join(JWKS_FILE_NAME);
        if !key_file.exists() {
            let pair = rcgen::KeyPair::generate()?;
            super::certs::write(&key_file, &pair.serialize_pem(), 0o600)?;
        }
        let pem = std::fs::read_to_string(&key_file).map_err(|source| IssuerError::ReadKey {
            path: key_file.clone(),
            source,
        })?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|k: rustls_pki_types::PrivatePkcs8KeyDer<'_>| k.secret_pkcs8_der().to_vec())
            .map_err(|source| IssuerError::ParseKey {
                path: key_file.clone(),
                source,
            })?;
        let key = EncodingKey::from_ec_der(&der);
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256)?)?;
        jwk["kid"] = json!("dev-1");
        jwk["use"] = json!("sig");
        std::fs::write(&jwks_file, json!({ "keys": [jwk] }).to_string()).map_err(IssuerError::WriteJwks)?;
        Ok(Self { jwks_file, key })
    }

    /// A token valid for 12 hours, signed with the dev key.
    pub fn token(&self, subject: &str, scope: &str, patient: Option<&str>) -> Result<String, IssuerError> {
        let now = crate::util::clock::unix_now();
        let mut claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "client_id": "demo-app",
            "iat": now, "exp": now + 12 * 3600, "auth_time": now,
            "jti": uuid::Uuid::new_v4().to_string(), "scope": scope, "amr": ["pwd", "otp"],
        });
        if let Some(p) = patient {
            claims["patient"] = json!(p);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("dev-1".into());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}
