//! Choosing the server certificate by SNI.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

use crate::util::host::host_matches;

/// Exact names first, then `*.suffix` wildcards, then the listener's first certificate
/// (clients that send no SNI, such as those connecting by IP address).
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.suffix` patterns, lowercase, in the order added.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            default,
        }
    }

    pub fn add(&mut self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        if name.starts_with("*.") {
            self.wildcard.push((name, key));
        } else {
            self.exact.entry(name).or_insert(key);
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        // A wildcard covers exactly one label, as in a route's host.
        let wildcard = self.wildcard.iter().find(|(pattern, _)| host_matches(pattern, &name));
        Some(wildcard.map_or(&self.default, |(_, key)| key).clone())
    }
}
