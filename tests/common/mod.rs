//! Shared pieces of the end-to-end tests: test PKI, a backend with echo/slow/WebSocket
//! endpoints, the real `phr-gateway` binary started on loopback, and a real TLS client.

pub mod fhir_backend;
pub mod tcp_proxy;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use phr_gateway::demo::certs::{new_ca, Ca};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_phr-gateway");

/// A CA with a server certificate for localhost/127.0.0.1, written into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca) = new_ca("test CA").unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        let (cert, key) = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
        Self { dir, ca, ca_pem }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a client certificate and key; returns (cert path, key path).
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.issue_client(cn).unwrap();
        let c = self.path(&format!("{cn}.pem"));
        let k = self.path(&format!("{cn}-key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }
}

/// A plain-HTTP backend on loopback:
/// `/echo*` answers with the method, path and headers it received as JSON;
/// `/slow?ms=N` waits N ms; `/big?n=N` returns N bytes; anything else 200 "ok".
pub async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(backend);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn query_num(req: &Request<hyper::body::Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn backend(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"slow done"))));
    }
    if path.starts_with("/big") {
        let n = query_num(&req, "n") as usize;
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    if path.contains("echo") {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.to_str().unwrap_or(""))))
            .collect();
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        let json = serde_json::json!({"method": method, "uri": uri, "headers": headers, "body_len": body});
        return Ok(Response::new(Full::new(Bytes::from(json.to_string()))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// A WebSocket echo server on loopback.
pub async fn start_ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

/// A closed loopback port (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Runs the gateway binary with `args` (stdout discarded, stderr kept) until it
/// exits; `None` (after killing it) if it is still running after `limit`, e.g. a
/// gateway that started although it should have refused to.
pub fn run_until_exit(args: &[&str], limit: Duration) -> Option<std::process::Output> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

/// The real gateway binary, running with a generated config. Killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts `phr-gateway run` with `config` (TOML text) written next to the PKI.
    pub fn start(pki: &Pki, config: &str) -> Self {
        let path = pki.path("gateway.toml");
        std::fs::write(&path, config).unwrap();
        Self::start_with_args(&["run", "--config", path.to_str().unwrap()], path.clone())
    }

    pub fn start_with_args(args: &[&str], config: PathBuf) -> Self {
        Self::start_with_env(args, config, &[])
    }

    /// As [`Gateway::start_with_args`], with extra environment variables for the process.
    pub fn start_with_env(args: &[&str], config: PathBuf, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("PHR_GATEWAY_WORKER_THREADS", "2")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "gateway did not become ready; output:\n{}",
                    logs.lock().unwrap().join("\n")
                ),
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let found = v["fields"]["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
            match v["fields"]["message"].as_str() {
                Some("listener ready") if addr.is_none() => addr = found,
                Some("admin listener ready") => admin = found,
                _ => {}
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            config,
            logs,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        for _ in 0..100 {
            if self.log_text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {needle:?}; logs:\n{}", self.log_text());
    }

    /// GET on the admin listener, plain HTTP: (status, body).
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let (status, _, body) = self.admin_with_headers(method, path).await;
        (status, body)
    }

    /// As [`Gateway::admin`], with the response headers.
    pub async fn admin_with_headers(&self, method: &str, path: &str) -> (u16, http::HeaderMap, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[connection_limits]` keys that never limit: tests open many connections from
/// 127.0.0.1, and the per-IP defaults are for production.
pub const UNLIMITED_CONNECTIONS: &str =
    "max_connections_per_ip = 10000\ntls_handshakes_per_ip_per_second = 10000\ntls_handshake_burst = 10000";
/// `[auth_backoff]` keys that never lock out: the auth tests send many bad tokens on
/// purpose; the back-off has its own tests.
pub const NO_BACKOFF: &str = "after_failures = 100000";

/// A config with one listener on a free loopback port, admin on a free port, and the
/// given extra TOML (upstreams, routes, listener overrides).
pub fn base_config(pki: &Pki, listener_extra: &str, rest: &str) -> String {
    gateway_config(
        pki,
        "test",
        "websocket_idle_timeout = \"2s\"",
        UNLIMITED_CONNECTIONS,
        NO_BACKOFF,
        listener_extra,
        rest,
    )
}

/// What every test config shares: `instance`, admin on a free port, short `[limits]`
/// (plus `limits_extra`), the given `[connection_limits]` and `[auth_backoff]` keys
/// (TOML forbids defining a table twice, so they cannot be appended later), and one
/// listener, `public`, on a free loopback port with the PKI's server certificate (plus
/// `listener_extra`); then `rest`.
pub fn gateway_config(
    pki: &Pki,
    instance: &str,
    limits_extra: &str,
    connection_limits: &str,
    auth_backoff: &str,
    listener_extra: &str,
    rest: &str,
) -> String {
    format!(
        r#"[gateway]
instance_id = "{instance}"

[admin]
bind = "127.0.0.1:0"

[limits]
header_read_timeout = "1s"
idle_timeout = "5s"
drain_timeout = "10s"
max_body_bytes = 1024
{limits_extra}

[connection_limits]
{connection_limits}

[auth_backoff]
{auth_backoff}

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
{listener_extra}

[[listeners.certificates]]
cert_file = "{cert}"
key_file = "{key}"

{rest}"#,
        cert = pki.path("server.pem").display(),
        key = pki.path("server-key.pem").display(),
    )
}

/// An upstream + route pair for a plain loopback backend, without authentication
/// (`phi = false`: these tests are about the proxy, not about medical data).
pub fn plain_route(name: &str, prefix: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    route_with(
        name,
        prefix,
        endpoints,
        extra,
        "phi = false\n[routes.auth]\nmode = \"none\"\n",
    )
}

/// An upstream + route pair with extra keys for the upstream and the route.
pub fn route_with(
    name: &str,
    prefix: &str,
    endpoints: &[SocketAddr],
    upstream_extra: &str,
    route_extra: &str,
) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"http://{a}\"")).collect();
    format!(
        "[upstreams.{name}]\nendpoints = [{}]\nallow_plaintext = true\nin_cluster = true\njurisdiction = \"JP\"\n{upstream_extra}\n\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{name}\"\n{route_extra}\n",
        eps.join(", ")
    )
}

/// An upstream + route pair `fhir` at `/fhir/` to `backend`: a FHIR route that
/// requires a token.
pub fn fhir_route(backend: SocketAddr) -> String {
    route_with("fhir", "/fhir/", &[backend], "", phr_test_support::config::FHIR_ROUTE)
}

// ---- TLS client -------------------------------------------------------------------

/// Options for the test client.
#[derive(Default, Clone)]
pub struct ClientOpts {
    pub tls12_only: bool,
    pub h2: bool,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

pub fn client_config(ca_pem: &str, opts: &ClientOpts) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match &opts.client_cert {
        Some((c, k)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(c).unwrap().map(|c| c.unwrap()).collect();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(k).unwrap())
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(cfg)
}

/// The default client (TLS 1.3 or 1.2, HTTP/1.1, no client certificate) trusting `pki`'s CA.
pub fn client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    client_config(&pki.ca_pem, &ClientOpts::default())
}

/// One client connection (HTTP/1.1 or HTTP/2 by ALPN) to the gateway.
pub struct Conn {
    h1: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>,
    pub peer_cert: Vec<u8>,
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

impl Conn {
    pub async fn open(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Self> {
        let tls = tls_connect(addr, cfg).await?;
        let (_, session) = tls.get_ref();
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Self {
                h1: None,
                h2: Some(send),
                peer_cert,
            })
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn.with_upgrades());
            Ok(Self {
                h1: Some(send),
                h2: None,
                peer_cert,
            })
        }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<hyper::body::Incoming>, hyper::Error> {
        match (&mut self.h1, &mut self.h2) {
            (Some(s), _) => {
                s.ready().await?;
                s.send_request(req).await
            }
            (_, Some(s)) => {
                s.ready().await?;
                s.send_request(req).await
            }
            _ => unreachable!(),
        }
    }

    /// GET `path`; returns status, headers and body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, http::HeaderMap, Bytes), hyper::Error> {
        self.request(
            Request::get(path)
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    pub async fn request(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(u16, http::HeaderMap, Bytes), hyper::Error> {
        if self.h2.is_some() {
            *req.uri_mut() = format!("https://localhost{}", req.uri()).parse().unwrap();
            req.headers_mut().remove("host");
        }
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// One FHIR request on a new TLS connection to `addr` (trusting `ca_pem`), with `Host:
/// host`, an optional bearer token and an optional JSON body: (status, headers, the body
/// as JSON, or `Null` when it is not JSON).
pub async fn fhir_request(
    addr: SocketAddr,
    ca_pem: &str,
    host: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, http::HeaderMap, serde_json::Value) {
    let mut c = Conn::open(addr, client_config(ca_pem, &ClientOpts::default()))
        .await
        .unwrap();
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/fhir+json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let (status, headers, bytes) = c.request(req.body(Full::new(body)).unwrap()).await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// `phr-gateway demo` running on free ports in a temporary data directory.
pub struct Demo {
    pub gw: Gateway,
    /// The demo's data directory (certificates, generated config, `tokens.env`).
    pub data: PathBuf,
    /// The CA (PEM) its listener's certificate chains to.
    pub ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    pub fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("demo");
        let args = [
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            "0",
            "--admin-port",
            "0",
        ];
        let gw = Gateway::start_with_args(&args, data.join("gateway.toml"));
        let ca_pem = std::fs::read_to_string(data.join("ca.pem")).unwrap();
        Demo {
            gw,
            data,
            ca_pem,
            _dir: dir,
        }
    }

    /// The token `name` (e.g. `PATIENT_TOKEN`) from the demo's `tokens.env`.
    pub fn token(&self, name: &str) -> String {
        let tokens = std::fs::read_to_string(self.data.join("tokens.env")).unwrap();
        tokens
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in tokens.env"))
            .to_string()
    }
}
