//! The probe's HTTP/1.1 client: one request per TLS (or plain TCP) connection, so every
//! check sees a fresh handshake and no state carries over between checks.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bodies larger than this are cut off: the probe reads error bodies and small FHIR
/// answers, never bulk data.
const MAX_BODY: usize = 1 << 20;

/// A response as the probe keeps it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (at most 1 MiB).
    pub body: Bytes,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Opens a TCP connection within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TCP connect to {addr} failed: {e}")),
        Err(_) => Err(format!("TCP connect to {addr} timed out after {timeout:?}")),
    }
}

/// TCP then a TLS handshake with `config`, each within `timeout`.
pub async fn tls(
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let tcp = tcp(addr, timeout).await.map_err(HandshakeError::Tcp)?;
    match tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(HandshakeError::Tls(describe_io(&e))),
        Err(_) => Err(HandshakeError::Tls(format!(
            "TLS handshake timed out after {timeout:?}"
        ))),
    }
}

/// Why a connection could not be set up.
#[derive(Debug, Clone)]
pub enum HandshakeError {
    /// No TCP connection.
    Tcp(String),
    /// TCP worked, TLS did not (the rustls error, or the alert the peer sent).
    Tls(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Tcp(e) | HandshakeError::Tls(e) => f.write_str(e),
        }
    }
}

/// The rustls error inside an I/O error when there is one, else the I/O error.
pub fn describe_io(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// Sends one `GET path` with `headers` over `stream` and reads the response within
/// `timeout`.
pub async fn get<S>(
    stream: S,
    authority: &str,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| with_causes(&e))?;
        let driver = tokio::spawn(conn);
        let mut req = http::Request::get(path).header("host", authority);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build GET {path}: {e}"))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            // The request only says the connection went away; the connection task
            // has the reason (e.g. the TLS alert of a refused client certificate).
            Err(e) => {
                let reason = match tokio::time::timeout(Duration::from_secs(1), driver).await {
                    Ok(Ok(Err(conn))) => with_causes(&conn),
                    _ => with_causes(&e),
                };
                return Err(reason);
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?
            .to_bytes();
        driver.abort();
        Ok(Response { status, headers, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response to GET {path} within {timeout:?}")))
}

/// An error and its sources on one line (hyper hides the TLS alert in a source).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
