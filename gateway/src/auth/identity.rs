//! The authenticated identity handed to the backend and the access record
//! (AUTH-ID-1: who; AUTH-2FA-1: with which factors; LOG-*).
//!
//! Backends learn the identity from request headers the gateway adds. A
//! client could send those headers itself to impersonate someone
//! (なりすまし), so the gateway must remove *every* client-sent copy of every
//! name in [`HeaderNames::all`] before adding its own — on every route,
//! authenticated or not.

use std::collections::BTreeSet;

use http::{HeaderName, HeaderValue};

use super::two_factor::FactorCategory;

/// How the token is bound to its presenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Plain bearer token: whoever holds it can use it.
    Bearer,
    /// Bound to the mTLS client certificate (RFC 8705).
    Certificate,
    /// Bound to a DPoP key (RFC 9449).
    Dpop,
}

impl Binding {
    /// Lower-case name for headers and access records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Certificate => "mtls",
            Self::Dpop => "dpop",
        }
    }
}

/// Who made the request, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `client_id` or `azp`: the application acting for the user.
    pub client_id: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// Normalised scopes (`scope` ∪ `scp`), sorted.
    pub scopes: BTreeSet<String>,
    /// SMART launch context `patient`.
    pub patient: Option<String>,
    /// SMART `fhirUser`.
    pub fhir_user: Option<String>,
    /// `amr` as sent by the IdP.
    pub amr: Vec<String>,
    /// Factor categories proven by `amr` (AUTH-2FA-2).
    pub factors: BTreeSet<FactorCategory>,
    /// `acr`.
    pub acr: Option<String>,
    /// `auth_time`.
    pub auth_time: Option<i64>,
    /// `exp`.
    pub expires_at: i64,
    /// Token binding in force for this request.
    pub binding: Binding,
    /// Hex SHA-256 of the token: correlates access records without storing the token.
    pub token_hash: String,
}

/// Names of the identity headers sent to backends (configurable so a
/// backend's existing conventions can be kept).
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Subject.
    pub subject: HeaderName,
    /// Issuer.
    pub issuer: HeaderName,
    /// Client id.
    pub client_id: HeaderName,
    /// Space-separated scopes.
    pub scopes: HeaderName,
    /// SMART patient.
    pub patient: HeaderName,
    /// SMART fhirUser.
    pub fhir_user: HeaderName,
    /// Space-separated amr.
    pub amr: HeaderName,
    /// Space-separated factor categories.
    pub factors: HeaderName,
    /// acr.
    pub acr: HeaderName,
    /// Binding kind.
    pub binding: HeaderName,
    /// Token hash.
    pub token_hash: HeaderName,
    /// Gateway assertion JWT, when the gateway signs one.
    pub assertion: HeaderName,
}

impl Default for HeaderNames {
    fn default() -> Self {
        let h = HeaderName::from_static;
        Self {
            subject: h("x-phr-subject"),
            issuer: h("x-phr-issuer"),
            client_id: h("x-phr-client-id"),
            scopes: h("x-phr-scopes"),
            patient: h("x-phr-patient"),
            fhir_user: h("x-phr-fhir-user"),
            amr: h("x-phr-amr"),
            factors: h("x-phr-auth-factors"),
            acr: h("x-phr-acr"),
            binding: h("x-phr-token-binding"),
            token_hash: h("x-phr-token-hash"),
            assertion: h("x-phr-gateway-assertion"),
        }
    }
}

impl HeaderNames {
    /// Every name the gateway owns. All start with `x-phr-`, the prefix by which
    /// the proxy strips every client-sent copy (`proxy::headers::clean_request`).
    pub fn all(&self) -> Vec<HeaderName> {
        vec![
            self.subject.clone(),
            self.issuer.clone(),
            self.client_id.clone(),
            self.scopes.clone(),
            self.patient.clone(),
            self.fhir_user.clone(),
            self.amr.clone(),
            self.factors.clone(),
            self.acr.clone(),
            self.binding.clone(),
            self.token_hash.clone(),
            self.assertion.clone(),
        ]
    }
}

/// Header-safe form: bytes outside visible ASCII (and `%`) are
/// percent-encoded UTF-8, so any claim (e.g. a Japanese name) fits and no
/// claim can inject CR/LF or a second header.
pub fn header_value(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if ((0x21..=0x7e).contains(&b) && b != b'%') || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The identity headers to add to the upstream request.
pub fn identity_headers(id: &Identity, names: &HeaderNames) -> Vec<(HeaderName, HeaderValue)> {
    let mut v = vec![
        (names.subject.clone(), header_value(&id.subject)),
        (names.issuer.clone(), header_value(&id.issuer)),
        (names.binding.clone(), header_value(id.binding.as_str())),
        (names.token_hash.clone(), header_value(&id.token_hash)),
    ];
    let mut opt = |n: &HeaderName, val: Option<&String>| {
        if let Some(x) = val {
            v.push((n.clone(), header_value(x)));
        }
    };
    opt(&names.client_id, id.client_id.as_ref());
    opt(&names.patient, id.patient.as_ref());
    opt(&names.fhir_user, id.fhir_user.as_ref());
    opt(&names.acr, id.acr.as_ref());
    let join = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(" ");
    if !id.scopes.is_empty() {
        let s = join(&mut id.scopes.iter().map(String::as_str));
        v.push((names.scopes.clone(), header_value(&s)));
    }
    if !id.amr.is_empty() {
        let s = join(&mut id.amr.iter().map(String::as_str));
        v.push((names.amr.clone(), header_value(&s)));
    }
    if !id.factors.is_empty() {
        let s = join(&mut id.factors.iter().map(|f| f.as_str()));
        v.push((names.factors.clone(), header_value(&s)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_header_safe() {
        assert_eq!(header_value("abc def"), "abc def");
        assert_eq!(header_value("a\r\nx-phr-subject: evil"), "a%0D%0Ax-phr-subject: evil");
        assert_eq!(header_value("山田"), "%E5%B1%B1%E7%94%B0");
        assert_eq!(header_value("100%"), "100%25");
    }

    #[test]
    fn headers_listed_for_stripping() {
        let n = HeaderNames::default();
        let id = Identity {
            issuer: "https://idp".into(),
            subject: "u1".into(),
            client_id: Some("app".into()),
            jti: None,
            scopes: ["a".to_string(), "b".to_string()].into(),
            patient: None,
            fhir_user: None,
            amr: vec!["pwd".into(), "otp".into()],
            factors: [FactorCategory::Knowledge, FactorCategory::Possession].into(),
            acr: None,
            auth_time: None,
            expires_at: 0,
            binding: Binding::Bearer,
            token_hash: "00".into(),
        };
        let hs = identity_headers(&id, &n);
        let all = n.all();
        assert!(hs.iter().all(|(k, _)| all.contains(k)));
        // The proxy drops a client's copies by this prefix (proxy::headers::clean_request).
        for name in &all {
            assert!(
                name.as_str().starts_with(crate::proxy::headers::GATEWAY_PREFIX),
                "{name} would pass a client's forged copy to the backend"
            );
        }
        let get = |k: &HeaderName| hs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get(&n.scopes).unwrap(), "a b");
        assert_eq!(get(&n.factors).unwrap(), "knowledge possession");
        assert!(get(&n.patient).is_none());
    }
}
