//! Property/fuzz tests of what reads a token before its signature is checked
//! (AUTH-ID-1, なりすまし対策; issue 17 item 6): the compact-JWS split, the
//! base64url/JSON header and payload decoding, the header screening, the
//! `Authorization` header reader, JWK parsing and the DPoP proof checks.
//! Properties: no input panics; a header that names `alg: none` (any case),
//! carries or points at a key (`jku`, `x5u`, `jwk`, `x5c`) or has `crit`/`b64`
//! is always refused, whatever else it holds; DPoP normalises `htu` idempotently.
//!
//! Cases per property: `PHR_FUZZ_CASES` (see `crate::fuzz_budget`).

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::bearer::bearer_token;
use super::dpop::{jwk_thumbprint, normalize_htu, DpopVerifier};
use super::error::AuthError;
use super::jwks::{parse_jwks, parse_public_jwk};
use super::jwt::{b64url, decode_part, screen_header, split, KEY_MEMBERS};

/// What the gateway runs on a token before any key is looked up.
fn screen(token: &str) -> Result<(), AuthError> {
    let (h, p, _) = split(token)?;
    let header = decode_part(h, "header")?;
    screen_header(&header)?;
    decode_part(p, "payload")?;
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A header built from the members the screening decides on, each present or
/// not, with arbitrary values, and arbitrary other members.
fn header() -> impl Strategy<Value = Map<String, Value>> {
    let alg = prop_oneof![
        proptest::sample::select(
            &["none", "NONE", "nOnE", "ES256", "RS256", "PS256", "EdDSA", "HS256", "XS1", "", "none "][..]
        )
        .prop_map(|a| Value::String(a.to_owned())),
        json_value(),
    ];
    let member = proptest::sample::select(&["jku", "x5u", "jwk", "x5c", "crit", "b64", "kid", "typ", "cty", "zip"][..]);
    (
        proptest::option::of(alg),
        proptest::collection::vec((member, json_value()), 0..4),
        proptest::collection::btree_map("[a-z0-9]{1,6}", json_value(), 0..3),
    )
        .prop_map(|(alg, members, other)| {
            let mut h: Map<String, Value> = other.into_iter().collect();
            for (k, v) in members {
                h.insert(k.to_owned(), v);
            }
            if let Some(a) = alg {
                h.insert("alg".into(), a);
            }
            h
        })
}

fn token_from(header: &Map<String, Value>, payload: &[u8], sig: &str) -> String {
    let h = b64url(serde_json::to_string(header).expect("JSON").as_bytes());
    format!("{h}.{}.{sig}", b64url(payload))
}

/// Characters tokens are made of, and the ones that break them.
fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.=+/ -]{0,120}",
        any::<String>(),
        "eyJ[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,20}",
    ]
}

proptest! {
    #![proptest_config(crate::fuzz_budget::config())]

    #[test]
    fn arbitrary_tokens_never_panic(token in token_text()) {
        let _ = screen(&token);
        let _ = split(&token);
        let _ = decode_part(&token, "header");
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(http::header::AUTHORIZATION, v);
            let _ = bearer_token(&headers);
        }
    }

    /// The screening's answer follows from the header alone, by the rule in
    /// `jwt.rs`: refused whenever a refusing member is there, whatever else is.
    #[test]
    fn header_screening_refuses_every_dangerous_header(
        h in header(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        sig in "[A-Za-z0-9_-]{0,16}",
    ) {
        let got = screen_header(&h);
        let alg = h.get("alg").and_then(Value::as_str);
        let dangerous = alg.is_none_or(|a| a.eq_ignore_ascii_case("none"))
            || KEY_MEMBERS.iter().any(|m| h.contains_key(*m))
            || h.contains_key("crit")
            || h.contains_key("b64");
        if dangerous {
            prop_assert!(got.is_err(), "{h:?} was accepted");
        }
        if let Ok((_, kid)) = &got {
            prop_assert_eq!(kid.as_deref(), h.get("kid").and_then(Value::as_str));
        }
        // The same header as a token: the token is refused at least as often.
        let token = token_from(&h, &payload, &sig);
        if got.is_err() {
            prop_assert!(screen(&token).is_err());
        }
    }

    #[test]
    fn jwk_parsing_never_panics(v in json_value(), kty in proptest::sample::select(&["RSA", "EC", "OKP", "oct"][..]),
                                crv in proptest::sample::select(&["P-256", "P-384", "Ed25519", "X25519"][..]),
                                n in "[A-Za-z0-9_-]{0,400}", x in "[A-Za-z0-9_-]{0,60}") {
        let _ = parse_public_jwk(&v);
        let jwk = serde_json::json!({"kty": kty, "crv": crv, "n": n, "e": "AQAB", "x": x, "y": x});
        let _ = parse_public_jwk(&jwk);
        if let Some(o) = jwk.as_object() {
            let _ = jwk_thumbprint(o);
        }
        let _ = parse_jwks(serde_json::json!({"keys": [v, jwk]}).to_string().as_bytes());
    }

    /// Proofs built from generated headers and payloads (and arbitrary text)
    /// never panic the verifier; a proof header with a key location or
    /// `crit` is never accepted.
    #[test]
    fn dpop_proofs_never_panic_and_dangerous_headers_fail(
        h in header(),
        typ in proptest::option::of(Just("dpop+jwt")),
        jwk in json_value(),
        claims in json_value(),
        raw in token_text(),
        htu in prop_oneof![Just("https://gw.example/fhir/Patient".to_owned()), any::<String>()],
        now in any::<i64>(),
    ) {
        let verifier = DpopVerifier::new(Duration::from_secs(60), 100);
        let mut h = h;
        if let Some(t) = typ {
            h.insert("typ".into(), Value::String(t.into()));
        }
        h.insert("jwk".into(), jwk);
        let proof = token_from(&h, serde_json::to_string(&claims).expect("JSON").as_bytes(), "c2ln");
        let get = http::Method::GET;
        let r = verifier.verify(&proof, &get, &htu, "a.b.c", "jkt", now);
        if ["jku", "x5u", "x5c", "crit"].iter().any(|m| h.contains_key(*m)) {
            prop_assert!(r.is_err());
        }
        let _ = verifier.verify(&raw, &get, &htu, &raw, &raw, now);
    }

    /// `htu` normalisation never panics and is idempotent (the proof's URL and
    /// the request's are compared in normal form).
    #[test]
    fn htu_normalisation_is_idempotent(url in prop_oneof![
        "(https?|HTTPS|ftp)://[A-Za-z0-9.-]{1,12}(:[0-9]{1,6})?(/[A-Za-z0-9%._~-]{0,8}){0,3}(\\?[a-z=&]{0,6})?(#[a-z]{0,4})?",
        "https://\\[[0-9a-f:]{2,12}\\](:[0-9]{1,5})?/[a-z]{0,4}",
        any::<String>(),
    ]) {
        if let Some(n) = normalize_htu(&url) {
            prop_assert_eq!(normalize_htu(&n), Some(n.clone()), "from {:?}", url);
        }
    }
}
