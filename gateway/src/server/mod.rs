//! Accepting connections: the connection cap, the TLS handshake, HTTP/1.1 or HTTP/2 by
//! ALPN, idle and header timeouts (`activity`), and graceful drain on shutdown.
//!
//! Requirement IDs: EX-TLS-1..3 (every listener is TLS), EX-MTLS-1 (client identity),
//! AV-DOS-1 (connection cap, header-read timeout against slowloris, idle timeout).

mod activity;

use crate::config::Limits;
use crate::context::{ConnInfo, GatewayBody};
use crate::pipeline::Pipeline;
use crate::runtime::GatewayState;
use crate::tls::ClientIdentity;
use crate::util::wake_gate::WakeGate;
use activity::{Activity, Timeout, Watched};
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// What every accept loop shares.
#[derive(Clone)]
pub struct Server {
    pub shared: Arc<GatewayState>,
    pub connections: Arc<Semaphore>,
    pub max_connections: usize,
    pub shutdown: watch::Receiver<bool>,
}

impl Server {
    /// Accepts on one listener until shutdown.
    pub async fn accept_loop(self, name: Arc<str>, listener: TcpListener) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                metrics::counter!("phr_connections_refused_total", "reason" => "max_connections").increment(1);
                drop(tcp);
                continue;
            };
            // Per-source caps before any TLS work is paid for (AV-DOS-1, EX-NET-3).
            let runtime = self.shared.current.load();
            let Some(per_ip) = runtime.protection.connections.try_acquire(peer.ip()) else {
                continue;
            };
            if !runtime.protection.connections.check_handshake(peer.ip()).allowed {
                metrics::counter!("phr_connections_refused_total", "reason" => "handshake_rate").increment(1);
                continue;
            }
            drop(runtime);
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            let name = name.clone();
            tokio::spawn(async move {
                metrics::gauge!("phr_active_connections").increment(1.0);
                this.serve_connection(name, tcp, peer).await;
                metrics::gauge!("phr_active_connections").decrement(1.0);
                drop(per_ip);
                drop(permit);
            });
        }
        tracing::info!(listener = %name, "listener closed");
    }

    async fn serve_connection(&self, listener: Arc<str>, tcp: TcpStream, peer: std::net::SocketAddr) {
        let runtime = self.shared.current.load_full();
        let limits = runtime.config.limits.clone();
        let Some(tls) = runtime.tls.get(&*listener).cloned() else {
            return;
        };
        drop(runtime);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stream = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = crate::tls::handshake::failure_reason(&e);
                metrics::counter!("phr_tls_handshake_failures_total", "listener" => listener.to_string(), "reason" => reason)
                    .increment(1);
                tracing::debug!(listener = %listener, %peer, reason, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                let reason = crate::tls::handshake::TIMEOUT;
                metrics::counter!("phr_tls_handshake_failures_total", "listener" => listener.to_string(), "reason" => reason)
                    .increment(1);
                return;
            }
        };
        let (_, session) = stream.get_ref();
        let negotiated = crate::tls::handshake::version_label(session.protocol_version());
        metrics::counter!("phr_tls_handshakes_total", "listener" => listener.to_string(), "version" => negotiated)
            .increment(1);
        let tls_version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let http1 = session.alpn_protocol() != Some(b"h2");
        let client = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(ClientIdentity::from_der);
        let conn = Arc::new(ConnInfo {
            peer,
            listener,
            tls_version,
            client,
            forwarded: Default::default(),
        });

        let activity = Arc::new(Activity::new(http1));
        let pipeline = Pipeline::new(self.shared.clone());
        let tracker = activity.clone();
        let service = service_fn(move |req| -> ServiceFuture {
            let pipeline = pipeline.clone();
            let conn = conn.clone();
            let guard = tracker.begin();
            // Boxed: hyper's HTTP/1 connection allocates room for one service future when
            // it starts and keeps it until the connection closes, so every idle keep-alive
            // connection would hold a request pipeline's worth of memory. Boxed, it holds
            // a pointer, and the pipeline's state lives only while a request does.
            Box::pin(async move {
                let resp = pipeline.handle(req, conn).await;
                drop(guard);
                Ok::<_, Infallible>(resp)
            })
        });

        let builder = http_builder(&limits);
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        let mut draining = *shutdown.borrow();
        // A connection accepted just before the drain (during a hand-over the old process
        // accepts until the new one serves) may not have sent its first request yet. An
        // idle HTTP/1 connection is closed at once by a graceful shutdown, which would drop
        // a request the client is already writing; so it gets until the header read
        // timeout (when it would be closed anyway) to send one, which is then answered.
        let mut close_unless_first_request_by: Option<Instant> = None;
        if draining {
            close_unless_first_request_by = first_request_deadline(&activity, &limits);
            if close_unless_first_request_by.is_none() {
                conn.as_mut().graceful_shutdown();
            }
        }
        // The connection is polled on every wake-up; the shutdown signal and the timers
        // only when one of them woke the task (see `util::wake_gate`).
        let gate = WakeGate::default();
        loop {
            let check_at = activity.next_check(&limits, draining);
            let event = {
                let mut side = std::pin::pin!(async {
                    tokio::select! {
                        _ = shutdown.changed(), if !draining => Side::Shutdown,
                        _ = tokio::time::sleep(FIRST_REQUEST_POLL), if close_unless_first_request_by.is_some() => {
                            Side::FirstRequestCheck
                        }
                        _ = sleep_until(check_at), if check_at.is_some() => Side::ClockCheck,
                        else => std::future::pending().await,
                    }
                });
                gate.arm();
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                        return Poll::Ready(ControlFlow::Break(res));
                    }
                    gate.poll(cx, side.as_mut()).map(ControlFlow::Continue)
                })
                .await
            };
            match event {
                ControlFlow::Break(res) => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                ControlFlow::Continue(Side::Shutdown) => {
                    draining = true;
                    close_unless_first_request_by = first_request_deadline(&activity, &limits);
                    if close_unless_first_request_by.is_none() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                ControlFlow::Continue(Side::FirstRequestCheck) => {
                    if activity.has_begun() || close_unless_first_request_by.is_some_and(|t| Instant::now() >= t) {
                        close_unless_first_request_by = None;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                ControlFlow::Continue(Side::ClockCheck) => match activity.timed_out(&limits, draining) {
                    None => {}
                    Some(timeout) => {
                        metrics::counter!("phr_connections_timed_out_total", "reason" => timeout.label()).increment(1);
                        if timeout == Timeout::HeaderRead {
                            // Nothing is owed to a client that has not finished a head, and
                            // a graceful shutdown would keep reading it: drop the connection.
                            tracing::debug!(%peer, "request head not complete within header_read_timeout");
                            break;
                        }
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                },
            }
        }
    }
}

/// What, beside the connection itself, a connection's task waits for.
enum Side {
    /// The gateway is draining (shutdown or hand-over).
    Shutdown,
    /// While draining, time to see whether a first request has begun.
    FirstRequestCheck,
    /// A clock's deadline passed (`activity`; the connection may have been used since).
    ClockCheck,
}

/// What the service of a connection returns for each request.
type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, Infallible>> + Send>>;

/// The HTTP server settings shared by every connection.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The gateway keeps the head clock (`activity`): hyper's would also run between
        // keep-alive requests, cutting them off at `header_read_timeout`.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        // Bounds the pending-reset queue: the mitigation for HTTP/2 rapid reset.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// How often a draining connection that has not sent its first request is checked.
const FIRST_REQUEST_POLL: Duration = Duration::from_millis(10);

/// When a connection starts draining: `None` to shut it down gracefully now (it has
/// begun a request), else the time until which it may still send its first one (see
/// `serve_connection`).
fn first_request_deadline(activity: &Activity, limits: &Limits) -> Option<Instant> {
    (!activity.has_begun()).then(|| Instant::now() + limits.header_read_timeout)
}

/// Sleeps until `at`; never finishes for `None` (the select's branch is off then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
