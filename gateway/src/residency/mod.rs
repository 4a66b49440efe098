//! Domestic-only egress: keep medical data inside Japan.
//!
//! Japanese guidance requires that servers holding medical information sit
//! where Japanese law can be enforced (DATA-JP-1, DATA-JP-2, DATA-JP-3), that
//! externally stored data lives in places secured by contract (DATA-LOC-1),
//! and that online-consultation systems touching the medical record system
//! follow the same domestic-server rule (ONL-3). A reverse proxy is where
//! that promise is most easily broken by accident: one mistyped upstream
//! URL, a JWKS endpoint on a foreign CDN, or a DNS answer that moves a host
//! abroad, and patient data leaves the country without anyone noticing.
//!
//! This module gives the gateway two independent layers:
//!
//! 1. **Declarations** ([`jurisdiction`]): every place the gateway sends
//!    data to or keeps data in is a [`Target`](jurisdiction::Target) that
//!    must carry a declared [`Jurisdiction`](jurisdiction::Jurisdiction).
//!    Start-up refuses any target that is undeclared or declared elsewhere
//!    ([`check_declarations`](jurisdiction::check_declarations)). The
//!    declaration is the primary control: it records a human decision,
//!    backed by the hosting contract, that the server is in Japan.
//! 2. **Addresses** ([`allow_list`], [`policy`]): at run time every address
//!    the gateway is about to connect to is checked against an
//!    [`AllowList`](allow_list::AllowList) of domestic networks
//!    ([`ResidencyPolicy::check_address`](policy::ResidencyPolicy::check_address)). This is
//!    the backstop for mistakes the declaration cannot see (DNS changes,
//!    stale configuration). The list is generated from the APNIC delegated
//!    statistics by [`apnic`]; registry country is *not* physical location,
//!    so this layer never replaces the declaration (see `docs/residency.md`).
//!
//! [`report`] turns both layers into evidence (the data-location table of
//! DATA-JP-1 / DATA-LOC-1), and [`resolve`] gives the connector and the
//! report one resolver whose answers tests can change at run time.
//!
//! Everything except [`resolve::Resolver::resolve`] is pure and synchronous
//! so that it can be tested without a network and called from config
//! loading, the connector hot path and the CLI alike.
//!
//! Wiring, in order of use:
//! - config load / reload: build the targets, run
//!   `jurisdiction::check_declarations` (refuse to start on `Err`), then
//!   `allow_list::AllowList::load` and `policy::ResidencyPolicy::new`; on reload
//!   failure keep the previous `Arc<ResidencyPolicy>`;
//! - connector: `resolve::Resolver::resolve`, then
//!   `policy::ResidencyPolicy::check_target_address` for every address, connect only
//!   to the ones that passed, never re-resolve;
//! - start-up and reload: `storage_check::check_storage_targets` for the store and
//!   Redis, `storage_check::store_address_check` for each store connection;
//! - CLI ([`commands`]): `apnic::parse_apnic` + `apnic::write_allow_list` for
//!   `import-apnic`, `report::build_report` for `report`.

// No `pub use` re-exports on purpose: full paths such as
// `residency::policy::ResidencyPolicy` make call sites say which layer they use.
pub mod allow_list;
pub mod apnic;
pub mod commands;
pub mod egress;
pub mod error;
pub mod hosts;
pub mod jurisdiction;
pub mod policy;
pub mod report;
pub mod resolve;
pub mod storage_check;
pub mod targets;
