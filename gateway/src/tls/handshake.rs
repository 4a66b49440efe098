//! Why a client's TLS handshake failed, as a short, bounded label for
//! `phr_tls_handshake_failures_total{reason}` (EX-TLS-1..3, EX-MTLS-1 monitoring).
//!
//! The reasons separate what an operator acts on differently: clients too old for the
//! configured minimum version or cipher suites (`protocol_version`, `no_shared_cipher`),
//! clients without or with a wrong certificate on an mTLS listener
//! (`client_cert_required`, `unknown_ca`, `certificate_expired`, `certificate_revoked`,
//! `bad_certificate`), clients that do not trust the gateway's certificate
//! (`peer_rejected_certificate`), plain HTTP sent to a TLS port (`not_tls`), and the
//! noise of scanners and dropped connections (`eof`, `io`, `timeout`).

use rustls::{AlertDescription, CertificateError, Error, InvalidMessage, PeerIncompatible};

/// The label of a handshake that did not finish within `tls_handshake_timeout`.
pub const TIMEOUT: &str = "timeout";

/// Classifies the I/O error of a failed server-side handshake (tokio-rustls carries the
/// rustls error inside an `InvalidData` I/O error).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return rustls_reason(tls);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "eof",
        std::io::ErrorKind::TimedOut => TIMEOUT,
        _ => "io",
    }
}

/// Classifies a rustls error.
pub fn rustls_reason(e: &Error) -> &'static str {
    match e {
        Error::NoCertificatesPresented => "client_cert_required",
        Error::InvalidCertificate(c) => certificate_reason(c),
        Error::PeerIncompatible(p) => incompatibility_reason(p),
        Error::AlertReceived(alert) => alert_reason(*alert),
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => "not_tls",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "invalid_message"
        }
        Error::PeerMisbehaved(_) | Error::PeerSentOversizedRecord | Error::DecryptError => "peer_misbehaved",
        Error::NoApplicationProtocol => "no_application_protocol",
        Error::UnsupportedNameType => "bad_server_name",
        _ => "other",
    }
}

fn certificate_reason(c: &CertificateError) -> &'static str {
    match c {
        CertificateError::UnknownIssuer => "unknown_ca",
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate_expired",
        CertificateError::Revoked => "certificate_revoked",
        _ => "bad_certificate",
    }
}

fn incompatibility_reason(p: &PeerIncompatible) -> &'static str {
    match p {
        PeerIncompatible::NoCipherSuitesInCommon
        | PeerIncompatible::NoKxGroupsInCommon
        | PeerIncompatible::NoSignatureSchemesInCommon
        | PeerIncompatible::NoEcPointFormatsInCommon => "no_shared_cipher",
        PeerIncompatible::SupportedVersionsExtensionRequired
        | PeerIncompatible::Tls12NotOffered
        | PeerIncompatible::Tls12NotOfferedOrEnabled
        | PeerIncompatible::ServerDoesNotSupportTls12Or13
        | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig => "protocol_version",
        _ => "handshake_failure",
    }
}

/// An alert the client sent: mostly it refusing the gateway's certificate.
fn alert_reason(alert: AlertDescription) -> &'static str {
    match alert {
        AlertDescription::BadCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::AccessDenied => "peer_rejected_certificate",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => "handshake_failure",
        AlertDescription::UnrecognisedName => "bad_server_name",
        AlertDescription::CloseNotify | AlertDescription::UserCanceled => "eof",
        _ => "alert_received",
    }
}

/// The label of a negotiated protocol version.
pub fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn wrapped(e: Error) -> io::Error {
        // What tokio-rustls returns for a rustls error.
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn classifies_rustls_errors_inside_io_errors() {
        let cases = [
            (Error::NoCertificatesPresented, "client_cert_required"),
            (Error::InvalidCertificate(CertificateError::UnknownIssuer), "unknown_ca"),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "certificate_expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::Revoked),
                "certificate_revoked",
            ),
            (
                Error::InvalidCertificate(CertificateError::BadEncoding),
                "bad_certificate",
            ),
            (PeerIncompatible::NoCipherSuitesInCommon.into(), "no_shared_cipher"),
            (
                PeerIncompatible::SupportedVersionsExtensionRequired.into(),
                "protocol_version",
            ),
            (PeerIncompatible::Tls12NotOfferedOrEnabled.into(), "protocol_version"),
            (PeerIncompatible::NullCompressionRequired.into(), "handshake_failure"),
            (
                Error::AlertReceived(AlertDescription::UnknownCA),
                "peer_rejected_certificate",
            ),
            (
                Error::AlertReceived(AlertDescription::BadCertificate),
                "peer_rejected_certificate",
            ),
            (
                Error::AlertReceived(AlertDescription::ProtocolVersion),
                "protocol_version",
            ),
            (Error::AlertReceived(AlertDescription::DecodeError), "alert_received"),
            (Error::InvalidMessage(InvalidMessage::InvalidContentType), "not_tls"),
            (
                Error::InvalidMessage(InvalidMessage::MessageTooShort),
                "invalid_message",
            ),
            (Error::NoApplicationProtocol, "no_application_protocol"),
            (Error::General("x".into()), "other"),
        ];
        for (error, reason) in cases {
            let shown = format!("{error:?}");
            assert_eq!(failure_reason(&wrapped(error)), reason, "{shown}");
        }
    }

    #[test]
    fn classifies_plain_io_errors() {
        assert_eq!(
            failure_reason(&io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof")),
            "eof"
        );
        assert_eq!(failure_reason(&io::ErrorKind::ConnectionReset.into()), "io");
        assert_eq!(failure_reason(&io::ErrorKind::TimedOut.into()), TIMEOUT);
    }

    #[test]
    fn labels_versions() {
        assert_eq!(version_label(Some(rustls::ProtocolVersion::TLSv1_3)), "TLSv1.3");
        assert_eq!(version_label(Some(rustls::ProtocolVersion::TLSv1_2)), "TLSv1.2");
        assert_eq!(version_label(None), "other");
    }
}
