//! Opening connections to upstreams. This is the one place where the gateway's traffic
//! leaves the machine, so the egress check (DATA-JP-1, residency) runs here, on the
//! address actually connected, for every new connection; pooled connections reuse a
//! connection that was checked when it was opened.

use crate::residency::egress::{EgressPolicy, UpstreamResolver};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a connection to an upstream could not be opened. Kept precise because each maps
/// to a different status and metric (residency refusal is not an outage).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("refused by the residency policy: {0}")]
    Egress(String),
    #[error("connect to {addr} timed out")]
    Timeout { addr: String },
    #[error("connect to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
    #[error("the endpoint URL has no host")]
    NoHost,
}

/// A connector for one upstream; cloned into hyper-util's pool.
#[derive(Clone)]
pub struct Connector {
    pub(super) tls: Option<TlsConnector>,
    pub(super) connect_timeout: Duration,
    pub(super) resolver: Arc<UpstreamResolver>,
    pub(super) egress: Arc<EgressPolicy>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}

impl Connector {
    async fn connect(self, uri: http::Uri) -> Result<UpstreamStream, ConnectError> {
        let host = uri
            .host()
            .ok_or(ConnectError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.connect_to(host, port, https).await
    }

    /// Opens a connection to `host:port`: resolve, check each address against the
    /// residency policy, dial, and for `https` complete the TLS handshake.
    pub(super) async fn connect_to(&self, host: &str, port: u16, https: bool) -> Result<UpstreamStream, ConnectError> {
        let host = host.to_string();
        let addrs = self
            .resolver
            .resolve(&host, port)
            .await
            .map_err(|e| ConnectError::Resolve {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let mut last_err = None;
        for addr in addrs {
            // Checked per address actually dialled: DNS can answer differently each time.
            if let Err(why) = self.egress.check(addr) {
                last_err = Some(ConnectError::Egress(why.to_string()));
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => last_err = Some(ConnectError::Timeout { addr: addr.to_string() }),
                Ok(Err(source)) => last_err = Some(ConnectError::Io { addr, source }),
                Ok(Ok(tcp)) => {
                    // Evidence that the residency check is per connection, not per request.
                    metrics::counter!("phr_upstream_connections_opened_total").increment(1);
                    let _ = tcp.set_nodelay(true);
                    return self.finish(tcp, addr, &host, https).await;
                }
            }
        }
        Err(last_err.unwrap_or(ConnectError::Resolve {
            host,
            reason: "no address".into(),
        }))
    }

    async fn finish(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        host: &str,
        https: bool,
    ) -> Result<UpstreamStream, ConnectError> {
        if !https {
            return Ok(UpstreamStream {
                inner: Inner::Plain(tcp),
                peer: addr,
            });
        }
        // Validation refuses https endpoints without a CA bundle, so `tls` is set here.
        let tls = self.tls.as_ref().ok_or_else(|| ConnectError::Tls {
            host: host.to_string(),
            source: io::Error::other("no CA bundle configured for this upstream"),
        })?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Tls {
            host: host.to_string(),
            source: io::Error::other(e),
        })?;
        let handshake = tokio::time::timeout(self.connect_timeout, tls.connect(name, tcp));
        match handshake.await {
            Err(_) => Err(ConnectError::Timeout { addr: addr.to_string() }),
            Ok(Err(source)) => Err(ConnectError::Tls {
                host: host.to_string(),
                source,
            }),
            Ok(Ok(stream)) => Ok(UpstreamStream {
                inner: Inner::Tls(Box::new(stream)),
                peer: addr,
            }),
        }
    }
}

/// A connection to an upstream, plain (loopback only) or TLS.
pub struct UpstreamStream {
    inner: Inner,
    /// The address connected, reported in access records (DATA-JP-1 evidence).
    pub peer: SocketAddr,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }
}
