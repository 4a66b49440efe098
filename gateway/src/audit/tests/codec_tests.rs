//! The sealed record bytes (audit::record_codec): v2 round-trips, v1 (JSON)
//! still reads, the v2 layout is pinned, damaged input is refused.

use proptest::prelude::*;

use super::sample;
use crate::audit::record::{AccessDecision, AccessRecord};
use crate::audit::record_codec::{decode, encode, DecodeError, V2};

/// Every optional field empty: the smallest record.
fn minimal() -> AccessRecord {
    AccessRecord {
        time: 0,
        clock_synchronized: None,
        request_id: String::new(),
        instance: String::new(),
        source_ip: String::new(),
        tls_version: None,
        client_cert_fingerprint: None,
        client_cert_subject: None,
        token_issuer: None,
        subject: None,
        client_id: None,
        jti: None,
        auth_factors: vec![],
        session_start: None,
        patients: vec![],
        interaction: None,
        resource_type: None,
        resource_id: None,
        method: String::new(),
        route: String::new(),
        path: String::new(),
        status: 0,
        decision: AccessDecision::Allowed,
        reason: None,
        bytes_in: 0,
        bytes_out: 0,
        latency_ms: 0,
        upstream: None,
        upstream_addr: None,
    }
}

#[test]
fn v2_round_trips_and_is_smaller_than_json() {
    for rec in [sample(0), sample(7), minimal()] {
        let bytes = encode(&rec);
        assert_eq!(bytes[0], V2);
        assert_eq!(decode(&bytes), Ok(rec.clone()));
        let json = serde_json::to_vec(&rec).unwrap();
        assert!(bytes.len() * 2 < json.len(), "{} vs {} bytes", bytes.len(), json.len());
    }
}

#[test]
fn v1_json_records_still_decode() {
    for rec in [sample(3), minimal()] {
        let json = serde_json::to_vec(&rec).unwrap();
        assert_eq!(decode(&json), Ok(rec));
    }
    // As an old gateway wrote it, with fields it left out (serde defaults).
    let old = br#"{"time":"2025-04-01T00:30:00.000Z","request_id":"r","instance":"gw","source_ip":"::1",
        "method":"GET","route":"fhir","path":"/fhir/Patient/p1","status":200,"decision":"allowed"}"#;
    let rec = decode(old).unwrap();
    assert_eq!(
        (rec.time, rec.status, rec.decision),
        (1_743_467_400_000, 200, AccessDecision::Allowed)
    );
    assert!(matches!(decode(b"{\"time\":1}"), Err(DecodeError::Json(_))));
}

/// The v2 bytes of one record, fixed: reordering or retyping a field of
/// `AccessRecord` changes them, and then needs a v3 (see the module doc).
#[test]
fn v2_layout_is_pinned() {
    let mut rec = minimal();
    rec.time = 1;
    rec.clock_synchronized = Some(true);
    rec.request_id = "r".into();
    rec.subject = Some("s".into());
    rec.auth_factors = vec!["pwd".into()];
    rec.session_start = Some(2);
    rec.patients = vec!["p".into(), "q".into()];
    rec.method = "GET".into();
    rec.status = 300;
    rec.decision = AccessDecision::Refused;
    rec.bytes_out = 128;
    rec.upstream_addr = Some("u".into());
    let want: Vec<u8> = [
        &[V2][..],
        &1i64.to_be_bytes(),             // time
        &[2],                            // clock_synchronized: Some(true)
        &[1, b'r', 0, 0],                // request_id, instance, source_ip
        &[0, 0, 0, 0, 1, 1, b's', 0, 0], // tls .. client_cert_subject, token_issuer, subject, client_id, jti
        &[1, 3, b'p', b'w', b'd'],       // auth_factors
        &[1],
        &2i64.to_be_bytes(),          // session_start
        &[2, 1, b'p', 1, b'q'],       // patients
        &[0, 0, 0],                   // interaction, resource_type, resource_id
        &[3, b'G', b'E', b'T', 0, 0], // method, route, path
        &[0xac, 0x02],                // status 300 as a varint
        &[1],                         // decision: refused
        &[0],                         // reason
        &[0, 0x80, 0x01, 0],          // bytes_in, bytes_out 128, latency_ms
        &[0, 1, 1, b'u'],             // upstream, upstream_addr
    ]
    .concat();
    assert_eq!(encode(&rec).as_slice(), want.as_slice());
    assert_eq!(decode(&want), Ok(rec));
}

#[test]
fn damaged_v2_is_refused() {
    let bytes = encode(&sample(1)).to_vec();
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "a record cut at {cut} bytes decoded");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode(&longer), Err(DecodeError::Malformed(bytes.len())));
    assert_eq!(decode(&[0x03, 0]), Err(DecodeError::UnknownVersion(3)));
    // An invalid presence tag (2) where `tls_version` starts.
    let mut bad = encode(&minimal()).to_vec();
    bad[13] = 2;
    assert_eq!(decode(&bad), Err(DecodeError::Malformed(13)));
    // A list that claims more strings than bytes are left.
    let mut huge = encode(&minimal()).to_vec();
    huge[20] = 0x7f; // auth_factors count
    assert!(matches!(decode(&huge), Err(DecodeError::Malformed(_))));
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(".{0,40}")
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(".{0,20}", 0..4)
}

prop_compose! {
    fn any_record()(
        time in any::<i64>(),
        clock in proptest::option::of(any::<bool>()),
        ids in proptest::collection::vec(".{0,40}", 6),
        opts in proptest::collection::vec(opt_text(), 13),
        auth_factors in texts(),
        patients in texts(),
        session_start in proptest::option::of(any::<i64>()),
        status in any::<u16>(),
        refused in any::<bool>(),
        counts in any::<(u64, u64, u64)>(),
    ) -> AccessRecord {
        let o = |i: usize| opts[i].clone();
        AccessRecord {
            time,
            clock_synchronized: clock,
            request_id: ids[0].clone(),
            instance: ids[1].clone(),
            source_ip: ids[2].clone(),
            tls_version: o(0),
            client_cert_fingerprint: o(1),
            client_cert_subject: o(2),
            token_issuer: o(3),
            subject: o(4),
            client_id: o(5),
            jti: o(6),
            auth_factors,
            session_start,
            patients,
            interaction: o(7),
            resource_type: o(8),
            resource_id: o(9),
            method: ids[3].clone(),
            route: ids[4].clone(),
            path: ids[5].clone(),
            status,
            decision: if refused { AccessDecision::Refused } else { AccessDecision::Allowed },
            reason: o(10),
            bytes_in: counts.0,
            bytes_out: counts.1,
            latency_ms: counts.2,
            upstream: o(11),
            upstream_addr: o(12),
        }
    }
}

proptest! {
    #![proptest_config(crate::fuzz_budget::config())]

    #[test]
    fn fuzz_v2_round_trips_any_record(rec in any_record()) {
        prop_assert_eq!(decode(&encode(&rec)), Ok(rec));
    }

    #[test]
    fn fuzz_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut v2 = bytes.clone();
        v2.insert(0, V2);
        let _ = decode(&bytes);
        let _ = decode(&v2);
    }
}
