//! The one `*.example.jp` host-name match, for routes and for SNI.
//!
//! A route's `host` and a certificate's DNS name follow the same rule: an
//! exact name, or `*.` plus a suffix that covers exactly one more label
//! (`*.example.jp` matches `a.example.jp`, not `example.jp` nor
//! `a.b.example.jp`). Routes ([`crate::runtime::Runtime::route`]) and the
//! certificate resolver ([`crate::tls::sni::SniResolver`]) both call
//! [`host_matches`], so the two cannot drift apart.

/// Whether `host` (without port) is matched by `pattern`: an exact name,
/// compared ASCII case-insensitively, or `*.suffix`, which matches one label
/// followed by `.suffix`.
///
/// The wildcard's suffix is compared byte for byte. Both callers lowercase the
/// pattern when they build it; the certificate resolver also lowercases the SNI
/// name, while a route compares the request's `Host` as sent (as it always has).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => host
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        _ => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::host_matches;

    #[test]
    fn exact_names_ignore_ascii_case() {
        assert!(host_matches("api.example.jp", "api.example.jp"));
        assert!(host_matches("api.example.jp", "API.Example.JP"));
        assert!(!host_matches("api.example.jp", "api.example.jp.evil"));
        assert!(!host_matches("api.example.jp", "x.api.example.jp"));
        assert!(!host_matches("api.example.jp", ""));
    }

    /// Route hosts: `*.example.jp` covers one label, never the bare suffix or two labels.
    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert!(host_matches("*.example.jp", "a.example.jp"));
        assert!(host_matches("*.example.jp", "clinic-1.example.jp"));
        assert!(!host_matches("*.example.jp", "example.jp"));
        assert!(!host_matches("*.example.jp", ".example.jp"));
        assert!(!host_matches("*.example.jp", "a.b.example.jp"));
        assert!(!host_matches("*.example.jp", "aexample.jp"));
        assert!(!host_matches("*.example.jp", "a.example.jp.evil"));
        assert!(!host_matches("*.example.jp", "a.other.jp"));
    }

    /// SNI names arrive lowercased by the resolver, as do both callers' patterns;
    /// a route's `Host` is compared as sent, so only an exact pattern ignores case.
    #[test]
    fn the_wildcard_suffix_is_compared_as_given() {
        assert!(host_matches("*.example.jp", &"A.EXAMPLE.JP".to_ascii_lowercase()));
        assert!(host_matches("*.example.jp", "A.example.jp"));
        assert!(!host_matches("*.example.jp", "a.EXAMPLE.jp"));
    }

    #[test]
    fn a_star_without_a_dot_is_an_exact_name() {
        assert!(host_matches("*", "*"));
        assert!(!host_matches("*", "a"));
        assert!(!host_matches("*example.jp", "aexample.jp"));
        assert!(host_matches("*example.jp", "*EXAMPLE.jp"));
    }
}
