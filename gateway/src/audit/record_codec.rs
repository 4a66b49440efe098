//! The bytes an access record is sealed as (LOG-ACC-1, LOG-PROT-1, DATA-ENC-1).
//!
//! Two versions exist, told apart by the first plaintext byte (inside the
//! AES-GCM ciphertext, so the version is authenticated with the record):
//!
//! * **v1**, written until this module existed: the record's JSON, which
//!   always starts with `{` (0x7B). Still read, so stores and spools written
//!   by older gateways verify, replay and export unchanged (old and new
//!   records can sit in one chain: the chain hashes the ciphertext and does
//!   not care what is inside).
//! * **v2** (written now): `0x02` then the fields of [`AccessRecord`] in
//!   declaration order, with no names. Encoding a record as JSON, with an
//!   RFC 3339 time, was the largest CPU cost of sealing it; v2 is about half
//!   the size (less to encrypt, hash, store and fsync) and several times
//!   cheaper to write.
//!
//! v2 layout, one item per field, in this order: `time` i64 big-endian (unix
//! ms); `clock_synchronized` one byte (0 none, 1 false, 2 true); `request_id`,
//! `instance`, `source_ip` strings; `tls_version`, `client_cert_fingerprint`,
//! `client_cert_subject`, `token_issuer`, `subject`, `client_id`, `jti`
//! optional strings; `auth_factors` list; `session_start` optional i64;
//! `patients` list; `interaction`, `resource_type`, `resource_id` optional
//! strings; `method`, `route`, `path` strings; `status` varint; `decision`
//! one byte (0 allowed, 1 refused); `reason` optional string; `bytes_in`,
//! `bytes_out`, `latency_ms` varints; `upstream`, `upstream_addr` optional
//! strings. A varint is unsigned LEB128 (at most 10 bytes); a string is a
//! varint byte length then UTF-8; an optional item is a byte 0 (none) or 1
//! followed by the item; a list is a varint count then its strings; an i64
//! is 8 bytes big-endian. Nothing may follow the last field.
//!
//! Hand-written rather than a serialisation crate: none is in the dependency
//! tree, the layout above is the whole format, and a record kept for years
//! (LOG-RET-1) must stay readable whatever a crate's next major version does.
//! Any change to [`AccessRecord`]'s fields needs a v3 here (the v2 bytes of a
//! fixed record are pinned by a test, so a change cannot slip through).

use zeroize::Zeroizing;

use super::record::{AccessDecision, AccessRecord};

/// First byte of a v2 record.
pub const V2: u8 = 0x02;

/// Why sealed bytes are not a record of a known version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte names no version this build reads.
    #[error("unknown access record format (first byte {0:#04x})")]
    UnknownVersion(u8),
    /// A v1 record that is not valid JSON for [`AccessRecord`].
    #[error("access record JSON: {0}")]
    Json(String),
    /// A v2 record that ends early, has bad UTF-8 or an unknown tag, or
    /// carries bytes after its last field.
    #[error("malformed access record (v2) at byte {0}")]
    Malformed(usize),
}

/// Encodes `rec` as v2. The buffer is zeroised on drop: it holds patient ids.
pub fn encode(rec: &AccessRecord) -> Zeroizing<Vec<u8>> {
    let mut w = Zeroizing::new(Vec::with_capacity(384));
    let out: &mut Vec<u8> = &mut w;
    out.push(V2);
    out.extend_from_slice(&rec.time.to_be_bytes());
    out.push(match rec.clock_synchronized {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    put_str(out, &rec.request_id);
    put_str(out, &rec.instance);
    put_str(out, &rec.source_ip);
    for s in [
        &rec.tls_version,
        &rec.client_cert_fingerprint,
        &rec.client_cert_subject,
        &rec.token_issuer,
        &rec.subject,
        &rec.client_id,
        &rec.jti,
    ] {
        put_opt_str(out, s);
    }
    put_list(out, &rec.auth_factors);
    match rec.session_start {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_be_bytes());
        }
    }
    put_list(out, &rec.patients);
    put_opt_str(out, &rec.interaction);
    put_opt_str(out, &rec.resource_type);
    put_opt_str(out, &rec.resource_id);
    put_str(out, &rec.method);
    put_str(out, &rec.route);
    put_str(out, &rec.path);
    put_varint(out, u64::from(rec.status));
    out.push(match rec.decision {
        AccessDecision::Allowed => 0,
        AccessDecision::Refused => 1,
    });
    put_opt_str(out, &rec.reason);
    put_varint(out, rec.bytes_in);
    put_varint(out, rec.bytes_out);
    put_varint(out, rec.latency_ms);
    put_opt_str(out, &rec.upstream);
    put_opt_str(out, &rec.upstream_addr);
    w
}

/// Decodes a record of either version (v1 JSON or v2).
pub fn decode(bytes: &[u8]) -> Result<AccessRecord, DecodeError> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string())),
        Some(&V2) => decode_v2(&bytes[1..]).map_err(|at| DecodeError::Malformed(at + 1)),
        Some(&b) => Err(DecodeError::UnknownVersion(b)),
        None => Err(DecodeError::Malformed(0)),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    put_varint(out, items.len() as u64);
    for s in items {
        put_str(out, s);
    }
}

/// Reads v2 fields; an `Err` is the offset (after the version byte) where
/// the input stopped making sense.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], usize> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(self.at)?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, usize> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, usize> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().map_err(|_| self.at)?))
    }

    fn varint(&mut self) -> Result<u64, usize> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(start);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(start)
    }

    fn string(&mut self) -> Result<String, usize> {
        let start = self.at;
        let len = usize::try_from(self.varint()?).map_err(|_| start)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| start)
    }

    /// A presence byte: false for 0, true for 1, an error otherwise.
    fn present(&mut self) -> Result<bool, usize> {
        let at = self.at;
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(at),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>, usize> {
        if self.present()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    fn list(&mut self) -> Result<Vec<String>, usize> {
        let start = self.at;
        let n = self.varint()?;
        // Every string takes at least one byte: a count above what is left is a lie.
        if n > (self.buf.len() - self.at) as u64 {
            return Err(start);
        }
        (0..n).map(|_| self.string()).collect()
    }
}

fn decode_v2(buf: &[u8]) -> Result<AccessRecord, usize> {
    let mut r = Reader { buf, at: 0 };
    let time = r.i64()?;
    let at = r.at;
    let clock_synchronized = match r.byte()? {
        0 => None,
        1 => Some(false),
        2 => Some(true),
        _ => return Err(at),
    };
    let rec = AccessRecord {
        time,
        clock_synchronized,
        request_id: r.string()?,
        instance: r.string()?,
        source_ip: r.string()?,
        tls_version: r.opt_string()?,
        client_cert_fingerprint: r.opt_string()?,
        client_cert_subject: r.opt_string()?,
        token_issuer: r.opt_string()?,
        subject: r.opt_string()?,
        client_id: r.opt_string()?,
        jti: r.opt_string()?,
        auth_factors: r.list()?,
        session_start: if r.present()? { Some(r.i64()?) } else { None },
        patients: r.list()?,
        interaction: r.opt_string()?,
        resource_type: r.opt_string()?,
        resource_id: r.opt_string()?,
        method: r.string()?,
        route: r.string()?,
        path: r.string()?,
        status: {
            let at = r.at;
            u16::try_from(r.varint()?).map_err(|_| at)?
        },
        decision: {
            let at = r.at;
            match r.byte()? {
                0 => AccessDecision::Allowed,
                1 => AccessDecision::Refused,
                _ => return Err(at),
            }
        },
        reason: r.opt_string()?,
        bytes_in: r.varint()?,
        bytes_out: r.varint()?,
        latency_ms: r.varint()?,
        upstream: r.opt_string()?,
        upstream_addr: r.opt_string()?,
    };
    if r.at != buf.len() {
        return Err(r.at);
    }
    Ok(rec)
}
