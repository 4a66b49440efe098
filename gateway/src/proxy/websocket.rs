//! WebSocket passthrough: online-consultation signalling runs over WebSocket, so an
//! upgrade that the route allows is forwarded, and once both sides have switched
//! protocols the two upgraded connections are spliced together. A tunnel with no
//! traffic either way for `limits.websocket_idle_timeout` is closed.

use http::{header, HeaderMap, Response};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// True for an HTTP/1.1 `Upgrade: websocket` request.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    // Asked of every request, and almost none has `Upgrade`: no second lookup then.
    upgrade
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// After the upstream answered 101, waits for both upgrades and copies bytes both ways
/// until either side closes, or until no byte moved either way for `idle_timeout`.
/// Runs in its own task; errors only end the tunnel. `client_upgrade` is taken from
/// the client's request before it is forwarded.
///
/// Why an idle limit: a tunnel holds a connection slot and two sockets; a client that
/// vanished without closing (a phone that lost its network mid-consultation) would
/// otherwise hold them until the process exits (AV-DOS-1). Signalling clients ping
/// every few seconds to minutes, far inside the default.
pub fn splice(
    client_upgrade: hyper::upgrade::OnUpgrade,
    upstream_resp: &mut Response<hyper::body::Incoming>,
    idle_timeout: Duration,
) {
    let upstream_upgrade = hyper::upgrade::on(upstream_resp);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) else {
            tracing::debug!("websocket upgrade did not complete on both sides");
            return;
        };
        let last = Arc::new(LastActivity::new());
        let mut client = Watched::new(TokioIo::new(client), last.clone());
        let mut upstream = Watched::new(TokioIo::new(upstream), last.clone());
        metrics::gauge!("phr_websocket_tunnels_active").increment(1.0);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = last.silent_for(idle_timeout) => {
                metrics::counter!("phr_websocket_tunnels_idle_closed_total").increment(1);
                tracing::info!(idle_timeout = ?idle_timeout, "websocket tunnel closed: no traffic either way");
            }
        }
        metrics::gauge!("phr_websocket_tunnels_active").decrement(1.0);
    });
}

/// When a byte last moved through a tunnel, in ms since the tunnel opened.
struct LastActivity {
    start: Instant,
    ms: AtomicU64,
}

impl LastActivity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`; sleeps to each deadline instead of
    /// polling, so a busy tunnel costs one timer per `idle`, not per byte.
    async fn silent_for(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.ms.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// One side of a tunnel; every read that returns bytes counts as activity.
struct Watched<T> {
    inner: T,
    last: Arc<LastActivity>,
}

impl<T> Watched<T> {
    fn new(inner: T, last: Arc<LastActivity>) -> Self {
        Self { inner, last }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
