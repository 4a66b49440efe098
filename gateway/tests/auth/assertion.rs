//! Gateway assertion JWT: signed by the gateway, verifiable by backends.

use crate::common::*;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use phr_gateway::auth::AssertionSigner;
use serde_json::Value;

fn pkcs8_der(name: &str) -> Vec<u8> {
    let pem = String::from_utf8(pem(name)).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

#[tokio::test]
async fn backend_can_verify_assertion() {
    let e = env().await;
    let mut c = claims();
    c["amr"] = serde_json::json!(["pwd", "otp"]);
    let id = e.check(&sign("ec1", Algorithm::ES256, "ec1", &c)).await.unwrap();
    for (key, alg) in [("dpop_ec", Algorithm::ES256), ("ed1", Algorithm::EdDSA)] {
        let s = AssertionSigner::from_pkcs8_der(&pkcs8_der(key), alg, "gw-1", "phr-gateway", "fhir-backend").unwrap();
        let jwt = s.sign(&id, now()).unwrap();
        let jwk: Jwk = serde_json::from_value(s.public_jwk().unwrap()).unwrap();
        let mut v = Validation::new(alg);
        v.set_audience(&["fhir-backend"]);
        v.set_issuer(&["phr-gateway"]);
        let d = jsonwebtoken::decode::<Value>(&jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
        assert_eq!(d.claims["sub"], "user-1");
        assert_eq!(d.claims["orig_iss"], ISS);
        assert_eq!(d.claims["factors"], serde_json::json!(["knowledge", "possession"]));
        assert_eq!(
            d.claims["exp"].as_i64().unwrap() - d.claims["iat"].as_i64().unwrap(),
            60
        );
        // Not verifiable with another key.
        let other = Jwk::from_encoding_key(&key_for_other(alg), alg).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&jwt, &DecodingKey::from_jwk(&other).unwrap(), &v).is_err());
    }
    assert!(AssertionSigner::from_pkcs8_der(b"junk", Algorithm::ES256, "k", "i", "a").is_err());
    assert!(AssertionSigner::from_pkcs8_der(&pkcs8_der("rsa1"), Algorithm::RS256, "k", "i", "a").is_err());
}

fn key_for_other(alg: Algorithm) -> jsonwebtoken::EncodingKey {
    match alg {
        Algorithm::ES256 => key("attacker_ec"),
        _ => jsonwebtoken::EncodingKey::from_ed_der(&{
            // A second Ed25519 key is not in testdata; flip the seed of ed1.
            let mut d = pkcs8_der("ed1");
            let n = d.len();
            d[n - 1] ^= 1;
            d
        }),
    }
}
