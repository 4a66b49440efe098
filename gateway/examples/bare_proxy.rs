//! The floor of the stack issue 3 prescribes: hyper 1 + hyper-util + rustls +
//! tokio as a TLS 1.3 reverse proxy that does nothing else. No routing, no
//! header rewriting, no request id, limits, metrics or logging; hyper-util's
//! stock pooled HTTP/1.1 client to one backend.
//!
//! It is not a product. `bench/run.sh` measures it (target `bare`) beside
//! phr-gateway, nginx and HAProxy, so the report can say how much of the
//! gateway's CPU per request is the libraries it is built on and how much is
//! its own safeguards. If this floor already costs more than nginx or HAProxy
//! in a row, no gateway on this stack can meet issue 3's target there.
//!
//! ```text
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy LISTEN BACKEND CERT_PEM KEY_PEM
//! ```
//! e.g. `bare_proxy 127.0.0.1:18446 127.0.0.1:18080 cert.pem key.pem`.
//! One runtime thread, like the gateway under `PHR_GATEWAY_WORKER_THREADS=1`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::{Request, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

// The gateway's allocator, so the two differ only in what they do per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the gateway's main does, so the floor's memory is counted the same way.
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, backend, cert, key] = args.as_slice() else {
        return Err("usage: bare_proxy LISTEN_ADDR BACKEND_ADDR CERT_PEM KEY_PEM".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let backend: Arc<str> = Arc::from(backend.as_str());
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;

    // TLS 1.3 only; the provider's TLS 1.3 suites are all AEAD with ECDHE.
    // The provider named, not the process default: a build of the whole workspace may
    // enable a second provider in rustls (through another crate's features), and then
    // there is no default to take.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let upstream: Upstream = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let (acceptor, upstream, backend) = (acceptor.clone(), upstream.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req| forward(req, upstream.clone(), backend.clone()));
                // Errors are the client's business (reset, timeout); a bare
                // proxy has nobody to tell.
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

/// Sends the request to the backend over a pooled HTTP/1.1 connection and
/// streams the answer back; a failed exchange becomes a bare 502.
async fn forward(
    req: Request<Incoming>,
    upstream: Upstream,
    backend: Arc<str>,
) -> Result<hyper::Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(backend.as_ref())
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else { return Ok(bad_gateway()) };
    parts.uri = uri;
    // HTTP/2 in, HTTP/1.1 to the backend; hyper-util sets Host from the URI.
    parts.version = Version::HTTP_11;
    match upstream.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(http_body_util::Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> hyper::Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>> {
    let mut resp = hyper::Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp
}
