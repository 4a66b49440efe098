//! The request path's phases that join a safeguard to the request: each reads and
//! writes the [`RequestContext`](crate::context::RequestContext) and turns the
//! safeguard's answer into a [`GatewayError`](crate::error::GatewayError) refusal. The
//! safeguards themselves (`limits`, `proxy`, `fhir-adapter`, `audit`) know nothing of
//! the request context or of the pipeline; the pipeline (`pipeline.rs`) calls these in order.

pub mod fhir;
pub mod forward;
pub mod limits;
