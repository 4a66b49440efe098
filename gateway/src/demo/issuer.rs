//! The demo's development token issuer: an ES256 key kept in the data directory, its
//! JWKS as a file the gateway reads (`jwks_file`), and ready-made tokens for a patient
//! and a practitioner. For the demo only: a real deployment trusts a real IdP.

use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::{Path, PathBuf};

pub const ISSUER: &str = "https://dev-issuer.phr-gateway.invalid";
pub const AUDIENCE: &str = "phr-gateway-demo";

pub struct DevIssuer {
    pub jwks_file: PathBuf,
    key: EncodingKey,
}

impl DevIssuer {
    /// Loads the key from `dir`, or creates it (mode 0600) with its JWKS.
    pub fn ensure(dir: &Path) -> Result<Self, String> {
        let key_file = dir.join("dev-issuer-key.pem");
        let jwks_file = dir.join("dev-issuer-jwks.json");
        if !key_file.exists() {
            let pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            super::certs::write(&key_file, &pair.serialize_pem(), 0o600)?;
        }
        let pem = std::fs::read_to_string(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|k: rustls_pki_types::PrivatePkcs8KeyDer<'_>| k.secret_pkcs8_der().to_vec())
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        let key = EncodingKey::from_ec_der(&der);
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        jwk["kid"] = json!("dev-1");
        jwk["use"] = json!("sig");
        std::fs::write(&jwks_file, json!({ "keys": [jwk] }).to_string()).map_err(|e| e.to_string())?;
        Ok(Self { jwks_file, key })
    }

    /// A token valid for 12 hours, signed with the dev key.
    pub fn token(&self, subject: &str, scope: &str, patient: Option<&str>) -> Result<String, String> {
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
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}
