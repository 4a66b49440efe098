//! Token fixtures: PEM test keys (in this crate's `testdata/auth/`), JWKS documents and
//! signed tokens for the default issuer and audience.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISS: &str = "https://idp.example.jp";
pub const JWKS_URL: &str = "https://idp.example.jp/jwks";
pub const AUD: &str = "https://api.example.jp";
pub const URL: &str = "https://api.example.jp/fhir/Patient/123";

pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/auth/{name}.pem", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Signing key of a fixture; the alg family decides the PEM parser.
pub fn key(name: &str) -> EncodingKey {
    let p = pem(name);
    if name.starts_with("rsa") {
        EncodingKey::from_rsa_pem(&p).unwrap()
    } else if name.starts_with("ed") {
        EncodingKey::from_ed_pem(&p).unwrap()
    } else {
        EncodingKey::from_ec_pem(&p).unwrap()
    }
}

/// Public JWK (JSON) of a fixture key with `kid`.
pub fn public_jwk(name: &str, alg: Algorithm, kid: &str) -> Value {
    let jwk = Jwk::from_encoding_key(&key(name), alg).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    v.as_object_mut().unwrap().remove("alg"); // many IdPs omit it
    v
}

/// Public JWK that pins its `alg` (RFC 7517 §4.4): only that alg may use it.
pub fn pinned_jwk(name: &str, alg: Algorithm, kid: &str) -> Value {
    let mut v = public_jwk(name, alg, kid);
    v["alg"] = json!(format!("{alg:?}"));
    v
}

pub fn jwks(keys: &[(&str, Algorithm, &str)]) -> Bytes {
    let keys: Vec<Value> = keys.iter().map(|(n, a, k)| public_jwk(n, *a, k)).collect();
    Bytes::from(serde_json::to_vec(&json!({ "keys": keys })).unwrap())
}

/// The issuer's normal key set: one key per supported family.
pub fn default_jwks() -> Bytes {
    jwks(&[
        ("rsa1", Algorithm::RS256, "rsa1"),
        ("ec1", Algorithm::ES256, "ec1"),
        ("ed1", Algorithm::EdDSA, "ed1"),
    ])
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

static SEQ: AtomicU64 = AtomicU64::new(0);

pub fn unique() -> String {
    format!("id-{}-{}", now(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Valid claims for the default issuer/audience.
pub fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "exp": now() + 600,
        "iat": now(), "jti": unique(), "client_id": "phr-app",
        "scope": "openid patient/*.read"
    })
}

/// A valid ES256 token (key `ec1`) with `scope` and, for a patient token, `patient`.
pub fn scoped(scope: &str, patient: Option<&str>) -> String {
    let mut c = claims();
    c["scope"] = json!(scope);
    if let Some(p) = patient {
        c["patient"] = json!(p);
    }
    sign("ec1", Algorithm::ES256, "ec1", &c)
}

pub fn sign(name: &str, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &key(name)).unwrap()
}

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Token with a hand-written header, signed (or not) with `key`.
pub fn raw_token(header: &Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
    let msg = format!("{}.{}", b64(header), b64(claims));
    let sig = match key {
        Some((k, alg)) => jsonwebtoken::crypto::sign(msg.as_bytes(), k, alg).unwrap(),
        None => String::new(),
    };
    format!("{msg}.{sig}")
}
