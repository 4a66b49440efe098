//! What one connection and one request have established so far, as the request path's
//! phases hand it on. It lives apart from the pipeline (`pipeline.rs`) so that the phases can
//! read and write it without importing the path they sit in: the pipeline imports the
//! phases, never the other way round.

use crate::auth::Identity;
use crate::limits::decision::RateLimitDecision;
use crate::proxy::headers::ForwardedCache;
use crate::runtime::ActiveRoute;
use crate::tls::ClientIdentity;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Response bodies: streamed from the upstream (`Left`), or made or rewritten by the
/// gateway (`Right`: refusals, checked FHIR responses).
pub type GatewayBody = Either<Incoming, Full<Bytes>>;

/// What the connection established before any request: who connected, and how. Shared
/// by every request on the connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer (a load balancer's address when one sits in front).
    pub peer: SocketAddr,
    /// The listener's name from the config (`[[listeners]] name`); routes may be bound
    /// to listeners.
    pub listener: Arc<str>,
    /// "TLSv1.3" or "TLSv1.2", for the access record (EX-TLS-1 evidence).
    pub tls_version: &'static str,
    /// Present when the client presented a certificate that verified (mTLS, EX-MTLS-1).
    pub client: Option<ClientIdentity>,
    /// The forwarding headers' values for this peer, built by the first request.
    pub forwarded: ForwardedCache,
}

/// What one request has learned so far; later phases read what earlier ones wrote, and
/// the access record is built from it whatever the outcome (LOG-ACC-1).
pub struct RequestContext {
    /// The request id (ours, or a trusted hop's), echoed on the response and upstream.
    pub id: HeaderValue,
    /// The connection the request came on.
    pub conn: Arc<ConnInfo>,
    /// When the gateway started on the request (for the latency metric).
    pub started: Instant,
    /// The matched route (phase 2); `None` until then, and for unrouted requests.
    pub route: Option<Arc<ActiveRoute>>,
    /// Who the token says is calling (phase 4); `None` on routes without auth.
    pub identity: Option<Identity>,
    /// The host the client addressed (`:authority` or `Host`).
    pub original_host: Option<HeaderValue>,
    /// What the FHIR adapter learned (phases 5 and 7b): interaction, resource, patients.
    pub fhir: Option<FhirFacts>,
    /// `scheme://host:port` of the endpoint that was chosen (shared with the endpoint).
    pub upstream_base: Option<Arc<str>>,
    /// The client's address: the peer, or, behind a configured trusted proxy, the last
    /// untrusted address of its `X-Forwarded-For` (what limits and records key on).
    pub client_ip: IpAddr,
    /// The upstream address that answered (DATA-JP-1 evidence).
    pub upstream_addr: Option<SocketAddr>,
    /// The rate-limit policies that admitted the request (phases 3 and 5b): every
    /// response carries their `RateLimit` headers, so clients can slow down before a 429.
    pub rate_limits: Vec<RateLimitDecision>,
}

/// The FHIR facts of one request for its access record (LOG-ACC-1).
#[derive(Debug, Clone, Default)]
pub struct FhirFacts {
    /// The FHIR interaction (`read`, `search-type`, `create`, ...).
    pub interaction: &'static str,
    /// The resource type addressed, if any.
    pub resource_type: Option<&'static str>,
    /// The resource id addressed, if any.
    pub resource_id: Option<String>,
    /// The `$operation` invoked, if any.
    pub operation: Option<String>,
    /// Every patient whose data the request or its response touched.
    pub patients: BTreeSet<String>,
}
