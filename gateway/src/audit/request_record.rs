//! The access record of one request (LOG-ACC-1): built from what the pipeline learned,
//! never from bodies, tokens or query values.

use super::record::{scrub_path, AccessDecision, AccessRecord};
use crate::context::RequestContext;

/// The request's facts as an access record. Never bodies, tokens or query values.
pub fn record_for(
    ctx: &RequestContext,
    meta: &RequestMeta,
    status: u16,
    reason: Option<&str>,
    bytes_out: u64,
) -> AccessRecord {
    let id = ctx.identity.as_ref();
    let fhir = ctx.fhir.as_ref();
    AccessRecord {
        time: super::time::now_ms(),
        clock_synchronized: None,
        request_id: ctx.id.to_str().unwrap_or_default().to_string(),
        instance: meta.instance.clone(),
        source_ip: ctx.client_ip.to_string(),
        tls_version: Some(ctx.conn.tls_version.to_string()),
        client_cert_fingerprint: ctx.conn.client.as_ref().map(|c| c.fingerprint_hex()),
        client_cert_subject: ctx.conn.client.as_ref().map(|c| c.subject.clone()),
        token_issuer: id.map(|i| i.issuer.clone()),
        subject: id.map(|i| i.subject.clone()),
        client_id: id.and_then(|i| i.client_id.clone()),
        jti: id.and_then(|i| i.jti.clone()),
        auth_factors: id.map(|i| i.amr.clone()).unwrap_or_default(),
        session_start: id.and_then(|i| i.auth_time),
        patients: fhir.map(|f| f.patients.iter().cloned().collect()).unwrap_or_default(),
        interaction: fhir.map(|f| f.interaction.to_string()),
        resource_type: fhir.and_then(|f| f.resource_type.map(str::to_string)),
        resource_id: fhir.and_then(|f| f.resource_id.clone()),
        method: meta.method.clone(),
        route: ctx.route.as_ref().map(|r| r.name.to_string()).unwrap_or_default(),
        path: scrub_path(&meta.path),
        status,
        decision: if reason.is_none() && status < 400 {
            AccessDecision::Allowed
        } else {
            AccessDecision::Refused
        },
        reason: reason.map(str::to_string),
        bytes_in: meta.bytes_in,
        bytes_out,
        latency_ms: ctx.started.elapsed().as_millis() as u64,
        upstream: ctx.route.as_ref().map(|r| r.upstream.name.to_string()),
        upstream_addr: ctx.upstream_addr.map(|a| a.to_string()),
    }
}

/// What the record needs from the request before the pipeline consumes it.
pub struct RequestMeta {
    /// `gateway.instance_id`.
    pub instance: String,
    /// The request method.
    pub method: String,
    /// The request path (scrubbed before it is recorded).
    pub path: String,
    /// Request body bytes read.
    pub bytes_in: u64,
}
