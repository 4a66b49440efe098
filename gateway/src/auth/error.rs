//! Why a request was refused, precisely enough for access records, and
//! safely enough for the client.
//!
//! Every variant carries what was wrong (for logs and the access record,
//! LOG-*), maps to an HTTP status and an RFC 6750 / RFC 9449 / RFC 9470
//! `WWW-Authenticate` challenge, and has a stable [`AuthError::code`].
//! Nothing here ever holds the token itself: `Display` output is safe to
//! log, and [`AuthError::client_message`] is safe to return to the client.

use thiserror::Error;

/// Realm used by [`AuthError::www_authenticate`]; the
/// [`Authenticator`](super::Authenticator) uses the configured realm instead.
pub use crate::config::auth::DEFAULT_REALM;

/// Why a DPoP proof (RFC 9449) was refused. Kept apart from [`AuthError`] so
/// the challenge can use the `DPoP` scheme with `error="invalid_dpop_proof"`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DpopError {
    /// The token is DPoP-bound (or the route requires DPoP) but no `DPoP` header came.
    #[error("DPoP proof missing")]
    Missing,
    /// More than one `DPoP` header: ambiguous, refused (RFC 9449 §4.3 check 1).
    #[error("more than one DPoP header")]
    Multiple,
    /// The proof is not a well-formed JWS, or a required member is missing/ill-typed.
    #[error("malformed DPoP proof: {0}")]
    Malformed(String),
    /// `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ is not dpop+jwt")]
    BadTyp,
    /// Algorithm not in the DPoP allow-list (asymmetric only).
    #[error("DPoP proof alg {0} not allowed")]
    AlgNotAllowed(String),
    /// The `jwk` header is missing, contains private members, or does not fit the alg.
    #[error("DPoP proof jwk unusable: {0}")]
    BadJwk(String),
    /// Signature does not verify with the embedded public key.
    #[error("DPoP proof signature invalid")]
    BadSignature,
    /// `htm` differs from the request method.
    #[error("DPoP htm does not match the request method")]
    HtmMismatch,
    /// `htu` differs from the request URL (scheme, host, path).
    #[error("DPoP htu does not match the request URL")]
    HtuMismatch,
    /// `iat` outside the accepted window around now.
    #[error("DPoP proof iat {iat} outside window around {now}")]
    IatOutOfWindow {
        /// `iat` from the proof.
        iat: i64,
        /// Gateway time when checked.
        now: i64,
    },
    /// `ath` is not the hash of the presented access token.
    #[error("DPoP ath does not match the access token")]
    AthMismatch,
    /// The proof key's thumbprint differs from the token's `cnf.jkt`.
    #[error("DPoP key thumbprint does not match the token cnf.jkt")]
    JktMismatch,
    /// This `jti` was already used with this key within the window.
    #[error("DPoP proof replayed")]
    Replay,
    /// The route or issuer requires DPoP but the token carries no `cnf.jkt`.
    #[error("token is not DPoP-bound but DPoP is required")]
    TokenNotBound,
}

impl DpopError {
    /// Which check failed, for the client: the challenge's `error_description` and the
    /// body's message (RFC 9449 §7.1). Fixed text per check: never the token, the `jti`,
    /// key material or a value the client sent.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "no DPoP header; a DPoP-bound token needs a proof with every request",
            Self::Multiple => "more than one DPoP header",
            Self::Malformed(_) => "malformed proof: not a compact JWS with the required members (jti, htm, htu, iat)",
            Self::BadTyp => "proof typ is not dpop+jwt",
            Self::AlgNotAllowed(_) => "proof alg not allowed (use one of the algs in this challenge)",
            Self::BadJwk(_) => "proof jwk header missing, not a public key, or not fit for the alg",
            Self::BadSignature => "proof signature invalid",
            Self::HtmMismatch => "htm does not match the request method",
            Self::HtuMismatch => "htu does not match the request URL",
            Self::IatOutOfWindow { .. } => "iat outside the allowed window (check the client clock)",
            Self::AthMismatch => "ath does not match the access token",
            Self::JktMismatch => "proof key does not match the token's cnf.jkt",
            Self::Replay => "proof replayed (jti seen before)",
            Self::TokenNotBound => "the route requires DPoP but the token is not DPoP-bound (no cnf.jkt)",
        }
    }

    /// Stable reason code for access records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "dpop_missing",
            Self::Multiple => "dpop_multiple",
            Self::Malformed(_) => "dpop_malformed",
            Self::BadTyp => "dpop_bad_typ",
            Self::AlgNotAllowed(_) => "dpop_alg_not_allowed",
            Self::BadJwk(_) => "dpop_bad_jwk",
            Self::BadSignature => "dpop_bad_signature",
            Self::HtmMismatch => "dpop_htm_mismatch",
            Self::HtuMismatch => "dpop_htu_mismatch",
            Self::IatOutOfWindow { .. } => "dpop_iat_window",
            Self::AthMismatch => "dpop_ath_mismatch",
            Self::JktMismatch => "dpop_jkt_mismatch",
            Self::Replay => "dpop_replay",
            Self::TokenNotBound => "dpop_token_not_bound",
        }
    }
}

/// Every way authentication can fail. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No `Authorization` header on a route that requires authentication (AUTH-ID-1).
    #[error("no access token")]
    MissingToken,
    /// The `Authorization` header is present but unusable (scheme, duplicates, encoding).
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// Token larger than the configured limit; refused before any parsing.
    #[error("token of {size} bytes exceeds limit of {limit}")]
    TokenTooLarge {
        /// Presented size in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not a compact JWS, bad base64/JSON, or ill-typed claim.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Header says `alg: none` (unsigned token).
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// Algorithm not in the issuer's allow-list (or not known at all).
    #[error("algorithm {0} not allowed")]
    AlgNotAllowed(String),
    /// Header carries key material or a key location (`jku`, `x5u`, `jwk`, `x5c`);
    /// keys are only ever taken from the configured JWKS.
    #[error("token header carries key material ({0})")]
    KeyInHeader(&'static str),
    /// Header has `crit`; we understand no extensions so must refuse (RFC 7515 §4.1.11).
    #[error("token header has crit")]
    CritHeader,
    /// `iss` missing or not one of the configured issuers.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key with this `kid` even after a JWKS re-fetch.
    #[error("unknown key id {0:?}")]
    UnknownKid(Option<String>),
    /// The key found for `kid` is of another type/curve than the alg needs.
    #[error("key type {kty} does not fit algorithm {alg}")]
    KeyTypeMismatch {
        /// Algorithm from the header.
        alg: String,
        /// Key type (and curve) of the JWKS key.
        kty: String,
    },
    /// The issuer's keys have never been loaded (JWKS unreachable since start).
    #[error("no keys available for issuer")]
    KeysUnavailable,
    /// Signature does not verify (tampered payload, wrong key).
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// `exp` is in the past (beyond clock skew).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// `exp` claim.
        exp: i64,
        /// Gateway time when checked.
        now: i64,
    },
    /// `nbf` is in the future (beyond clock skew).
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// `nbf` claim.
        nbf: i64,
        /// Gateway time when checked.
        now: i64,
    },
    /// `iat` in the future, or older than `max_token_age`.
    #[error("token issued at {iat} is outside the accepted age (now {now})")]
    BadIssuedAt {
        /// `iat` claim.
        iat: i64,
        /// Gateway time when checked.
        now: i64,
    },
    /// No `aud` value is among the issuer's accepted audiences.
    #[error("token audience not accepted")]
    BadAudience,
    /// The token's `jti` or its subject was revoked (ACL-ACCT-1).
    #[error("token revoked")]
    Revoked,
    /// Scopes required by the route are missing (RFC 6750 `insufficient_scope`, 403).
    #[error("missing scopes {0:?}")]
    InsufficientScope(Vec<String>),
    /// The route requires two-factor / a stronger `acr` / a fresher login (AUTH-2FA-1/2, RFC 9470).
    #[error("insufficient user authentication: {reason}")]
    InsufficientUserAuthentication {
        /// What was missing, safe for clients (no token content).
        reason: String,
        /// `acr_values` the route accepts, echoed in the challenge.
        acr_values: Vec<String>,
        /// `max_age` (seconds) the route requires for `auth_time`, echoed in the challenge.
        max_age: Option<u64>,
    },
    /// Route/issuer requires a certificate-bound token but the token has no `cnf.x5t#S256`.
    #[error("token is not certificate-bound but the route requires it")]
    CertBindingRequired,
    /// Token is certificate-bound but no client certificate was presented.
    #[error("certificate-bound token without client certificate")]
    CertMissing,
    /// Token's `cnf.x5t#S256` differs from the client certificate hash (RFC 8705).
    #[error("client certificate does not match token binding")]
    CertBindingMismatch,
    /// A DPoP-bound token was presented with the `Bearer` scheme (RFC 9449 §7.1).
    #[error("DPoP-bound token presented as Bearer")]
    DpopBoundAsBearer,
    /// DPoP proof problem.
    #[error("DPoP: {0}")]
    Dpop(#[from] DpopError),
}

impl AuthError {
    /// HTTP status to answer with: 400 for a malformed request, 403 for
    /// insufficient scope, 503 when keys could not be loaded, else 401.
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedAuthorization(_) => 400,
            Self::InsufficientScope(_) => 403,
            Self::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// Stable reason code for access records and metrics (never changes meaning).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedAuthorization(_) => "malformed_authorization",
            Self::TokenTooLarge { .. } => "token_too_large",
            Self::Malformed(_) => "malformed_token",
            Self::AlgNone => "alg_none",
            Self::AlgNotAllowed(_) => "alg_not_allowed",
            Self::KeyInHeader(_) => "key_in_header",
            Self::CritHeader => "crit_header",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKid(_) => "unknown_kid",
            Self::KeyTypeMismatch { .. } => "key_type_mismatch",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::MissingClaim(_) => "missing_claim",
            Self::Expired { .. } => "token_expired",
            Self::NotYetValid { .. } => "token_not_yet_valid",
            Self::BadIssuedAt { .. } => "bad_iat",
            Self::BadAudience => "bad_audience",
            Self::Revoked => "revoked",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
            Self::CertBindingRequired => "cert_binding_required",
            Self::CertMissing => "cert_missing",
            Self::CertBindingMismatch => "cert_binding_mismatch",
            Self::DpopBoundAsBearer => "dpop_bound_as_bearer",
            Self::Dpop(e) => e.code(),
        }
    }

    /// Short text safe to return to the client: fixed per variant, so it
    /// never echoes token content, issuer names or key ids.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::MissingToken => "access token required",
            Self::MalformedAuthorization(_) => "malformed Authorization header",
            Self::TokenTooLarge { .. } => "access token too large",
            Self::Expired { .. } => "access token expired",
            Self::NotYetValid { .. } => "access token not yet valid",
            Self::Revoked => "access token revoked",
            Self::BadAudience => "access token not issued for this service",
            Self::InsufficientScope(_) => "insufficient scope",
            Self::InsufficientUserAuthentication { .. } => "stronger user authentication required",
            Self::CertBindingRequired | Self::CertMissing | Self::CertBindingMismatch => {
                "access token not bound to the presented client certificate"
            }
            Self::KeysUnavailable => "authentication temporarily unavailable",
            Self::Dpop(_) | Self::DpopBoundAsBearer => "invalid DPoP proof",
            _ => "invalid access token",
        }
    }

    /// What was wrong, precisely and safely, for the client: the challenge's
    /// `error_description` and the refusal body's message (on FHIR routes
    /// `issue[0].diagnostics`). Built from fixed text only, like
    /// [`Self::client_message`], which it extends where the client can act on the
    /// detail (a malformed header, the DPoP check that failed).
    pub fn description(&self) -> String {
        match self {
            Self::MalformedAuthorization(why) => format!("malformed Authorization header: {why}"),
            Self::Dpop(e) => format!("invalid DPoP proof: {}", e.description()),
            Self::DpopBoundAsBearer => {
                "invalid DPoP proof: DPoP-bound token presented with the Bearer scheme; send Authorization: DPoP <token>"
                    .to_string()
            }
            other => other.client_message().to_string(),
        }
    }

    /// `WWW-Authenticate` value with [`DEFAULT_REALM`]; see [`Self::www_authenticate_in`].
    pub fn www_authenticate(&self) -> Option<String> {
        self.www_authenticate_in(DEFAULT_REALM)
    }

    /// `WWW-Authenticate` challenge for this error in `realm`:
    /// `Bearer` per RFC 6750/9470 (`invalid_request` for a malformed header, 400, RFC
    /// 6750 §3.1; no error code when no token was sent, §3), `DPoP` with
    /// `error="invalid_dpop_proof"` and the failed check per RFC 9449. `None` for a
    /// 503, where no challenge applies.
    pub fn www_authenticate_in(&self, realm_name: &str) -> Option<String> {
        let realm = quote(realm_name);
        let desc = quote(&self.description());
        Some(match self {
            Self::KeysUnavailable => return None,
            Self::MissingToken => format!("Bearer realm={realm}"),
            Self::MalformedAuthorization(_) => {
                format!("Bearer realm={realm}, error=\"invalid_request\", error_description={desc}")
            }
            Self::Dpop(_) | Self::DpopBoundAsBearer => format!(
                "DPoP realm={realm}, error=\"invalid_dpop_proof\", error_description={desc}, algs=\"{}\"",
                super::dpop::DPOP_ALGS.join(" ")
            ),
            Self::InsufficientScope(missing) => insufficient_scope_challenge("Bearer", realm_name, &missing.join(" ")),
            Self::InsufficientUserAuthentication {
                reason,
                acr_values,
                max_age,
            } => {
                let mut s = format!(
                    "Bearer realm={realm}, error=\"insufficient_user_authentication\", error_description={}",
                    quote(reason)
                );
                if !acr_values.is_empty() {
                    s.push_str(&format!(", acr_values={}", quote(&acr_values.join(" "))));
                }
                if let Some(m) = max_age {
                    s.push_str(&format!(", max_age={m}"));
                }
                s
            }
            _ => format!("Bearer realm={realm}, error=\"invalid_token\", error_description={desc}"),
        })
    }
}

/// The RFC 6750 §3.1 challenge of a 403 for want of scope: `scheme` (`Bearer`, or
/// `DPoP` for a DPoP-bound token, RFC 9449 §7.1), `realm`, and in `scope` the scope(s)
/// that would allow the request. Used for the route's `required_scopes` and for the FHIR
/// adapter's scope refusals alike.
pub fn insufficient_scope_challenge(scheme: &str, realm: &str, scope: &str) -> String {
    format!(
        "{scheme} realm={}, error=\"insufficient_scope\", error_description={}, scope={}",
        quote(realm),
        quote(AuthError::InsufficientScope(Vec::new()).client_message()),
        quote(scope)
    )
}

/// Quote a value for an auth-param: only visible ASCII and space survive,
/// `"` and `\` are dropped, so the header is always valid and unambiguous.
fn quote(s: &str) -> String {
    let inner: String = s
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .collect();
    format!("\"{inner}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_authenticate_challenges_carry_the_error_and_acr_values() {
        assert_eq!(
            AuthError::MissingToken.www_authenticate().unwrap(),
            "Bearer realm=\"phr-gateway\""
        );
        let e = AuthError::InsufficientUserAuthentication {
            reason: "two factors \"required\"".into(),
            acr_values: vec!["urn:a".into(), "urn:b".into()],
            max_age: Some(600),
        };
        assert_eq!(e.status(), 401);
        let h = e.www_authenticate().unwrap();
        assert!(h.contains("error=\"insufficient_user_authentication\""));
        assert!(h.contains("error_description=\"two factors required\""));
        assert!(h.contains("acr_values=\"urn:a urn:b\""));
        assert!(h.contains("max_age=600"));
        let d = AuthError::Dpop(DpopError::Replay);
        assert_eq!(d.code(), "dpop_replay");
        assert!(d
            .www_authenticate()
            .unwrap()
            .starts_with("DPoP realm=\"phr-gateway\", error=\"invalid_dpop_proof\""));
        assert_eq!(AuthError::InsufficientScope(vec![]).status(), 403);
        assert_eq!(AuthError::KeysUnavailable.www_authenticate(), None);
    }

    /// RFC 6750 §3.1: a malformed request is a 400 `invalid_request`; a scope refusal
    /// names the scope that would allow it.
    #[test]
    fn invalid_request_and_insufficient_scope_challenges_are_exact() {
        let e = AuthError::MalformedAuthorization("more than one Authorization header");
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.www_authenticate().unwrap(),
            "Bearer realm=\"phr-gateway\", error=\"invalid_request\", error_description=\"malformed Authorization header: more than one Authorization header\""
        );
        let e = AuthError::InsufficientScope(vec!["user/Observation.rs".into(), "openid".into()]);
        assert_eq!(
            e.www_authenticate_in("clinic").unwrap(),
            "Bearer realm=\"clinic\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"user/Observation.rs openid\""
        );
    }

    /// RFC 9449 §7.1: each DPoP refusal says which check failed, in the challenge and in
    /// the message, and none of them carries the proof's values.
    #[test]
    fn dpop_refusals_name_the_failed_check() {
        let cases = [
            (DpopError::Replay, "proof replayed (jti seen before)"),
            (DpopError::HtuMismatch, "htu does not match the request URL"),
            (DpopError::HtmMismatch, "htm does not match the request method"),
            (DpopError::AthMismatch, "ath does not match the access token"),
            (
                DpopError::IatOutOfWindow { iat: 1, now: 1_000_000 },
                "iat outside the allowed window (check the client clock)",
            ),
            (DpopError::JktMismatch, "proof key does not match the token's cnf.jkt"),
            (DpopError::BadSignature, "proof signature invalid"),
            (DpopError::Malformed("secret-jti-value".into()), "malformed proof"),
            (DpopError::AlgNotAllowed("HS256-secret".into()), "proof alg not allowed"),
            (DpopError::BadJwk("d member present: abc".into()), "proof jwk header"),
        ];
        for (e, what) in cases {
            let err = AuthError::Dpop(e.clone());
            let header = err.www_authenticate().unwrap();
            let prefix = format!(
                "DPoP realm=\"phr-gateway\", error=\"invalid_dpop_proof\", error_description=\"invalid DPoP proof: {what}"
            );
            assert!(header.starts_with(&prefix), "{e:?}: {header}");
            assert!(header.ends_with("algs=\"ES256 EdDSA RS256 PS256\""), "{header}");
            assert!(err.description().contains(what), "{e:?}");
            for secret in ["secret", "1000000", "abc"] {
                assert!(!header.contains(secret), "{e:?} leaks {secret}: {header}");
            }
        }
    }
}
