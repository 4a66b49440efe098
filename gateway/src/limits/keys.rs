//! Fixed-size keys for the limiters (AV-DOS-1, EX-NET-3).
//!
//! A limiter that stores attacker-chosen strings (tokens, subjects, paths) as
//! keys lets the attacker choose how much memory each entry costs. Every
//! in-memory table in this module therefore stores a 64-bit [`KeyHasher`]
//! digest instead: a key costs the same few bytes whatever its length. The
//! hasher is SipHash keyed with a per-process random secret (std's
//! `RandomState`), so an outsider cannot precompute keys that collide in our
//! tables (hash flooding) or share a victim's bucket.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;

use ipnet::Ipv6Net;

/// Hashes limiter keys to fixed-size `u64`s with a per-process random key.
///
/// Why: bounded memory per key and no attacker-predictable collisions. The
/// digests are only meaningful inside this process; never persist them or
/// compare them across gateway instances (the Redis limiter uses the key
/// text, see [`super::shared`]).
#[derive(Clone, Debug, Default)]
pub struct KeyHasher {
    state: RandomState,
}

impl KeyHasher {
    /// Creates a hasher with a fresh random key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Digest of `key` under this hasher's secret.
    pub fn hash_str(&self, key: &str) -> u64 {
        self.state.hash_one(key)
    }

    /// Digest of an [`IpKey`], so per-IP tables share the representation.
    pub fn hash_ip(&self, key: IpKey) -> u64 {
        self.state.hash_one(key)
    }
}

/// The unit a per-IP limit counts: one IPv4 address, or one IPv6 prefix.
///
/// Why a prefix for IPv6: a single customer line is routinely given a /64 (or
/// larger), so counting per /128 would let one client rotate through 2^64
/// addresses and multiply its allowance. IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`, seen on dual-stack sockets) count as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpKey {
    /// A whole IPv4 address.
    V4(std::net::Ipv4Addr),
    /// An IPv6 network, truncated to the configured prefix length.
    V6(Ipv6Net),
}

impl IpKey {
    /// Builds the key for `ip`, truncating IPv6 to `v6_prefix` bits
    /// (clamped to 1..=128; the configuration validates 32..=128).
    pub fn new(ip: IpAddr, v6_prefix: u8) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpKey::V4(v4);
                }
                let prefix = v6_prefix.clamp(1, 128);
                // `Ipv6Net::new` only fails for prefix > 128, excluded above.
                let net = Ipv6Net::new(v6, prefix).unwrap_or_else(|_| Ipv6Net::from(v6));
                IpKey::V6(net.trunc())
            }
        }
    }
}

impl fmt::Display for IpKey {
    /// `192.0.2.1` or `2001:db8:1:2::/64`: the form used as the limiter key
    /// text for `key = "source_ip"` policies and in log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpKey::V4(a) => write!(f, "{a}"),
            IpKey::V6(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_prefix_and_mapped_v4_by_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::new(a, 64), IpKey::new(b, 64));
        assert_ne!(IpKey::new(a, 64), IpKey::new(c, 64));
        assert_eq!(IpKey::new(a, 64).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(IpKey::new(mapped, 64).to_string(), "192.0.2.7");
    }

    #[test]
    fn hashes_are_fixed_size_and_stable_within_a_hasher() {
        let h = KeyHasher::new();
        let long = "x".repeat(100_000);
        assert_eq!(h.hash_str(&long), h.hash_str(&long));
        assert_ne!(h.hash_str("alice"), h.hash_str("bob"));
    }
}
