//! The FHIR phases of the request path, for routes with `fhir = true`: authorisation
//! before forwarding (phase 5) and the compartment check on the way back (phase 7b).
//! The decisions themselves are the `fhir-adapter` crate's; this file moves bytes
//! between it and the proxy.
//!
//! Two paths under a FHIR base are public, as SMART App Launch expects: the gateway
//! answers `GET <base>/.well-known/smart-configuration` itself from `[routes.smart]`
//! ([`smart_configuration`], after the limits of phase 3, before authentication), and
//! `GET <base>/metadata` skips authentication unless the route sets
//! `metadata_requires_auth` ([`is_public_metadata`]); both carry no patient data.
//!
//! Requirement IDs: ACL-ROLE-1 and ACL-PHR-1 (a patient's token reaches only that
//! patient's data), EX-SEG-1 (unknown operations denied), LOG-ACC-1 (the patients and
//! resources touched are known for the access record), AUTH-ID-1 (only the discovery
//! document and the CapabilityStatement are served without a token).

use crate::context::{FhirFacts, GatewayBody, RequestContext};
use crate::error::GatewayError;
use crate::proxy::body::collect_limited_vec;
use crate::proxy::Outgoing;
use crate::runtime::{ActiveConfig, ActiveRoute};
use bytes::Bytes;
use fhir_adapter::{AccessContext, Classified, Decision, FhirRequest, Scopes};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::collections::BTreeSet;

/// `Cache-Control` of the SMART configuration: clients may keep it a few minutes, so a
/// changed authorization server is seen soon after a reload.
const SMART_CACHE_CONTROL: &str = "public, max-age=300";

/// The SMART discovery path, relative to the FHIR base.
const SMART_PATH: &str = ".well-known/smart-configuration";

/// The path below the route's FHIR base (`/fhir/metadata` → `metadata`), exactly as
/// sent: no segment is dropped or merged, so `/fhir//metadata` is not `metadata`.
fn relative<'p>(route: &ActiveRoute, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(route.prefix.as_str())?;
    match route.prefix.ends_with('/') {
        true => Some(rest),
        false => rest.strip_prefix('/'),
    }
}

/// Whether this request is the FHIR base's `GET metadata` and the route serves it without
/// a token (`metadata_requires_auth = false`, the default). Any other method on `metadata`
/// is authenticated as usual (and then refused by the adapter).
pub fn is_public_metadata(route: &ActiveRoute, method: &Method, path: &str) -> bool {
    route.fhir && !route.metadata_requires_auth && method == Method::GET && relative(route, path) == Some("metadata")
}

/// `<base>/.well-known/smart-configuration` on a FHIR route: `Some` answer (the document,
/// or a refusal: 405 for a method other than GET, 404 where the route publishes none);
/// `None` for every other path. Never forwarded: the backend's own document, if any,
/// would name an authorization server the gateway does not trust.
pub fn smart_configuration(
    route: &ActiveRoute,
    ctx: &mut RequestContext,
    method: &Method,
    path: &str,
) -> Option<Result<Response<GatewayBody>, GatewayError>> {
    if !route.fhir || relative(route, path) != Some(SMART_PATH) {
        return None;
    }
    ctx.fhir = Some(FhirFacts {
        interaction: fhir_adapter::Interaction::SmartConfiguration.as_str(),
        resource_type: None,
        resource_id: None,
        operation: None,
        patients: Default::default(),
    });
    if method != Method::GET {
        return Some(Err(fhir_adapter::FhirError::MethodNotAllowed {
            method: method.to_string(),
            path: SMART_PATH.to_string(),
        }
        .into()));
    }
    let Some(doc) = &route.smart_configuration else {
        return Some(Err(GatewayError::SmartNotConfigured));
    };
    let mut resp = Response::new(Either::Right(Full::new(doc.clone())));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(SMART_CACHE_CONTROL));
    Some(Ok(resp))
}

/// Largest upstream FHIR response the gateway will buffer to check.
const MAX_CHECKED_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// What phase 5 decided, carried to the response check.
pub struct Exchange {
    classified: Classified,
    decision: Decision,
    scopes: Scopes,
    patient: Option<String>,
    /// The client asked with HEAD, forwarded as GET so the response check can read the
    /// body (a HEAD answer has none to check); the body is dropped after the check.
    head: bool,
}

/// Phase 5: classify the interaction, check the token's SMART scopes and the patient
/// compartment, and rewrite the outgoing request to exactly what was authorised.
pub async fn authorize(
    runtime: &ActiveConfig,
    ctx: &mut RequestContext,
    route: &ActiveRoute,
    out: &mut Outgoing,
) -> Result<Exchange, GatewayError> {
    let body = out
        .buffer_body(route.max_body_bytes)
        .await
        .map_err(|e| GatewayError::from_request_body(e, route.max_body_bytes))?;
    let path = out.parts.uri.path();
    let relative = path.get(route.prefix.len()..).unwrap_or("");
    let request = FhirRequest {
        method: out.parts.method.as_str(),
        path: relative,
        query: out.parts.uri.query(),
        content_type: out
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body: (!body.is_empty()).then_some(&body[..]),
    };
    let classified = fhir_adapter::classify(&request, &route.fhir_policy.limits)?;
    // What was attempted is known before the decision: a refusal is recorded with it.
    let attempted = fhir_adapter::access_facts(&classified, None, None);
    ctx.fhir = Some(FhirFacts {
        interaction: attempted.interaction,
        resource_type: attempted.resource_type,
        resource_id: attempted.resource_id.map(str::to_string),
        operation: attempted.operation.map(str::to_string),
        patients: attempted.patients,
    });
    let identity = ctx.identity.as_ref();
    let scopes = Scopes::parse(identity.into_iter().flat_map(|i| i.scopes.iter().map(String::as_str)));
    let patient = identity.and_then(|i| i.patient.clone());
    let access = AccessContext {
        scopes: &scopes,
        patient: patient.as_deref(),
    };
    let mut decision = match fhir_adapter::authorize(&classified, &access, &route.fhir_policy) {
        // The adapter answers a confined read of another patient's `Patient` as a missing
        // resource; the access record still says what was tried.
        Err(fhir_adapter::FhirError::NotFound { .. }) => {
            let patient = classified.id.clone().unwrap_or_default();
            return Err(concealed(
                &classified,
                fhir_adapter::FhirError::OtherPatient { patient },
            ));
        }
        other => other?,
    };
    // Defence in depth: whatever a patient-confined request gets back is checked, even
    // when the query was confined, so a backend that ignores a parameter leaks nothing.
    if decision.patient.is_some() {
        decision.response_check = true;
    }

    for target in &decision.pre_reads {
        pre_read(runtime, ctx, route, target, &decision).await?;
    }

    // Forward the canonical path that was authorised, never the raw one.
    let query = match &decision.rewritten_query {
        Some(q) => q.as_str(),
        None => out.parts.uri.query().unwrap_or(""),
    };
    let prefix = route.prefix.trim_end_matches('/');
    let uri = match query {
        "" => format!("{prefix}/{}", classified.path),
        q => format!("{prefix}/{}?{q}", classified.path),
    };
    out.parts.uri = uri
        .parse()
        .map_err(|_| GatewayError::BadPath("the FHIR path cannot be forwarded"))?;
    let body = match &decision.rewritten_body {
        Some(b) => Bytes::from(b.clone()),
        None => body,
    };
    out.parts.headers.remove(header::CONTENT_LENGTH);
    out.body = Either::Right(Full::new(body));
    if decision.response_check {
        // The response check reads JSON only.
        out.parts
            .headers
            .insert(header::ACCEPT, HeaderValue::from_static("application/fhir+json"));
    }
    // HEAD is authorised exactly as GET: the same response check, on the same body.
    let head = out.parts.method == Method::HEAD && decision.response_check;
    if head {
        out.parts.method = Method::GET;
    }
    ctx.fhir = Some(facts(&classified, &decision, None));
    Ok(Exchange {
        classified,
        decision,
        scopes,
        patient,
        head,
    })
}

/// Phase 7b: check (and if needed filter) what the backend returned, and point its URLs
/// at the gateway.
pub async fn check_response(
    ctx: &mut RequestContext,
    route: &ActiveRoute,
    exchange: Exchange,
    resp: Response<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let (backend_base, public_base, unprefixed) = bases(ctx, route);
    let bases = fhir_adapter::Bases {
        backend: &backend_base,
        public: &public_base,
        unprefixed: unprefixed.as_deref(),
    };
    let (mut parts, body) = resp.into_parts();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let rewritten = parts
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| bases.rewrite(v))
            .and_then(|v| HeaderValue::from_str(&v).ok());
        if let Some(v) = rewritten {
            parts.headers.insert(name, v);
        }
    }
    let conceal = exchange.decision.conceal_existence;
    if conceal && matches!(parts.status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        // The backend's own "not found" becomes the gateway's, the same answer a
        // resource of another patient gets below (ACL-PHR-1).
        return Err(fhir_adapter::not_found(&exchange.classified).into());
    }
    if !(exchange.decision.response_check && parts.status.is_success()) {
        return Ok(Response::from_parts(parts, Either::Left(body)));
    }
    let mut bytes = read_response(route, body).await?;
    let access = AccessContext {
        scopes: &exchange.scopes,
        patient: exchange.patient.as_deref(),
    };
    // One pass over the body: the compartment check and the base-URL rewrite together,
    // as splices applied to the body's own buffer, so a large Bundle is held once.
    let check = match fhir_adapter::check_and_edit_response(&exchange.decision, &access, &bytes, Some(bases)) {
        Err(e @ fhir_adapter::FhirError::ResponseOtherPatient { .. }) if conceal => {
            return Err(concealed(&exchange.classified, e))
        }
        other => other?,
    };
    if conceal && check.removed > 0 {
        // The history of one resource with versions of another patient's: that resource.
        let reason = fhir_adapter::FhirError::ResponseOtherPatient {
            resource_type: exchange.classified.resource_type.unwrap_or("resource").to_string(),
        };
        return Err(concealed(&exchange.classified, reason));
    }
    ctx.fhir = Some(facts(&exchange.classified, &exchange.decision, Some(&check.touched)));
    check.edits.apply_in_place(&mut bytes);
    let out = Bytes::from(bytes);
    if exchange.head {
        // What a GET would have carried, without the body.
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        return Ok(Response::from_parts(parts, Either::Right(Full::new(Bytes::new()))));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Either::Right(Full::new(out))))
}

/// A confined read that reached another patient's resource: the client is told what it
/// would be told for a resource that does not exist; the log and the access record keep
/// the real reason.
fn concealed(classified: &Classified, reason: fhir_adapter::FhirError) -> GatewayError {
    GatewayError::Concealed {
        shown: fhir_adapter::not_found(classified),
        reason,
    }
}

/// Reads the current version of a resource before a write by id under a patient scope:
/// only the backend knows whose `Observation/abc` is.
async fn pre_read(
    runtime: &ActiveConfig,
    ctx: &mut RequestContext,
    route: &ActiveRoute,
    target: &str,
    decision: &Decision,
) -> Result<(), GatewayError> {
    let uri = format!("{}/{target}", route.prefix.trim_end_matches('/'));
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(host) = ctx.original_host.clone() {
        req = req.header(header::HOST, host);
    }
    let (parts, ()) = req
        .header(header::ACCEPT, "application/fhir+json")
        .body(())
        .map_err(|_| GatewayError::BadPath("the pre-read path is not valid"))?
        .into_parts();
    let out = Outgoing {
        parts,
        body: Either::Right(Full::new(Bytes::new())),
        client_upgrade: None,
    };
    let resp = super::forward::forward(runtime, ctx, route, out).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        // Nothing there yet: an update then acts as a create, whose body was checked.
        return Ok(());
    }
    let status = resp.status();
    let bytes = read_response(route, resp.into_body()).await?;
    if !status.is_success() {
        return Err(GatewayError::UpstreamFailed {
            upstream: route.upstream.name.to_string(),
            reason: format!("pre-read of {target} answered {status}"),
        });
    }
    fhir_adapter::check_existing(decision, &bytes)?;
    Ok(())
}

/// Reads an upstream's answer whole for the check (up to [`MAX_CHECKED_RESPONSE_BYTES`]),
/// into one buffer the check's edits can then be applied to.
async fn read_response(route: &ActiveRoute, body: Incoming) -> Result<Vec<u8>, GatewayError> {
    collect_limited_vec(body, MAX_CHECKED_RESPONSE_BYTES)
        .await
        .map_err(|e| GatewayError::UpstreamFailed {
            upstream: route.upstream.name.to_string(),
            reason: e.to_string(),
        })
}

/// The backend's FHIR base URL, the gateway's, and (on a route that strips its prefix)
/// the origin the backend was told (`https://` + the client's Host), for rewriting
/// links. The last is what a
/// backend that builds URLs from `X-Forwarded-Host`/`-Proto` but ignores
/// `X-Forwarded-Prefix` writes; [`fhir_adapter::Bases::rewrite`] moves such URLs under
/// the prefix, and leaves URLs already under it alone.
fn bases(ctx: &RequestContext, route: &ActiveRoute) -> (String, String, Option<String>) {
    let prefix = route.prefix.trim_end_matches('/');
    let upstream = ctx.upstream_base.as_deref().unwrap_or_default().to_string();
    let backend = if route.strip_prefix {
        upstream
    } else {
        format!("{upstream}{prefix}")
    };
    let host = ctx
        .original_host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // What the backend was told (X-Forwarded-Proto/-Host): its URLs start with this.
    let forwarded_origin = format!("https://{host}");
    let public = match &route.public_base_url {
        Some(base) => format!("{}{prefix}", base.trim_end_matches('/')),
        None => format!("{forwarded_origin}{prefix}"),
    };
    let unprefixed = (route.strip_prefix && !prefix.is_empty()).then_some(forwarded_origin);
    (backend, public, unprefixed)
}

/// The access record's FHIR facts after the decision (and the patients of the resources
/// the response check released).
fn facts(c: &Classified, d: &Decision, released: Option<&BTreeSet<String>>) -> FhirFacts {
    let mut f = fhir_adapter::access_facts(c, Some(d), None);
    f.patients.extend(released.into_iter().flatten().cloned());
    FhirFacts {
        interaction: f.interaction,
        resource_type: f.resource_type,
        resource_id: f.resource_id.map(str::to_string),
        operation: f.operation.map(str::to_string),
        patients: f.patients,
    }
}
