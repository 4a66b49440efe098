//! Rate limiting and abuse protection for phr-gateway: who may send how much,
//! how often, and what they may upload.
//!
//! This module is the gateway's サービス不能化の防止 (denial-of-service
//! prevention), 不正アクセス防止 (unauthorised-access prevention) and
//! 不正ソフトウェア対策 / ウイルス対策 (malware countermeasures, CLOUD18 PHR
//! section of the seed) at the HTTP edge. It implements these guideline rows
//! (`shared/guidelines/requirements.md`):
//!
//! | row | what it asks | where |
//! | --- | --- | --- |
//! | AV-DOS-1 | throttle traffic when load exceeds thresholds; 429 with `Retry-After` | [`local`] (GCRA per key, bounded memory), [`shared`] (the same GCRA in Redis for several gateway processes), [`headers`], [`connections`] |
//! | EX-NET-3 | monitor network services, restrict connection sources | [`connections`]: per-IP connection cap and TLS handshake rate, IPv6 keyed by prefix |
//! | EX-IDS-1 | unauthorised-access prevention (IDS/IPS-like anomaly counters → alert hook) | [`auth_backoff`] (auth-failure counters), [`bulk_detector`] (mass reads), metrics counters named in each module |
//! | AUTH-LOCK-1 | stop IDs after a number of failed logins | [`auth_backoff`]: per-IP and per-subject failure counters with block and exponential back-off |
//! | LOG-ACC-1 | review access logs, incl. mass reads | [`bulk_detector`]: distinct patients per subject in a sliding window → [`bulk_detector::BulkAccessAlert`], optional block via [`subject_blocks::BlockStore`] |
//! | EX-FILE-1 | no files with executables or macros | [`upload_filter`]: content (not declared type) decides; PE/ELF/Mach-O/scripts/Java, Office macros, PDF JavaScript, scripts in "images" |
//! | ウイルス対策 (seed) | malware countermeasures | [`upload_filter`] refuses the carriers an edge can recognise; it is not an anti-virus engine and does not replace one on the storage side |
//!
//! How the gateway uses it (each stage can refuse; nothing here writes an HTTP
//! response, the gateway's one rescue function does):
//! 1. Deserialize [`config::LimitsConfig`] (every struct refuses unknown keys)
//!    and call [`config::LimitsConfig::validate`]; print every
//!    [`crate::config::ConfigIssue`] (key, problem, fix).
//! 2. accept → [`connections::ConnectionLimiter::try_acquire`] (hold the guard
//!    for the connection's life) and
//!    [`connections::ConnectionLimiter::check_handshake`] before the TLS handshake.
//! 3. request → [`auth_backoff::AuthBackoff::is_blocked`] before paying for token
//!    verification; pre-auth [`local::LocalLimiter::check`] keyed by source IP.
//! 4. after authentication → subject/client policy ([`local`] or [`shared`]),
//!    with the cost of the FHIR interaction ([`config::PolicyConfig::cost`]);
//!    answer 429 with [`headers::insert_headers`] when denied; the admitting
//!    decisions go into the request context, and every response carries them.
//! 5. upload routes → [`upload_filter::UploadFilter::inspect`] on the buffered body.
//! 6. after the response → [`bulk_detector::BulkAccessDetector::observe`] with the
//!    patients the request touched.

pub use crate::config::limits as config;

pub mod auth_backoff;
pub mod bulk_detector;
pub mod connections;
pub mod decision;
pub mod enforce;
pub mod headers;
pub mod keys;
pub mod local;
pub mod refusal_log;
pub mod shared;
pub mod subject_blocks;
pub mod upload_filter;

mod bounded_store;
mod breaker;
mod config_check;
mod content_sniff;
mod embedded_parts;
mod office_containers;
mod pdf_scan;

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod upload_filter_fuzz;
#[cfg(test)]
mod upload_filter_tests;
