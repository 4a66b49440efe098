//! TLS from outside (EX-TLS-1, EX-TLS-4): which protocol versions, cipher suites and
//! key-exchange groups the deployment accepts, each probed with a client limited to one
//! version, one suite or one group at a time, and its certificate's chain, name and
//! expiry.
//!
//! Limits: rustls implements only TLS 1.2 and 1.3 with AEAD suites and ECDHE, so the
//! probe cannot offer SSL 3, TLS 1.0/1.1, CBC or RSA key exchange; a server that would
//! accept those is not detected here (use a scanner such as testssl.sh for that).

use super::http::{self, HandshakeError};
use super::Check;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A certificate that expires within this many days fails the expiry check: renewal
/// must happen before clients start refusing the deployment.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// What a handshake negotiated.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// `TLSv1_3` etc.
    pub version: String,
    /// The suite's IANA name.
    pub suite: String,
    /// The key-exchange group, when the library reports it.
    pub group: Option<String>,
}

/// Where to connect and what name to ask for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The address.
    pub addr: SocketAddr,
    /// SNI and the name the certificate must carry.
    pub name: ServerName<'static>,
    /// Connect and handshake timeout.
    pub timeout: Duration,
}

/// The deployment's TLS checks: `tls.versions`, `tls.suites`, `tls.groups`,
/// `tls.certificate.chain`, `tls.certificate.name`, `tls.certificate.expiry`. With
/// `allow_tls12`, a deployment that also accepts TLS 1.2 (a listener configured with
/// `tls_min_version = "1.2"` for older clients, EX-TLS-1) passes `tls.versions`.
pub async fn checks(ep: &Endpoint, roots: RootCertStore, allow_tls12: bool) -> Vec<Check> {
    let mut out = vec![versions(ep, allow_tls12).await, suites(ep).await, groups(ep).await];
    let started = Instant::now();
    let capture = CaptureVerifier::new(roots);
    let result = match client_config(base_provider(), rustls::ALL_VERSIONS, capture.clone()) {
        Ok(config) => http::tls(ep.addr, ep.name.clone(), config, ep.timeout).await,
        Err(e) => Err(HandshakeError::Tls(e)),
    };
    out.extend(certificate_checks(
        "tls.certificate",
        &ep.name,
        &capture,
        result.err(),
        started,
    ));
    out
}

fn base_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: aws_lc_rs::ALL_CIPHER_SUITES.to_vec(),
        kx_groups: aws_lc_rs::ALL_KX_GROUPS.to_vec(),
        ..aws_lc_rs::default_provider()
    }
}

/// A client config with `provider`, `versions` and `verifier`, without a client
/// certificate; `Err` when the provider has no suite for the versions.
pub fn client_config(
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("cannot build a TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn handshake(ep: &Endpoint, config: Arc<ClientConfig>) -> Result<Negotiated, HandshakeError> {
    let stream = http::tls(ep.addr, ep.name.clone(), config, ep.timeout).await?;
    let (_, conn) = stream.get_ref();
    Ok(Negotiated {
        version: conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        group: conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())),
    })
}

/// A handshake limited to `versions`, `suites` and `groups`, without certificate checks
/// (those are their own checks).
async fn try_with(
    ep: &Endpoint,
    versions: &[&'static SupportedProtocolVersion],
    suites: Vec<SupportedCipherSuite>,
    groups: Vec<&'static dyn SupportedKxGroup>,
) -> Result<Negotiated, HandshakeError> {
    let provider = CryptoProvider {
        cipher_suites: suites,
        kx_groups: groups,
        ..aws_lc_rs::default_provider()
    };
    let config = client_config(provider, versions, Arc::new(AcceptAny)).map_err(HandshakeError::Tls)?;
    handshake(ep, config).await
}

/// TLS 1.3 must be accepted and TLS 1.2 refused unless `allow_tls12` (EX-TLS-1).
async fn versions(ep: &Endpoint, allow_tls12: bool) -> Check {
    let started = Instant::now();
    let all_suites = aws_lc_rs::ALL_CIPHER_SUITES.to_vec();
    let all_groups = aws_lc_rs::ALL_KX_GROUPS.to_vec();
    let v13 = try_with(ep, &[&rustls::version::TLS13], all_suites.clone(), all_groups.clone()).await;
    let v12 = try_with(ep, &[&rustls::version::TLS12], all_suites, all_groups).await;
    match (v13, v12) {
        (Err(HandshakeError::Tcp(e)), _) => Check::fail("tls.versions", e, started),
        (Ok(_), Err(_)) => Check::pass("tls.versions", "TLS 1.3 accepted; TLS 1.2 refused", started),
        (Ok(_), Ok(_)) if allow_tls12 => Check::pass(
            "tls.versions",
            "TLS 1.3 and TLS 1.2 accepted (TLS 1.2 allowed by --allow-tls12)",
            started,
        ),
        (_, Ok(_)) => Check::fail(
            "tls.versions",
            "TLS 1.2 accepted; only TLS 1.3 should be (set tls_min_version = \"1.3\" on the listener, EX-TLS-1)",
            started,
        ),
        (Err(e), Err(_)) => Check::fail("tls.versions", format!("TLS 1.3 refused: {e}"), started),
    }
}

/// The suites accepted, each offered alone; all must be in the gateway's own list
/// (ECDHE + AEAD, EX-TLS-4), and at least one must work.
async fn suites(ep: &Endpoint) -> Check {
    let started = Instant::now();
    let allowed: Vec<String> = crate::tls::provider()
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let mut accepted = Vec::new();
    for suite in aws_lc_rs::ALL_CIPHER_SUITES {
        let version = suite.version();
        if try_with(ep, &[version], vec![*suite], aws_lc_rs::ALL_KX_GROUPS.to_vec())
            .await
            .is_ok()
        {
            accepted.push(format!("{:?}", suite.suite()));
        }
    }
    let outside: Vec<&String> = accepted.iter().filter(|s| !allowed.contains(s)).collect();
    if accepted.is_empty() {
        Check::fail("tls.suites", "no cipher suite accepted", started)
    } else if !outside.is_empty() {
        Check::fail(
            "tls.suites",
            format!("accepted suites outside the ECDHE+AEAD profile (EX-TLS-4): {outside:?}"),
            started,
        )
    } else {
        Check::pass("tls.suites", format!("accepted: {}", accepted.join(", ")), started)
    }
}

/// The key-exchange groups accepted, each offered alone (TLS 1.3, where the group is
/// negotiated independently of the suite).
async fn groups(ep: &Endpoint) -> Check {
    let started = Instant::now();
    let mut accepted = Vec::new();
    for group in aws_lc_rs::ALL_KX_GROUPS {
        let only = vec![*group];
        if try_with(ep, rustls::ALL_VERSIONS, aws_lc_rs::ALL_CIPHER_SUITES.to_vec(), only)
            .await
            .is_ok()
        {
            accepted.push(format!("{:?}", group.name()));
        }
    }
    if accepted.is_empty() {
        Check::fail("tls.groups", "no key-exchange group accepted", started)
    } else {
        Check::pass("tls.groups", format!("accepted: {}", accepted.join(", ")), started)
    }
}

/// `PREFIX.chain`, `PREFIX.name` and `PREFIX.expiry` from what `capture` saw during a
/// handshake that ended with `error` (None: it succeeded).
pub fn certificate_checks(
    prefix: &str,
    name: &ServerName<'_>,
    capture: &CaptureVerifier,
    error: Option<HandshakeError>,
    started: Instant,
) -> Vec<Check> {
    let (chain_name, name_name, expiry_name) = (
        format!("{prefix}.chain"),
        format!("{prefix}.name"),
        format!("{prefix}.expiry"),
    );
    let seen = capture.seen();
    let Some((chain, verdict)) = seen else {
        let why = match error {
            Some(e) => format!("no certificate received: {e}"),
            None => "no certificate received".to_string(),
        };
        return vec![
            Check::fail(chain_name, why.clone(), started),
            Check::fail(name_name, why.clone(), started),
            Check::fail(expiry_name, why, started),
        ];
    };
    let host = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    };
    let is_name_error = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        )
    };
    let chain_check = match &verdict {
        Ok(()) => Check::pass(
            &chain_name,
            format!("chains to a trusted CA ({} certificate(s) sent)", chain.len()),
            started,
        ),
        Err(e) if is_name_error(e) => Check::pass(&chain_name, "chains to a trusted CA", started),
        Err(e) => Check::fail(&chain_name, format!("certificate refused: {e}"), started),
    };
    let names = chain.first().map(crate::tls::cert_check::dns_names).unwrap_or_default();
    let name_check = match &verdict {
        Ok(()) => Check::pass(&name_name, format!("valid for {host}"), started),
        Err(e) if is_name_error(e) => Check::fail(
            &name_name,
            format!("not valid for {host}; the certificate names {names:?}"),
            started,
        ),
        Err(_) if names.iter().any(|n| n.eq_ignore_ascii_case(&host)) => {
            Check::pass(&name_name, format!("names {host}"), started)
        }
        Err(_) => Check::fail(
            &name_name,
            format!("cannot confirm {host}: the chain did not verify; the certificate names {names:?}"),
            started,
        ),
    };
    let expiry_check = match chain.first() {
        Some(leaf) => expiry(&expiry_name, leaf, started),
        None => Check::fail(&expiry_name, "no certificate received", started),
    };
    vec![chain_check, name_check, expiry_check]
}

fn expiry(name: &str, leaf: &CertificateDer<'_>, started: Instant) -> Check {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Check::fail(name, "the certificate does not parse", started);
    };
    let validity = cert.validity();
    let now = time::OffsetDateTime::now_utc();
    let not_after = validity.not_after.to_datetime();
    let not_before = validity.not_before.to_datetime();
    let until = not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    if now < not_before {
        return Check::fail(name, format!("not valid before {not_before}"), started);
    }
    if now > not_after {
        return Check::fail(name, format!("certificate expired on {until}; renew it"), started);
    }
    let days = (not_after - now).whole_days();
    if days < EXPIRY_WARNING_DAYS {
        return Check::fail(
            name,
            format!("certificate expires on {until}, in {days} day(s); renew it now"),
            started,
        );
    }
    Check::pass(name, format!("valid until {until} ({days} days)"), started)
}

/// Verifies like the gateway's clients (WebPKI against the given roots) and keeps the
/// chain and the verdict, so a refused certificate can still be described.
#[derive(Debug)]
pub struct CaptureVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    seen: Mutex<Option<Seen>>,
}

type Seen = (Vec<CertificateDer<'static>>, Result<(), rustls::Error>);

impl CaptureVerifier {
    /// A verifier trusting `roots`.
    pub fn new(roots: RootCertStore) -> Arc<Self> {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(base_provider()))
            .build()
            .ok();
        Arc::new(Self {
            inner,
            seen: Mutex::new(None),
        })
    }

    /// The chain the server sent and whether it verified, if a handshake got that far.
    pub fn seen(&self) -> Option<Seen> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => Err(rustls::Error::General("no usable CA certificate".into())),
        };
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((chain, verdict.clone()));
        }
        verdict.map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AcceptAny.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AcceptAny.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        AcceptAny.supported_verify_schemes()
    }
}

/// Accepts any certificate but still checks the handshake signatures. Used only for
/// the version/suite/group probes, whose question is "does the handshake complete", not
/// "is the certificate good" (the certificate checks answer that separately).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
