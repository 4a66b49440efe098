//! Keep-alive HTTP/1.1 connections to one endpoint, reused across requests.
//!
//! Why not hyper-util's pooled client: per request it hashes a pool key, races a checkout
//! against a lazy connect, and spawns a task that waits for the connection to become idle
//! before returning it. On the small-response path that bookkeeping was a measurable share
//! of the gateway's CPU per request (bench/RESULTS.md). Here a connection's sender goes
//! back into the endpoint's queue as soon as the response head has arrived, and a checkout
//! takes the first one that hyper reports ready, i.e. whose previous exchange has finished
//! (body included), so no request ever waits behind another's response body.
//!
//! Every connection is opened through [`super::connector::Connector`], so the residency
//! check (DATA-JP-1) still runs on the address actually dialled, once per connection.

use super::UpstreamBody;
use hyper::client::conn::http1::SendRequest;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A connection that is open and can carry one exchange at a time.
pub(super) struct Conn {
    pub sender: SendRequest<UpstreamBody>,
    /// The address connected, reported in access records (DATA-JP-1 evidence).
    pub peer: SocketAddr,
    /// When the connection last came back; an idle connection older than the pool's
    /// idle timeout is closed instead of reused (the upstream may be about to close it).
    since: Instant,
}

impl Conn {
    pub fn new(sender: SendRequest<UpstreamBody>, peer: SocketAddr) -> Self {
        Self {
            sender,
            peer,
            since: Instant::now(),
        }
    }
}

/// The open connections of one endpoint.
pub(super) struct Connections {
    queue: Mutex<VecDeque<Conn>>,
    max_kept: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("max_kept", &self.max_kept)
            .finish_non_exhaustive()
    }
}

impl Connections {
    pub fn new(max_kept: usize, idle_timeout: Duration) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            max_kept,
            idle_timeout,
        }
    }

    /// The oldest connection that is ready for a new exchange, if any. Closed and stale
    /// connections are dropped on the way; busy ones (a response body still streaming)
    /// stay queued for later.
    pub fn checkout(&self) -> Option<Conn> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..queue.len() {
            let conn = queue.pop_front()?;
            if conn.sender.is_closed() {
                continue;
            }
            if !conn.sender.is_ready() {
                queue.push_back(conn);
                continue;
            }
            if conn.since.elapsed() > self.idle_timeout {
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Returns a connection whose response head has arrived. Beyond `max_kept` it is
    /// dropped, which closes it once its exchange is done.
    pub fn checkin(&self, mut conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        conn.since = Instant::now();
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() < self.max_kept {
            queue.push_back(conn);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A loopback server that answers every request on a connection with `body`.
    async fn server(body: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn open(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        Conn::new(sender, addr)
    }

    fn get() -> http::Request<UpstreamBody> {
        http::Request::builder()
            .uri("/")
            .header("host", "x")
            .body(Either::Right(Full::new(Bytes::new())))
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_after_its_response_body_is_read() {
        let addr = server(&[b'x'; 200_000]).await;
        let pool = Connections::new(8, Duration::from_secs(60));
        let mut conn = open(addr).await;
        let resp = conn.sender.send_request(get()).await.unwrap();
        pool.checkin(conn);
        // The body is still unread: the connection is queued but not handed out.
        assert!(pool.checkout().is_none());
        assert_eq!(pool.len(), 1);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 200_000);
        // Reading the body lets the connection task mark it idle.
        let mut ready = None;
        for _ in 0..100 {
            ready = pool.checkout();
            if ready.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut conn = ready.expect("the connection becomes ready once its body is read");
        assert_eq!(conn.peer, addr);
        assert!(conn.sender.send_request(get()).await.unwrap().status().is_success());
    }

    #[tokio::test]
    async fn stale_and_surplus_connections_are_dropped() {
        let addr = server(b"ok").await;
        let pool = Connections::new(1, Duration::from_millis(50));
        let (a, b) = (open(addr).await, open(addr).await);
        pool.checkin(a);
        pool.checkin(b);
        assert_eq!(pool.len(), 1, "only max_kept connections are kept");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            pool.checkout().is_none(),
            "an idle connection past the timeout is not reused"
        );
        assert_eq!(pool.len(), 0);
    }
}
