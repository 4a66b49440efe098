//! phr-gateway: a TLS-terminating reverse proxy that enforces, on every request, the
//! safeguards Japan's guidelines for medical information demand.
//!
//! The request path is one file, `src/pipeline.rs`, read top to bottom; the README has
//! its diagram and the module map. The public modules are what the `phr-gateway` binary
//! and an embedding program need: start the gateway ([`app`]), load and check a
//! configuration ([`config`], [`startup`]), the operator commands ([`ops`],
//! [`residency`], [`audit`] verification and export, the [`compliance`] report and lint), the token verifier ([`auth`]) and
//! the demo ([`demo`]). Everything else is crate-internal.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod compliance;
pub mod config;
pub(crate) mod context;
pub mod demo;
pub(crate) mod error;
mod fault;
pub mod handover;
pub mod healthcheck;
pub(crate) mod limits;
pub mod metrics;
pub mod ops;
pub(crate) mod phases;
pub(crate) mod pipeline;
pub(crate) mod preflight;
pub mod probe;
pub(crate) mod proxy;
pub(crate) mod readiness;
pub mod residency;
pub(crate) mod runtime;
pub(crate) mod server;
pub mod startup;
pub mod store;
pub(crate) mod tls;
pub(crate) mod util;

#[cfg(test)]
mod fuzz_budget;
