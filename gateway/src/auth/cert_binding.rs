//! Certificate-bound access tokens (RFC 8705 §3; EX-TLS-2, なりすまし対策).
//!
//! A stolen certificate-bound token is useless without the client's private
//! key: its `cnf["x5t#S256"]` (base64url SHA-256 of the client certificate
//! DER) must equal the hash of the certificate presented in this mTLS
//! connection. If a token is bound, the binding is always checked (RFC 8705
//! §3 "MUST"), whether or not the route asks for it; routes and issuers with
//! `require_cert_bound` additionally refuse unbound tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::AuthError;

/// Check the binding of a token (`cnf_x5t_s256`) against the client
/// certificate hash from the TLS layer (`client_cert_sha256`).
pub fn check(
    cnf_x5t_s256: Option<&str>,
    client_cert_sha256: Option<&[u8; 32]>,
    required: bool,
) -> Result<(), AuthError> {
    let Some(bound) = cnf_x5t_s256 else {
        return if required {
            Err(AuthError::CertBindingRequired)
        } else {
            Ok(())
        };
    };
    let Some(cert) = client_cert_sha256 else {
        return Err(AuthError::CertMissing);
    };
    let expected = URL_SAFE_NO_PAD
        .decode(bound)
        .map_err(|_| AuthError::Malformed("cnf x5t#S256 is not base64url".into()))?;
    if expected.len() != 32 || !ct_eq(&expected, cert) {
        return Err(AuthError::CertBindingMismatch);
    }
    Ok(())
}

/// Constant-time comparison (lengths are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_token_needs_the_matching_client_certificate() {
        let cert = [7u8; 32];
        let bound = URL_SAFE_NO_PAD.encode(cert);
        assert!(check(Some(&bound), Some(&cert), true).is_ok());
        assert_eq!(check(Some(&bound), None, false), Err(AuthError::CertMissing));
        assert_eq!(
            check(Some(&bound), Some(&[8u8; 32]), false),
            Err(AuthError::CertBindingMismatch)
        );
        assert_eq!(check(None, Some(&cert), true), Err(AuthError::CertBindingRequired));
        assert!(check(None, None, false).is_ok());
    }
}
