//! DPoP proofs (RFC 9449) for the DPoP-bound interactions. Each virtual user holds its
//! own P-256 key; its token is bound to the key's thumbprint (`cnf.jkt`, RFC 7638), and
//! every request carries a fresh proof: `typ` `dpop+jwt`, `alg` ES256, the public `jwk`
//! in the header, and `htm`, `htu`, `iat`, a unique `jti` and `ath` (SHA-256 of the access
//! token) in the payload — what the gateway's verifier (`gateway/src/auth/dpop.rs`) checks.
//!
//! Proofs are signed with aws-lc-rs directly (already in the tree through rustls and
//! jsonwebtoken) with the key parsed once: one P-256 signature per request is part of
//! the kit's own cost, so it is kept to that.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One virtual user's proof key.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The proof header, base64url-encoded once (it never changes for a key).
    header_b64: String,
    /// RFC 7638 SHA-256 thumbprint of the public key: the token's `cnf.jkt`.
    pub jkt: String,
    /// Prefix of this key's `jti`s, and their counter.
    jti_prefix: String,
    next_jti: AtomicU64,
}

impl DpopKey {
    /// A fresh P-256 key; `name` makes its `jti`s readable in the gateway's logs.
    pub fn generate(name: &str) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("DPoP key: {e}"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| format!("DPoP key: {e}"))?;
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let jkt = b64(digest(
            &SHA256,
            format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes(),
        )
        .as_ref());
        let header = json!({
            "typ": "dpop+jwt", "alg": "ES256",
            "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y},
        });
        Ok(Self {
            pair,
            rng,
            header_b64: b64(header.to_string().as_bytes()),
            jkt,
            jti_prefix: format!("{name}-"),
            next_jti: AtomicU64::new(0),
        })
    }

    /// A proof for one request: `method`, the URL as the client addresses it (query and
    /// fragment are left out, RFC 9449 §4.2), the access token it accompanies, and now
    /// (Unix seconds).
    pub fn proof(&self, method: &str, url: &str, access_token: &str, now: u64) -> Result<String, String> {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let jti = format!("{}{}", self.jti_prefix, self.next_jti.fetch_add(1, Ordering::Relaxed));
        let claims = json!({
            "jti": jti, "htm": method, "htu": htu, "iat": now,
            "ath": b64(digest(&SHA256, access_token.as_bytes()).as_ref()),
        });
        let input = format!("{}.{}", self.header_b64, b64(claims.to_string().as_bytes()));
        // FIXED: r || s, 64 bytes, the JWS ES256 signature format (RFC 7518 §3.4).
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| format!("DPoP proof: {e}"))?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::Value;

    fn part(s: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
    }

    #[test]
    fn proof_verifies_with_its_header_key_and_carries_every_claim() {
        let key = DpopKey::generate("u7").unwrap();
        let token = "a.b.c";
        let p = key
            .proof(
                "GET",
                "https://localhost:8443/fhir-dpop/Patient/p1?x=1",
                token,
                1_700_000_000,
            )
            .unwrap();
        let parts: Vec<&str> = p.split('.').collect();
        let header = part(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        // The thumbprint is RFC 7638's, as jsonwebtoken computes it.
        let jwk: Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), key.jkt);
        // The signature verifies with the header's key (what the gateway does).
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let claims = jsonwebtoken::decode::<Value>(&p, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .unwrap()
            .claims;
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://localhost:8443/fhir-dpop/Patient/p1");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["ath"], b64(digest(&SHA256, token.as_bytes()).as_ref()));
        // Every proof has its own jti.
        let again = key.proof("GET", "https://h/x", token, 1).unwrap();
        assert_ne!(part(again.split('.').nth(1).unwrap())["jti"], claims["jti"]);
    }
}
