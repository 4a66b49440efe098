//! Tokens for the synthetic population, signed in-process with the operator's ES256 key
//! (by default the demo's development issuer key, `dev-issuer-key.pem`).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How tokens are signed and what they claim.
#[derive(Debug, Clone)]
pub struct Issuer {
    key: EncodingKey,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// `kid` header.
    pub kid: String,
}

/// All tokens one run uses: one per synthetic patient, and pools of practitioner and
/// system tokens (many subjects, so per-subject rate limits see a realistic spread).
#[derive(Debug, Clone)]
pub struct Tokens {
    /// (backend patient id, token) per synthetic patient.
    pub patients: Vec<(String, String)>,
    /// Expired token per synthetic patient (same index).
    pub expired: Vec<String>,
    /// Token per synthetic patient (same index) whose `amr` shows one factor (`pwd`).
    pub one_factor: Vec<String>,
    /// Practitioner tokens.
    pub practitioners: Vec<String>,
    /// System tokens.
    pub systems: Vec<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Issuer {
    /// Loads a PKCS#8 PEM EC (P-256) private key.
    pub fn from_key_file(path: &Path, issuer: &str, audience: &str, kid: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "signing key {}: {e} (give --key, or --demo DIR with the demo's data dir)",
                path.display()
            )
        })?;
        let not_es256 = |e: &dyn std::fmt::Display| {
            format!(
                "signing key {}: not an ES256 (P-256) PKCS#8 PEM private key: {e}",
                path.display()
            )
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| not_es256(&e))?;
        let key = EncodingKey::from_ec_der(der.secret_pkcs8_der());
        Ok(Self {
            key,
            issuer: issuer.into(),
            audience: audience.into(),
            kid: kid.into(),
        })
    }

    /// Signs one token; `valid_for` may be negative (an expired token).
    pub fn sign(
        &self,
        subject: &str,
        scope: &str,
        patient: Option<&str>,
        valid_for: i64,
        n: usize,
    ) -> Result<String, String> {
        self.sign_with(subject, scope, patient, valid_for, n, json!({}))
    }

    /// As [`Self::sign`], with the claims in `extra` (an object) added or replacing the
    /// defaults: `amr` (default two factors, `["pwd", "otp"]`), `cnf` for a DPoP-bound token.
    pub fn sign_with(
        &self,
        subject: &str,
        scope: &str,
        patient: Option<&str>,
        valid_for: i64,
        n: usize,
        extra: serde_json::Value,
    ) -> Result<String, String> {
        let now = now() as i64;
        let mut claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": subject, "client_id": "phr-loadtest",
            "iat": now.min(now + valid_for - 60), "exp": now + valid_for, "auth_time": now,
            "jti": format!("phr-loadtest-{}-{n}-{subject}", std::process::id()), "scope": scope, "amr": ["pwd", "otp"],
        });
        if let Some(p) = patient {
            claims["patient"] = json!(p);
        }
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("signing a token: {e}"))
    }

    /// Mints the run's population: `patients` synthetic patients bound round-robin to the
    /// backend's `patient_ids`, valid for `valid_for_s` seconds.
    pub fn population(&self, patients: usize, patient_ids: &[String], valid_for_s: i64) -> Result<Tokens, String> {
        if patient_ids.is_empty() {
            return Err("no backend patient ids: give --patient-ids".into());
        }
        let node = std::process::id();
        let mut t = Tokens {
            patients: Vec::new(),
            expired: Vec::new(),
            one_factor: Vec::new(),
            practitioners: Vec::new(),
            systems: Vec::new(),
        };
        for i in 0..patients {
            let id = &patient_ids[i % patient_ids.len()];
            let sub = format!("lt-{node}-patient-{i}");
            let scope = "openid launch/patient patient/*.cruds";
            t.patients
                .push((id.clone(), self.sign(&sub, scope, Some(id), valid_for_s, i)?));
            t.expired.push(self.sign(&sub, scope, Some(id), -3600, i)?);
            let one = json!({ "amr": ["pwd"], "jti": format!("phr-loadtest-{node}-{i}-{sub}-1f") });
            t.one_factor
                .push(self.sign_with(&sub, scope, Some(id), valid_for_s, i, one)?);
        }
        for i in 0..(patients / 20).max(1) {
            t.practitioners.push(self.sign(
                &format!("lt-{node}-dr-{i}"),
                "openid fhirUser user/*.rs",
                None,
                valid_for_s,
                i,
            )?);
        }
        for i in 0..(patients / 100).max(1) {
            t.systems
                .push(self.sign(&format!("lt-{node}-svc-{i}"), "system/*.rs", None, valid_for_s, i)?);
        }
        Ok(t)
    }
}
