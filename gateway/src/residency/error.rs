//! The refusals of the domestic-egress safeguard (DATA-JP-1, DATA-JP-2,
//! DATA-JP-3, ONL-3).
//!
//! Each variant is one precise reason, and each message names the target,
//! says what was wrong and what to do, because these errors are read by an
//! operator at start-up or in a log at 3 a.m., not by a programmer.

use std::net::IpAddr;

use super::jurisdiction::{Jurisdiction, Target};

/// Why the gateway refuses to send data to a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidencyError {
    /// The target has no `jurisdiction`: we refuse rather than assume, so
    /// that a newly added target cannot carry data abroad by default.
    #[error("{target}: no jurisdiction declared; add jurisdiction = \"{required}\" to {section} once you have confirmed the server is located in {}", required.describe())]
    Undeclared {
        /// The target's label, e.g. `upstream "fhir" (https://fhir.test)`.
        target: String,
        /// The config section to edit, e.g. `[upstreams.fhir]`.
        section: String,
        /// The jurisdiction the gateway requires.
        required: Jurisdiction,
    },
    /// The operator declared the target to be in another country.
    #[error("{target}: declared jurisdiction \"{declared}\", but only \"{required}\" is allowed for medical data (DATA-JP-1); move this service to a server in {} under a contract that says so, or remove it from the configuration", required.describe())]
    ForeignJurisdiction {
        /// The target's label.
        target: String,
        /// What the configuration says.
        declared: Jurisdiction,
        /// The jurisdiction the gateway requires.
        required: Jurisdiction,
    },
    /// A public address outside the domestic allow-list: the host may have
    /// moved abroad, or DNS may be pointing somewhere it should not.
    #[error("{target}: address {addr} is not in the domestic allow-list; refusing to connect. If the server really is in Japan, add its network to the allow-list (see docs/residency.md); otherwise fix DNS or the configured host")]
    NotInAllowList {
        /// The target's label (or a generic description, see [`ResidencyError::with_target`]).
        target: String,
        /// The refused address (IPv4-mapped IPv6 shown as IPv4).
        addr: IpAddr,
    },
    /// A private, loopback or link-local address for a target that is not
    /// declared in-cluster: such an address is not "in Japan" by itself, it
    /// is wherever the gateway happens to run, so it needs a statement.
    #[error("{target}: address {addr} is private, loopback or link-local, which is only allowed for targets declared in_cluster = true; set in_cluster = true if this service runs inside your own cluster in Japan, or add the address to the allow-list explicitly")]
    PrivateNotInCluster {
        /// The target's label (or a generic description).
        target: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// Unspecified, multicast or broadcast: never a real server, and
    /// connecting to 0.0.0.0 reaches the local host on Linux.
    #[error("{target}: address {addr} is unspecified, multicast or broadcast and can never be a server; check the DNS records of this host")]
    Unroutable {
        /// The target's label (or a generic description).
        target: String,
        /// The refused address.
        addr: IpAddr,
    },
}

impl ResidencyError {
    /// Replaces the generic target description of an address refusal with
    /// the target's own label.
    ///
    /// [`super::policy::ResidencyPolicy::check_address`] sees only an address and a flag, so
    /// it can only say "a target outside the cluster"; the connector, which
    /// knows the target, calls this before logging so that the log names
    /// the upstream. Declaration errors already name their target and are
    /// returned unchanged.
    pub fn with_target(self, target: &Target) -> Self {
        let label = target.label();
        match self {
            ResidencyError::NotInAllowList { addr, .. } => ResidencyError::NotInAllowList { target: label, addr },
            ResidencyError::PrivateNotInCluster { addr, .. } => {
                ResidencyError::PrivateNotInCluster { target: label, addr }
            }
            ResidencyError::Unroutable { addr, .. } => ResidencyError::Unroutable { target: label, addr },
            other => other,
        }
    }

    /// The refused address, for metrics and structured logs; `None` for
    /// declaration errors.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            ResidencyError::NotInAllowList { addr, .. }
            | ResidencyError::PrivateNotInCluster { addr, .. }
            | ResidencyError::Unroutable { addr, .. } => Some(*addr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::jurisdiction::TargetKind;
    use super::*;

    #[test]
    fn with_target_names_the_target() {
        let generic = ResidencyError::NotInAllowList {
            target: "a target outside the cluster".into(),
            addr: "127.0.0.2".parse().unwrap(),
        };
        let t = Target {
            kind: TargetKind::Upstream,
            name: "fhir".into(),
            url_or_host: "https://fhir.test".into(),
            jurisdiction: Some(Jurisdiction::JP),
            in_cluster: false,
        };
        let named = generic.with_target(&t);
        let msg = named.to_string();
        assert!(
            msg.starts_with("upstream \"fhir\" (https://fhir.test): address 127.0.0.2 is not"),
            "{msg}"
        );
        assert_eq!(named.addr(), Some("127.0.0.2".parse().unwrap()));
    }
}
