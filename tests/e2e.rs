//! End-to-end tests: each module starts the real `phr-gateway` binary and talks to it
//! over TLS. `common` holds what they share (test PKI, backends, the gateway process, a
//! TLS client, configuration text); `phr_test_support` what the unit tests share too.

mod common;

mod audit_e2e;
mod auth_e2e;
mod compliance;
mod demo_e2e;
mod discovery_e2e;
mod fhir_e2e;
mod handover_e2e;
mod health_e2e;
mod limits_e2e;
mod monitoring;
mod operations;
mod prefix_e2e;
mod probe_e2e;
mod proxy;
mod residency;
mod scale_out_e2e;
mod smart_e2e;
mod tls;
