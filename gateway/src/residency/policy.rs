//! The per-connection address decision (DATA-JP-1, DATA-JP-2, DATA-JP-3,
//! ONL-3): may the gateway connect to this address for this target?
//!
//! Call it with the address the socket is *actually* about to connect to,
//! after resolution and never with a hostname, and do not resolve again
//! after checking: otherwise a DNS answer that changes between check and
//! connect (rebinding) walks around the check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use super::allow_list::{canonical, AllowList};
use super::error::ResidencyError;

/// Private, loopback, link-local and shared (CGNAT) ranges: where services
/// inside the operator's own cluster live. They say nothing about the
/// country, so they are only accepted for targets declared `in_cluster`.
const IN_CLUSTER_RANGES: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// The address policy of one running configuration.
///
/// Targets outside the cluster may only reach addresses in `allow`;
/// targets declared `in_cluster = true` may additionally reach the private
/// ranges in `in_cluster_ranges`. Nothing is ever allowed to reach an
/// unspecified, multicast or broadcast address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidencyPolicy {
    /// Domestic networks (usually generated from APNIC, plus operator
    /// additions). Listing a private address here explicitly allows it for
    /// every target, which tests use to model "inside Japan" on loopback.
    pub allow: AllowList,
    /// Ranges additionally allowed for in-cluster targets.
    pub in_cluster_ranges: AllowList,
}

/// Why an address was accepted or refused; used by the report and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressVerdict {
    /// In the domestic allow-list.
    AllowList,
    /// Not in the list, but private/loopback and the target is in-cluster.
    InCluster,
    /// Refused, with the reason.
    Refused(Refusal),
}

/// The reasons an address can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Public address outside the allow-list.
    NotInAllowList,
    /// Private address for a target that is not in-cluster.
    PrivateNotInCluster,
    /// Unspecified, multicast or broadcast.
    Unroutable,
}

impl ResidencyPolicy {
    /// A policy with the standard in-cluster ranges.
    pub fn new(allow: AllowList) -> Self {
        ResidencyPolicy {
            allow,
            in_cluster_ranges: Self::default_in_cluster_ranges(),
        }
    }

    /// 127/8, 10/8, 172.16/12, 192.168/16, 169.254/16, 100.64/10, ::1,
    /// fc00::/7, fe80::/10.
    pub fn default_in_cluster_ranges() -> AllowList {
        AllowList::from_nets(IN_CLUSTER_RANGES.iter().filter_map(|s| s.parse::<IpNet>().ok()))
    }

    /// Decides without allocating; the hot path and the report use this.
    pub fn classify(&self, addr: IpAddr, in_cluster: bool) -> AddressVerdict {
        let addr = canonical(addr);
        if is_unroutable(addr) {
            return AddressVerdict::Refused(Refusal::Unroutable);
        }
        if self.allow.contains(addr) {
            return AddressVerdict::AllowList;
        }
        if self.in_cluster_ranges.contains(addr) {
            return if in_cluster {
                AddressVerdict::InCluster
            } else {
                AddressVerdict::Refused(Refusal::PrivateNotInCluster)
            };
        }
        AddressVerdict::Refused(Refusal::NotInAllowList)
    }

    /// Refuses a connection to `addr` unless the policy allows it.
    ///
    /// The error describes the target generically ("a target outside the
    /// cluster"); call [`ResidencyError::with_target`] to name it, or use
    /// [`ResidencyPolicy::check_target_address`].
    pub fn check_address(&self, addr: IpAddr, in_cluster: bool) -> Result<(), ResidencyError> {
        let generic = if in_cluster {
            "an in-cluster target"
        } else {
            "a target outside the cluster"
        };
        self.check_labelled(addr, in_cluster, || generic.to_owned())
    }

    /// Like [`ResidencyPolicy::check_address`], with the target's own label in the error.
    pub fn check_target_address(
        &self,
        target: &super::jurisdiction::Target,
        addr: IpAddr,
    ) -> Result<(), ResidencyError> {
        self.check_labelled(addr, target.in_cluster, || target.label())
    }

    fn check_labelled(
        &self,
        addr: IpAddr,
        in_cluster: bool,
        label: impl FnOnce() -> String,
    ) -> Result<(), ResidencyError> {
        let shown = canonical(addr);
        match self.classify(addr, in_cluster) {
            AddressVerdict::AllowList | AddressVerdict::InCluster => Ok(()),
            AddressVerdict::Refused(Refusal::NotInAllowList) => Err(ResidencyError::NotInAllowList {
                target: label(),
                addr: shown,
            }),
            AddressVerdict::Refused(Refusal::PrivateNotInCluster) => Err(ResidencyError::PrivateNotInCluster {
                target: label(),
                addr: shown,
            }),
            AddressVerdict::Refused(Refusal::Unroutable) => Err(ResidencyError::Unroutable {
                target: label(),
                addr: shown,
            }),
        }
    }
}

/// Addresses that are never a server. 0.0.0.0 is the dangerous one: on
/// Linux connecting to it reaches the local host, bypassing `in_cluster`.
fn is_unroutable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let this_network = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 8).ok();
            this_network.is_some_and(|n| n.contains(&a)) || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a == Ipv6Addr::UNSPECIFIED || a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::jurisdiction::{Jurisdiction, Target, TargetKind};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn policy(entries: &[&str]) -> ResidencyPolicy {
        ResidencyPolicy::new(AllowList::from_nets(entries.iter().map(|s| s.parse().unwrap())))
    }

    #[test]
    fn external_targets_only_get_the_list() {
        let p = policy(&["127.0.0.1/32", "1.0.16.0/20"]);
        assert_eq!(p.check_address(ip("127.0.0.1"), false), Ok(()));
        assert_eq!(p.check_address(ip("1.0.16.9"), false), Ok(()));
        // 127.0.0.2 models "abroad" in integration tests.
        let err = p.check_address(ip("127.0.0.2"), false).unwrap_err();
        assert!(matches!(err, ResidencyError::PrivateNotInCluster { .. }));
        assert!(err.to_string().contains("127.0.0.2"), "{err}");
        let err = p.check_address(ip("8.8.8.8"), false).unwrap_err();
        assert!(matches!(err, ResidencyError::NotInAllowList { .. }));
    }

    #[test]
    fn private_ranges_need_in_cluster() {
        let p = policy(&["1.0.16.0/20"]);
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(
                p.classify(ip(private), false),
                AddressVerdict::Refused(Refusal::PrivateNotInCluster),
                "{private}"
            );
            assert_eq!(p.classify(ip(private), true), AddressVerdict::InCluster, "{private}");
        }
        // Just outside the private ranges is public and not in the list.
        for public in ["172.32.0.1", "100.128.0.1", "11.0.0.1", "fec0::1"] {
            assert_eq!(
                p.classify(ip(public), true),
                AddressVerdict::Refused(Refusal::NotInAllowList),
                "{public}"
            );
        }
        // In-cluster targets may still use the list.
        assert_eq!(p.classify(ip("1.0.16.1"), true), AddressVerdict::AllowList);
    }

    #[test]
    fn unroutable_is_always_refused() {
        // Even a (bad) list covering them cannot allow these.
        let p = policy(&["0.0.0.0/1", "128.0.0.0/1", "::/1", "ff00::/8"]);
        for a in ["0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            assert_eq!(
                p.classify(ip(a), true),
                AddressVerdict::Refused(Refusal::Unroutable),
                "{a}"
            );
        }
    }

    #[test]
    fn mapped_addresses_are_reported_as_ipv4() {
        let p = policy(&["1.0.16.0/20"]);
        assert_eq!(p.check_address(ip("::ffff:1.0.16.1"), false), Ok(()));
        let err = p.check_address(ip("::ffff:8.8.8.8"), false).unwrap_err();
        assert_eq!(err.addr(), Some(ip("8.8.8.8")));
    }

    #[test]
    fn target_check_names_the_target() {
        let p = policy(&["127.0.0.1/32"]);
        let t = Target {
            kind: TargetKind::Upstream,
            name: "fhir".into(),
            url_or_host: "https://fhir.test:8443".into(),
            jurisdiction: Some(Jurisdiction::JP),
            in_cluster: false,
        };
        let msg = p.check_target_address(&t, ip("127.0.0.2")).unwrap_err().to_string();
        assert!(
            msg.starts_with("upstream \"fhir\" (https://fhir.test:8443): address 127.0.0.2"),
            "{msg}"
        );
    }
}
