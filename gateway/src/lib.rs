//! phr-gateway: a TLS-terminating reverse proxy that enforces, on every request, the
//! safeguards Japan's guidelines for medical information demand.
//!
//! Start at [`pipeline`]: it is the whole request path, top to bottom.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod context;
pub mod demo;
pub mod error;
mod fault;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod phases;
pub mod pipeline;
pub mod proxy;
pub mod readiness;
pub mod residency;
pub mod runtime;
pub mod server;
pub mod startup;
pub mod store;
pub mod tls;
pub mod util;

#[cfg(test)]
mod fuzz_budget;
