//! The checks `phr-gateway run` makes before it creates a file or serves, shared with
//! `phr-gateway check-config`: one function, so a file that `check-config` calls valid
//! cannot then fail at start, nor start a gateway that can only refuse.
//!
//! [`check`] reads and validates the file, then checks what is on disk and what follows
//! from fixed addresses, without dialling anything and without creating anything:
//! listener and upstream certificates and keys (EX-TLS-1, EX-TLS-4, EX-MTLS-1), JWKS
//! files (AUTH-ID-1), the residency policy against upstream and JWKS addresses written
//! as IP literals or `localhost` (DATA-JP-1, DATA-JP-3: such a target could only ever be
//! refused, every request answered 502 `egress_refused`), the store's and Redis's
//! addresses (DATA-JP-1), the access-record keys that already exist and the directories
//! of those `run` will create (LOG-PROT-1, DATA-ENC-1), and the limits (AV-DOS-1).
//! Every problem names the config file, the key and the fix. A reload makes the
//! file and address checks too (`crate::preflight`).
//!
//! Left to `run`, after this passed: creating missing key files, opening the store and
//! checking the key-encryption key against it, fetching JWKS URLs, binding sockets.
//! Those need the network or write to disk.

use crate::audit::startup::AuditStartError;
use crate::config::{self, Config, ConfigIssue, LoadError};
use crate::residency::storage_check::{CheckedStorage, StorageCheckError};
use crate::runtime::{ActiveConfig, BuildError};
use std::net::SocketAddr;
use std::path::Path;

/// Why the gateway did not start. Printed as is, then the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not load, or a runtime cannot be built from it.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The store, the record keys or the access-record writer could not be opened.
    #[error("access records: {0}")]
    Audit(#[from] AuditStartError),
    /// The store or Redis is (or may be) outside the residency policy.
    #[error("residency (DATA-JP-1): {0}")]
    Residency(#[from] StorageCheckError),
    /// A listener's port could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}. Fix: free the port or change the bind address")]
    Bind {
        /// Which listener.
        what: String,
        /// Its bind address.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Taking the sockets over from the running gateway failed (`gateway.handover_socket`).
    #[error(transparent)]
    Handover(#[from] crate::handover::HandoverError),
}

/// A configuration that passed every start-up check, and what the checks established.
pub struct Checked {
    /// The loaded and validated configuration.
    pub config: Config,
    /// The policy-checked addresses of the storage services (Redis is dialled there).
    pub storage: CheckedStorage,
}

/// Every check `run` makes before it may create a file or serve (see the module docs).
pub async fn check(path: &Path) -> Result<Checked, StartError> {
    let config = config::load(path).map_err(BuildError::from)?;
    let invalid = |issues: Vec<ConfigIssue>| {
        StartError::Build(BuildError::Load(LoadError::Invalid {
            file: path.to_path_buf(),
            issues,
        }))
    };
    let mut issues = crate::preflight::file_and_address_issues(&config);
    crate::preflight::audit_keys(&config, &mut issues);
    if !issues.is_empty() {
        return Err(invalid(issues));
    }
    // Where the store and Redis are (their names are resolved: the same check `run` and
    // every reload make before anything is sent there).
    let storage = crate::residency::storage_check::check_storage_targets(&config)
        .await
        .map_err(StartError::Residency)?;
    // The rest of what a runtime is built from (allow-list, authenticator, limits).
    if let Err(e) = ActiveConfig::check(&config, &storage) {
        return Err(invalid(vec![runtime_issue(e)]));
    }
    Ok(Checked { config, storage })
}

/// A failure of the remaining runtime build, under the section it comes from.
fn runtime_issue(e: BuildError) -> ConfigIssue {
    let key = match &e {
        BuildError::ListenerTls { .. } => "listeners",
        BuildError::UpstreamTls { .. } => "upstreams",
        BuildError::AllowList(_) | BuildError::Residency(_) => "residency",
        BuildError::Protection(_) => "limits",
        BuildError::Auth(_) | BuildError::KeysNotLoaded(_) => "auth",
        _ => "gateway",
    };
    crate::preflight::issue(
        key,
        e.to_string(),
        "see the comment on this section in config/gateway.toml",
    )
}
