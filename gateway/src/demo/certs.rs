//! Demo and test PKI with rcgen: a private CA and a server certificate for localhost,
//! ECDSA P-256 (EX-TLS-4 compliant). Kept between demo runs so a user's trust of the CA
//! file stays valid.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// Why a demo or test certificate could not be made or saved.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen could not generate a key, a certificate or a CRL.
    #[error(transparent)]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the demo's PKI files are, all inside the data directory.
pub struct DemoPki {
    /// `ca.pem`: the private CA a client must trust (`curl --cacert`).
    pub ca_cert: PathBuf,
    /// `server.pem`: the listener's certificate for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// `server-key.pem`: its private key, mode 0600.
    pub server_key: PathBuf,
}

/// Creates the CA and server certificate in `dir` unless they exist already.
pub fn ensure_demo_pki(dir: &Path) -> Result<DemoPki, CertError> {
    let pki = DemoPki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    if pki.ca_cert.exists()
        && pki.server_cert.exists()
        && pki.server_key.exists()
        && crate::tls::cert_check::read_chain(&pki.server_cert)
            .and_then(|c| crate::tls::cert_check::check_chain(&c))
            .is_ok()
    {
        return Ok(pki);
    }
    let (ca_pem, ca) = new_ca("phr-gateway demo CA")?;
    let (cert, key) = ca.issue_server(&["localhost", "127.0.0.1"])?;
    write(&pki.ca_cert, &ca_pem, 0o644)?;
    write(&pki.server_cert, &cert, 0o644)?;
    write(&pki.server_key, &key, 0o600)?;
    Ok(pki)
}

/// A CA that can issue server and client certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

/// Makes a new CA; returns its PEM certificate and the issuer.
pub fn new_ca(name: &str) -> Result<(String, Ca), CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Ca { params, key }))
}

impl Ca {
    fn issue(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Result<(String, String), CertError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<(String, String), CertError> {
        self.issue(
            names,
            names.first().copied().unwrap_or("server"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A signed CRL in PEM (tests of client-certificate revocation).
    pub fn sign_crl(&self, params: rcgen::CertificateRevocationListParams) -> Result<String, CertError> {
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(&issuer)
            .and_then(|crl| crl.pem())
            .map_err(CertError::from)
    }

    /// A client certificate for an institution (mutual TLS).
    pub fn issue_client(&self, cn: &str) -> Result<(String, String), CertError> {
        self.issue(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `contents` to `path` with `mode` (the file is created or truncated).
pub(super) fn write(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|source| CertError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(contents.as_bytes()).map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}
