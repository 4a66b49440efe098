//! The limits' three places in the request path (see `pipeline.rs`):
//! before authentication (source address, route, failed-auth back-off), after it
//! (subject, client, certificate; FHIR interaction cost; block list), and after the
//! response (bulk-access detector). Plus the upload filter on the buffered body.

use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::limits::config::KeyKind;
use crate::limits::enforce::Protection;
use crate::limits::subject_blocks::BlockStore;
use crate::limits::upload_filter::UploadVerdict;
use crate::runtime::ActiveRoute;
use std::time::Instant;

/// Before any token is verified: limits that need no identity, so a flood of forged
/// tokens is cut off before signature checks are paid for (AV-DOS-1, AUTH-LOCK-1).
/// Policies that admit the request are kept in `ctx.rate_limits` for its `RateLimit` headers.
pub async fn before_auth(p: &Protection, route: &ActiveRoute, ctx: &mut RequestContext) -> Result<(), GatewayError> {
    let ip = ctx.client_ip;
    if let Some(wait) = p.auth_backoff.is_blocked(ip, None) {
        return Err(GatewayError::AuthLocked { retry_after: wait });
    }
    for policy in &route.rate_limits {
        let key = match policy.key {
            KeyKind::SourceIp => ip.to_string(),
            KeyKind::Route => route.name.to_string(),
            _ => continue,
        };
        let decision = policy.limiter.check(&key, policy.config.cost(None)).await;
        if !decision.allowed {
            crate::metrics::rate_limit_refused(&decision.policy);
            return Err(GatewayError::RateLimited(Box::new(decision)));
        }
        ctx.rate_limits.push(decision);
    }
    Ok(())
}

/// A 401: counts towards the source address's back-off (the subject is unknown when the
/// token did not verify).
pub fn auth_failed(p: &Protection, ctx: &RequestContext) {
    for lockout in p.auth_backoff.record_failure(ctx.client_ip, None) {
        tracing::warn!(client = %ctx.client_ip, blocked_for_s = lockout.blocked_for.as_secs(), "repeated authentication failures: source blocked");
    }
}

/// After authentication (and FHIR classification, for the cost): the subject's block
/// status and back-off, then the identity-keyed policies.
pub async fn after_auth(
    p: &Protection,
    blocks: &dyn BlockStore,
    route: &ActiveRoute,
    ctx: &mut RequestContext,
) -> Result<(), GatewayError> {
    let identity = ctx.identity.as_ref();
    if let Some(id) = identity {
        if blocks.is_blocked(&id.subject) {
            return Err(GatewayError::SubjectBlocked);
        }
        if let Some(wait) = p.auth_backoff.is_blocked(ctx.client_ip, Some(&id.subject)) {
            return Err(GatewayError::AuthLocked { retry_after: wait });
        }
    }
    let interaction = ctx.fhir.as_ref().map(|f| f.interaction);
    // Collected apart: `identity` borrows `ctx` across the loop.
    let mut admitted = Vec::new();
    for policy in &route.rate_limits {
        let key = match policy.key {
            KeyKind::Subject => identity.map(|i| i.subject.clone()),
            KeyKind::ClientId => identity.and_then(|i| i.client_id.clone()),
            KeyKind::ClientCert => ctx.conn.client.as_ref().map(|c| c.fingerprint_hex()),
            KeyKind::SourceIp | KeyKind::Route => continue,
        };
        // No identity of that kind (an optional-auth route): the pre-auth policies apply.
        let Some(key) = key else { continue };
        let decision = policy.limiter.check(&key, policy.config.cost(interaction)).await;
        if !decision.allowed {
            crate::metrics::rate_limit_refused(&decision.policy);
            return Err(GatewayError::RateLimited(Box::new(decision)));
        }
        admitted.push(decision);
    }
    ctx.rate_limits.extend(admitted);
    Ok(())
}

/// EX-FILE-1: refuses executables, macro-bearing office files and active PDFs by their
/// content on routes with an upload rule.
pub fn inspect_upload(p: &Protection, route: &str, declared: Option<&str>, body: &[u8]) -> Result<(), GatewayError> {
    match p.uploads.inspect(route, declared, body) {
        None | Some(UploadVerdict::Allowed { .. }) => Ok(()),
        Some(UploadVerdict::Refused { reason, status }) => Err(GatewayError::UploadRefused {
            status,
            code: reason.code(),
            message: reason.to_string(),
        }),
    }
}

/// After the response: feeds the bulk-access detector with the patients this request
/// touched (LOG-ACC-1: mass reads are what a leak looks like).
pub fn after_response(p: &Protection, ctx: &RequestContext) {
    let (Some(bulk), Some(id), Some(fhir)) = (&p.bulk, &ctx.identity, &ctx.fhir) else {
        return;
    };
    if fhir.patients.is_empty() {
        return;
    }
    if let Some(alert) = bulk.observe(&id.subject, fhir.patients.iter().map(String::as_str), Instant::now()) {
        tracing::warn!(
            subject = %id.subject,
            distinct_patients = alert.distinct_patients,
            window_s = alert.window.as_secs(),
            blocked = alert.blocked,
            "bulk access: a subject touched more distinct patients than allowed"
        );
    }
}
