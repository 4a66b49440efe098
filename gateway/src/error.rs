//! The one place where a refusal becomes a response ("rescue").
//!
//! Every stage of the pipeline returns a [`GatewayError`]; [`rescue`] maps it to a status
//! and a small JSON body with a stable code, a message and the request id. No other code
//! writes an error response, so every refusal looks the same to clients and is counted
//! the same way. Nothing here ever turns an error into "allow".

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why the gateway answered the request itself instead of the upstream. Each variant
/// has one status ([`GatewayError::status`]) and one stable code
/// ([`GatewayError::code`]) that clients, metrics and access records share.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the request's host and path (on this listener); 404 `no_route`.
    #[error("no route matches this host and path")]
    NoRoute,
    /// `<fhir base>/.well-known/smart-configuration` on a FHIR route without
    /// `[routes.smart]`; 404 `smart_not_configured` (never forwarded).
    #[error(
        "this FHIR base publishes no SMART configuration; ask the operator for the authorization server's address"
    )]
    SmartNotConfigured,
    /// The path has dot segments, encoded separators or backslashes, which a backend
    /// could resolve to another route's path; 400 `bad_path`.
    #[error("the request path is not acceptable: {0}")]
    BadPath(&'static str),
    /// The request's framing is malformed or ambiguous (RFC 9112 / RFC 9113).
    #[error("the request is malformed: {0}")]
    BadRequest(&'static str),
    /// The route needs a verified client certificate and the connection has none
    /// (EX-MTLS-1).
    #[error("this route requires a client certificate; connect with your institution's certificate through a listener that asks for one")]
    ClientCertRequired,
    /// The body is longer than the route's `max_body_bytes` (AV-DOS-1); 413.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The route's limit, in bytes, told to the client.
        limit: u64,
    },
    /// A WebSocket upgrade on a route that does not enable them.
    #[error("WebSocket upgrades are not enabled on this route")]
    UpgradeNotAllowed,
    /// Every endpoint is ejected; `retry_after` is when one may be back (ejection end
    /// or next health probe).
    #[error("no healthy endpoint for upstream {upstream}")]
    NoHealthyEndpoint {
        /// The upstream's name in the config.
        upstream: String,
        /// When to try again (the response's `Retry-After`).
        retry_after: std::time::Duration,
    },
    /// The residency policy refused the upstream's address (DATA-JP-1); 502.
    #[error("the upstream connection is refused by the residency policy")]
    EgressRefused {
        /// The upstream's name in the config.
        upstream: String,
        /// The policy's reason, for the log only.
        reason: String,
    },
    /// No connection to the upstream could be opened; 502.
    #[error("cannot reach upstream {upstream}")]
    UpstreamConnect {
        /// The upstream's name in the config.
        upstream: String,
        /// What failed (DNS, TCP, TLS), for the log only.
        reason: String,
    },
    /// The upstream sent no response head within its `response_timeout`; 504.
    #[error("upstream {upstream} did not answer within {seconds:.1} s")]
    UpstreamTimeout {
        /// The upstream's name in the config.
        upstream: String,
        /// The timeout that passed.
        seconds: f64,
    },
    /// The exchange with the upstream broke, or its answer could not be checked; 502.
    #[error("upstream {upstream} failed while answering")]
    UpstreamFailed {
        /// The upstream's name in the config.
        upstream: String,
        /// What failed, for the log only.
        reason: String,
    },
    /// Authentication refused the request (status, challenge and code from the error).
    #[error("{}", .error.description())]
    Auth {
        /// Why the token (or its absence) was refused.
        error: crate::auth::AuthError,
        /// The `WWW-Authenticate` challenge to send, if any.
        challenge: Option<String>,
    },
    /// The FHIR adapter refused the request or the response (ACL-PHR-1).
    #[error("{0}")]
    Fhir(#[from] fhir_adapter::FhirError),
    /// A confined read reached a resource outside the patient's compartment (ACL-PHR-1).
    /// The client sees `shown` (not found, exactly as for a resource that does not
    /// exist); logs and the access record keep `reason`.
    #[error("{shown}")]
    Concealed {
        /// What the client is told: not found.
        shown: fhir_adapter::FhirError,
        /// What happened, for the log and the access record.
        reason: fhir_adapter::FhirError,
    },
    /// A rate-limit policy refused the request (AV-DOS-1): over its limit, or its
    /// shared store (Redis) could not answer and the policy fails closed.
    #[error("{}", rate_limit_message(.0))]
    RateLimited(Box<crate::limits::decision::RateLimitDecision>),
    /// Too many failed authentications from this source or for this subject (AUTH-LOCK-1).
    #[error("too many failed authentications; try again later")]
    AuthLocked {
        /// How long the lock lasts (the response's `Retry-After`).
        retry_after: std::time::Duration,
    },
    /// The subject is on the block list (bulk access, or an operator's decision).
    #[error("this account is blocked; contact the operator")]
    SubjectBlocked,
    /// The upload filter refused the body's content (EX-FILE-1).
    #[error("{message}")]
    UploadRefused {
        /// 415 for a refused type, 422 for refused content.
        status: StatusCode,
        /// The filter's stable reason code.
        code: &'static str,
        /// What was refused and why, for the client.
        message: String,
    },
    /// Neither the database nor the local spool took the access record (LOG-ACC-1):
    /// the response is withheld rather than served unrecorded.
    #[error("access records cannot be written; the request was not served")]
    AuditUnavailable,
    /// The client's body could not be read (it broke off or was framed badly); the
    /// reason stays in the log.
    #[error("the request body could not be read")]
    ClientBody(String),
    /// The route needs tokens but no authenticator is configured: refuse, never allow.
    #[error("authentication is not available")]
    AuthUnavailable,
    /// A phase panicked (a defect in the gateway). The request is refused, recorded and
    /// counted like any other refusal; the panic message stays in the log.
    #[error("the gateway failed while handling this request; the operator can find it by its request id")]
    Internal(String),
}

impl GatewayError {
    /// A request body that could not be read whole under the route's `limit`.
    pub fn from_request_body(e: crate::proxy::body::BodyError, limit: u64) -> Self {
        match e {
            crate::proxy::body::BodyError::TooLarge => Self::BodyTooLarge { limit },
            crate::proxy::body::BodyError::Unreadable(reason) => Self::ClientBody(reason),
        }
    }

    /// A forwarding failure, as the client sees it; `body_limit` is the route's
    /// `max_body_bytes`, told to a client whose streamed body passed it.
    pub fn from_upstream(e: crate::proxy::UpstreamError, body_limit: u64) -> Self {
        use crate::proxy::UpstreamError as U;
        match e {
            U::NoHealthyEndpoint { upstream, retry_after } => Self::NoHealthyEndpoint { upstream, retry_after },
            U::EgressRefused { upstream, reason } => Self::EgressRefused { upstream, reason },
            U::Connect { upstream, reason } => Self::UpstreamConnect { upstream, reason },
            U::Timeout { upstream, seconds } => Self::UpstreamTimeout { upstream, seconds },
            U::Failed { upstream, reason } => Self::UpstreamFailed { upstream, reason },
            U::RequestBodyTooLarge => Self::BodyTooLarge { limit: body_limit },
            U::ClientBody(reason) => Self::ClientBody(reason),
            U::BadPath(why) => Self::BadPath(why),
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute | Self::SmartNotConfigured => StatusCode::NOT_FOUND,
            Self::BadPath(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ClientCertRequired => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpgradeNotAllowed => StatusCode::BAD_REQUEST,
            Self::NoHealthyEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::EgressRefused { .. } | Self::UpstreamConnect { .. } | Self::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Auth { error, .. } => StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            Self::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Fhir(e) | Self::Concealed { shown: e, .. } => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
            Self::RateLimited(d) => match d.denial {
                Some(crate::limits::decision::Denial::StoreUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::TOO_MANY_REQUESTS,
            },
            Self::AuthLocked { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::SubjectBlocked => StatusCode::FORBIDDEN,
            Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UploadRefused { status, .. } => *status,
            Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When a client should try again: the auth back-off's lock, the upstream's own
    /// estimate (ejection end or next health probe), or [`UNAVAILABLE_RETRY_AFTER`] for
    /// other 503s, outages the gateway cannot time (store, keys: another
    /// instance behind the load balancer may answer sooner). `None`: not worth a retry
    /// as it stands.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::AuthLocked { retry_after } | Self::NoHealthyEndpoint { retry_after, .. } => Some(*retry_after),
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }

    /// Stable reason code for clients, metrics and access records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::SmartNotConfigured => "smart_not_configured",
            Self::BadPath(_) => "bad_path",
            Self::BadRequest(_) => "bad_request",
            Self::ClientCertRequired => "client_cert_required",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UpgradeNotAllowed => "upgrade_not_allowed",
            Self::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            Self::EgressRefused { .. } => "egress_refused",
            Self::UpstreamConnect { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::Auth { error, .. } => error.code(),
            Self::AuthUnavailable => "auth_unavailable",
            Self::Fhir(e) => e.issue_code(),
            Self::Concealed { .. } => "other_patient_concealed",
            Self::RateLimited(d) => match d.denial {
                Some(crate::limits::decision::Denial::StoreUnavailable) => "rate_limit_unavailable",
                _ => "rate_limited",
            },
            Self::AuthLocked { .. } => "auth_locked",
            Self::SubjectBlocked => "subject_blocked",
            Self::AuditUnavailable => "audit_unavailable",
            Self::UploadRefused { code, .. } => code,
            Self::ClientBody(_) => "bad_body",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// `Retry-After` of a 503 whose end the gateway cannot estimate: short enough that a
/// client comes back soon after a brief outage, long enough not to hammer a long one.
pub const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

fn rate_limit_message(d: &crate::limits::decision::RateLimitDecision) -> String {
    match d.denial {
        Some(crate::limits::decision::Denial::StoreUnavailable) => format!(
            "rate limit of policy {:?} cannot be checked right now (its shared store is unavailable); try again later",
            d.policy
        ),
        _ => format!("rate limit of policy {:?} exceeded", d.policy),
    }
}

/// Turns an error into the response the client sees. Internal details (addresses,
/// OS errors) stay in the log line, not in the body.
/// On FHIR routes (`fhir`) the body is a FHIR OperationOutcome instead of JSON.
pub fn rescue(err: &GatewayError, request_id: &str, fhir: bool) -> Response<Full<Bytes>> {
    let (body, content_type) = match (fhir, err) {
        (true, GatewayError::Fhir(e) | GatewayError::Concealed { shown: e, .. }) => {
            (fhir_adapter::error_response(e, request_id).1, "application/fhir+json")
        }
        (true, e) => {
            let status = e.status().as_u16();
            let code = fhir_adapter::issue_code_for_status(status);
            (
                fhir_adapter::operation_outcome(status, code, &e.to_string(), request_id),
                "application/fhir+json",
            )
        }
        (false, e) => {
            let json = serde_json::json!({
                "error": { "code": e.code(), "message": e.to_string(), "request_id": request_id }
            });
            (json.to_string().into_bytes(), "application/json")
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = err.status();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let GatewayError::RateLimited(d) = err {
        crate::limits::headers::insert_headers(resp.headers_mut(), &[d]);
    }
    // Every 503 and the auth back-off's 429 say when to come back (RFC 9110 §10.2.3), so
    // clients and load balancers retry on time instead of at once; a rate-limit refusal
    // already has its own.
    if let Some(wait) = err.retry_after() {
        if !resp.headers().contains_key(header::RETRY_AFTER) {
            // Rounded up (a client told to come back early would only be refused again)
            // and capped at an hour (a number that large only tells a client to give up).
            let wait = wait.min(std::time::Duration::from_secs(3600));
            let secs = crate::limits::headers::ceil_secs(wait).max(1);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
    if let GatewayError::Auth { challenge: Some(c), .. } = err {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Issue 17, item 7: every 503 the gateway writes carries `Retry-After`.
    #[test]
    fn every_503_says_when_to_come_back() {
        let cases = [
            GatewayError::NoHealthyEndpoint {
                upstream: "u".into(),
                retry_after: Duration::from_millis(2_300),
            },
            GatewayError::AuthUnavailable,
            GatewayError::AuditUnavailable,
        ];
        for err in &cases {
            for fhir in [false, true] {
                let resp = rescue(err, "r1", fhir);
                assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
                let secs: u64 = resp.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
                assert!(secs >= 1, "{err:?}");
            }
        }
        let resp = rescue(&cases[0], "r1", false);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3", "rounded up from 2.3 s");
        let forever = GatewayError::NoHealthyEndpoint {
            upstream: "u".into(),
            retry_after: Duration::MAX,
        };
        assert_eq!(rescue(&forever, "r1", false).headers()[header::RETRY_AFTER], "3600");
        // Not on other statuses.
        assert!(rescue(&GatewayError::NoRoute, "r1", false)
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }
}
