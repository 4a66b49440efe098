//! The one `*.example.jp` host-name match, for routes and for SNI.
//!
//! A route's `host` and a certificate's DNS name follow the same rule: an
//! exact name, or `*.` plus a suffix that covers exactly one more label
//! (`*.example.jp` matches `a.example.jp`, not `example.jp` nor
//! `a.b.example.jp`). Routes ([`crate::runtime::ActiveConfig::route`]) and the
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

    /// `(pattern, host, matches)`: exact names, a route's and SNI's wildcards.
    const CASES: &[(&str, &str, bool)] = &[
        // Exact names ignore ASCII case, and match nothing longer or shorter.
        ("api.example.jp", "api.example.jp", true),
        ("api.example.jp", "API.Example.JP", true),
        ("api.example.jp", "api.example.jp.evil", false),
        ("api.example.jp", "x.api.example.jp", false),
        ("api.example.jp", "", false),
        // `*.example.jp` covers one label, never the bare suffix or two labels.
        ("*.example.jp", "a.example.jp", true),
        ("*.example.jp", "clinic-1.example.jp", true),
        ("*.example.jp", "example.jp", false),
        ("*.example.jp", ".example.jp", false),
        ("*.example.jp", "a.b.example.jp", false),
        ("*.example.jp", "aexample.jp", false),
        ("*.example.jp", "a.example.jp.evil", false),
        ("*.example.jp", "a.other.jp", false),
        // SNI names arrive lowercased; a route's Host is compared as sent, so
        // only the label in front of the wildcard's suffix may differ in case.
        ("*.example.jp", "A.example.jp", true),
        ("*.example.jp", "a.EXAMPLE.jp", false),
        // A star without a dot is an exact name.
        ("*", "*", true),
        ("*", "a", false),
        ("*example.jp", "aexample.jp", false),
        ("*example.jp", "*EXAMPLE.jp", true),
    ];

    #[test]
    fn exact_names_and_one_label_wildcards() {
        for &(pattern, host, want) in CASES {
            assert_eq!(host_matches(pattern, host), want, "{pattern:?} vs {host:?}");
        }
    }
}
