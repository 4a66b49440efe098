//! Token authentication for phr-gateway: who is calling, with which factors,
//! and is the token really theirs.
//!
//! This module is the gateway's なりすまし対策 (impersonation
//! countermeasures) for bearer/DPoP access tokens (OIDC/OAuth 2 JWTs).
//! It implements these guideline rows (`shared/guidelines/requirements.md`):
//!
//! | row | what it asks | where |
//! | --- | --- | --- |
//! | AUTH-ID-1 | identify and authenticate every user; no anonymous PHI access | [`Authenticator::authenticate`], [`RoutePolicy::mode`] (default `required`), `sub` mandatory |
//! | AUTH-2FA-1 | two-factor authentication for systems in operation in FY2027 | [`two_factor`], [`RoutePolicy::two_factor`] / [`RoutePolicy::acr_values`] |
//! | AUTH-2FA-2 | two *steps* of one factor type are not two factors; no long-lived logins | factor *categories* from `amr` ([`FactorConfig`]), [`RoutePolicy::max_auth_age`] |
//! | AUTH-2FA-3 | MFA for online consultation and for operator/admin access | same mechanism, set `two_factor = true` on those routes |
//! | AUTH-IDLE-1 | no sessions left usable for long | [`IssuerConfig::max_token_age`] (`iat`), [`RoutePolicy::max_auth_age`] (`auth_time`), revocation |
//! | ACL-ACCT-1 | leavers'/unused accounts stop working | [`RevocationList`], checked on every request incl. cache hits |
//! | EX-TLS-2 | TLS client certificates on open networks | certificate-bound tokens (RFC 8705) in [`cert_binding`]; the TLS handshake itself is the gateway's |
//! | なりすまし対策 | impersonation countermeasures | header screening (`alg:none`, `jku`/`x5u`/`jwk`/`x5c`, `crit`), per-issuer alg allow-list, key-type/alg match, DPoP (RFC 9449), identity-header stripping ([`HeaderNames::all`]) |
//!
//! How the gateway uses it:
//! 1. Deserialize [`AuthConfig`] (all structs refuse unknown keys) and build an
//!    [`Authenticator`] with its own [`JwksFetcher`] (HTTPS client) and a
//!    [`RevocationList`] (e.g. a [`MemoryRevocations`] it refills from its
//!    database every second).
//! 2. Call [`Authenticator::start`] before reporting ready: it loads every
//!    issuer's JWKS and starts the background refresh.
//! 3. Per request: strip every client-sent header in [`HeaderNames::all`],
//!    call [`Authenticator::authenticate_route`]; on `Err(e)` answer
//!    `e.status()` with `WWW-Authenticate: authenticator.challenge(&e)` and
//!    `e.description()`, and record `e.code()`; on success add
//!    [`identity_headers`] and record the identity (never the token — only
//!    [`Identity::token_hash`]).
//!
//! Not here: the TLS handshake and client-certificate chain validation
//! (EX-TLS-2, gateway's rustls config), gateway-issued sessions and their
//! idle timeout (AUTH-IDLE-1 for cookie sessions), access logging (LOG-*).

pub mod assertion;
pub mod authenticator;
pub mod bearer;
pub mod cert_binding;
pub mod discovery;
pub mod dpop;
pub use crate::config::duration;
pub mod error;
pub mod fetch;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod revocation;
pub mod token_cache;
pub mod two_factor;

#[cfg(test)]
mod header_screening_fuzz;

pub use self::assertion::AssertionSigner;
pub use self::authenticator::{AuthRequest, AuthStats, Authenticator, KeysNotLoaded, MissingKeys};
pub use self::error::{insufficient_scope_challenge, AuthError, DpopError};
pub use self::identity::{identity_headers, Binding, HeaderNames, Identity};
pub use self::jwks::{BoxFuture, JwksFetcher};
pub use self::revocation::{MemoryRevocations, NoRevocations, RevocationList};
pub use self::two_factor::{FactorCategory, FactorConfig};
pub use crate::config::auth::{AuthConfig, AuthMode, IssuerConfig, RoutePolicy};
