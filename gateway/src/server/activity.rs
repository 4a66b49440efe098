//! What a client connection is doing, for the two clocks its task keeps (AV-DOS-1):
//! `limits.header_read_timeout` for a request head the client owes or has begun, and
//! `limits.idle_timeout` for a connection with nothing in flight.
//!
//! The head clock is the gateway's, not hyper's. hyper starts its header timer as soon as
//! an HTTP/1.1 connection waits for its next request, so it closed every idle keep-alive
//! connection after `header_read_timeout` (10 s by default) instead of `idle_timeout`
//! (60 s), and a client that asks every 15 s paid a new TLS handshake each time; it also
//! allocated and registered a timer for every request. Here the head clock starts when
//! the connection is accepted (its first request) or at the first byte read while no
//! request is in flight (the next ones), and stops when the head is complete (the request
//! begins), which is what `header_read_timeout` promises: slowloris protection, not a
//! shorter keep-alive. HTTP/2 has no head clock: its frames (PING, SETTINGS,
//! WINDOW_UPDATE) move while no request is in flight, and h2 bounds header blocks itself.

use crate::config::Limits;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Requests in flight, when the last one ended, and when the pending HTTP/1.1 request
/// head began. A connection is idle when nothing is in flight and nothing ended for
/// `idle_timeout`; its head is late when it began `header_read_timeout` ago and the
/// request has not begun.
///
/// Written by the connection's task (reads, writes, request starts) and by the tasks
/// that answer HTTP/2 streams (request ends); every field is a relaxed atomic because
/// each is a fact on its own, never read together with another as one state.
pub(super) struct Activity {
    start: Instant,
    /// Requests begun on this connection, ever.
    begun: AtomicUsize,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since `start`.
    last_ms: AtomicU64,
    /// Whether requests come as HTTP/1.1 heads (false once ALPN or the preface said h2).
    heads: AtomicBool,
    /// When the pending request head began, in milliseconds since `start` plus one;
    /// 0 while no head is pending.
    head_ms: AtomicU64,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeout {
    /// A request head took longer than `header_read_timeout` (or none came).
    HeaderRead,
    /// Nothing was in flight for `idle_timeout`.
    Idle,
}

impl Timeout {
    /// The `reason` label of `phr_connections_timed_out_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Timeout::HeaderRead => "header_read",
            Timeout::Idle => "idle",
        }
    }
}

/// Ends a request's stay in flight when the request's future is done.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// A connection just accepted; `http1` unless ALPN chose h2. An HTTP/1.1 client owes
    /// its first head from now on.
    pub(super) fn new(http1: bool) -> Self {
        Self {
            start: Instant::now(),
            begun: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            heads: AtomicBool::new(http1),
            head_ms: AtomicU64::new(u64::from(http1)),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// A request's head is complete and its service begins.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_ms.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection has begun at least one request.
    pub(super) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Relaxed) > 0
    }

    /// The client sent bytes: with nothing in flight, they begin the next head.
    fn bytes_read(&self) {
        if self.heads.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_ms.load(Ordering::Relaxed) == 0
        {
            self.head_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// The gateway sent bytes: a response still streaming to a client that already sent
    /// (part of) its next head, so the head's clock starts over. hyper reads that head
    /// once the response is written.
    fn bytes_written(&self) {
        if self.head_ms.load(Ordering::Relaxed) != 0 {
            self.head_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// The client spoke HTTP/2 without ALPN (its first bytes are the preface).
    fn heard_http2_preface(&self) {
        self.heads.store(false, Ordering::Relaxed);
        self.head_ms.store(0, Ordering::Relaxed);
    }

    fn head_deadline(&self, limits: &Limits) -> Option<Instant> {
        match self.head_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.at(ms - 1) + limits.header_read_timeout),
        }
    }

    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.at(self.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout)
    }

    /// When the connection's task should next look at the clocks; `None`: only when
    /// something else wakes it. While draining the idle clock is off (the connection is
    /// closing anyway), the head clock is not (a client must not hold a draining
    /// connection open by never finishing a head).
    ///
    /// An HTTP/1.1 connection is looked at at least every `header_read_timeout`, so that
    /// a head that begins later is never given more than that without a timer being
    /// re-armed on every request: the per-request cost this module removes.
    pub(super) fn next_check(&self, limits: &Limits, draining: bool) -> Option<Instant> {
        let now = Instant::now();
        let head = self
            .heads
            .load(Ordering::Relaxed)
            .then(|| self.head_deadline(limits).unwrap_or(now + limits.header_read_timeout));
        let idle = if draining {
            None
        } else {
            Some(self.idle_deadline(limits).unwrap_or(now + limits.idle_timeout))
        };
        match (head, idle) {
            (Some(h), Some(i)) => Some(h.min(i)),
            (h, i) => h.or(i),
        }
    }

    /// Which clock, if any, has run out now. A request in flight stops both.
    pub(super) fn timed_out(&self, limits: &Limits, draining: bool) -> Option<Timeout> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = Instant::now();
        if self.head_deadline(limits).is_some_and(|d| now >= d) {
            return Some(Timeout::HeaderRead);
        }
        if !draining && self.idle_deadline(limits).is_some_and(|d| now >= d) {
            return Some(Timeout::Idle);
        }
        None
    }
}

/// The client's TLS stream, telling the connection's [`Activity`] when plaintext bytes
/// move (TLS-only records, such as alerts or key updates, do not begin a head).
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    first_read: bool,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            first_read: true,
        }
    }
}

/// How an HTTP/2 connection without ALPN starts (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if std::mem::take(&mut this.first_read) && buf.filled()[before..].starts_with(H2_PREFACE_START) {
                this.activity.heard_http2_preface();
            }
            this.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(3600),
            ..Limits::default()
        }
    }

    /// A connection accepted 10 s ago (so that clocks can be set in the past).
    fn aged(http1: bool) -> Arc<Activity> {
        let mut a = Activity::new(http1);
        a.start -= Duration::from_secs(10);
        Arc::new(a)
    }

    /// Sets the head's start `ago` in the past (at most 10 s on an [`aged`] one).
    fn head_began(a: &Activity, ago: Duration) {
        let ms = a
            .now_ms()
            .checked_sub(ago.as_millis() as u64)
            .expect("an aged activity");
        a.head_ms.store(ms + 1, Ordering::Relaxed);
    }

    #[test]
    fn a_new_http1_connection_owes_its_first_head_within_the_header_read_timeout() {
        let limits = limits();
        let fresh = Activity::new(true);
        assert!(fresh.next_check(&limits, false).unwrap() <= fresh.start + limits.header_read_timeout);
        assert_eq!(fresh.timed_out(&limits, false), None);
        // Accepted 10 s ago, and no request yet.
        let a = aged(true);
        assert_eq!(a.timed_out(&limits, false), Some(Timeout::HeaderRead));
        // Draining does not stop the head clock.
        assert_eq!(a.timed_out(&limits, true), Some(Timeout::HeaderRead));
    }

    #[test]
    fn between_requests_only_the_idle_clock_runs_until_a_byte_arrives() {
        let a = aged(true);
        let limits = limits();
        drop(a.begin());
        assert_eq!(a.head_ms.load(Ordering::Relaxed), 0);
        assert_eq!(a.timed_out(&limits, false), None);
        // Looked at again within header_read_timeout, so a head that begins later is
        // never given longer; but nothing has run out.
        assert!(a.next_check(&limits, false).unwrap() <= Instant::now() + limits.header_read_timeout);
        a.bytes_read();
        let deadline = a.head_deadline(&limits).expect("the next head began");
        assert!(deadline <= Instant::now() + limits.header_read_timeout);
        // The head completes: the request begins, and the head clock stops.
        let request = a.begin();
        assert_eq!(a.head_deadline(&limits), None);
        head_began(&a, Duration::from_secs(1));
        assert_eq!(
            a.timed_out(&limits, false),
            None,
            "a request in flight stops both clocks"
        );
        drop(request);
    }

    #[test]
    fn bytes_read_while_a_request_is_in_flight_begin_no_head() {
        let a = Arc::new(Activity::new(true));
        let request = a.begin();
        a.bytes_read(); // the request's body
        assert_eq!(a.head_ms.load(Ordering::Relaxed), 0);
        drop(request);
        a.bytes_written(); // the response, after the request's future ended
        assert_eq!(a.head_ms.load(Ordering::Relaxed), 0, "writes alone begin no head");
    }

    #[test]
    fn a_streaming_response_restarts_a_pipelined_heads_clock() {
        let a = aged(true);
        drop(a.begin());
        head_began(&a, Duration::from_secs(1));
        assert_eq!(a.timed_out(&limits(), false), Some(Timeout::HeaderRead));
        a.bytes_written();
        assert_eq!(a.timed_out(&limits(), false), None);
    }

    #[test]
    fn http2_has_no_head_clock() {
        let limits = limits();
        let a = Arc::new(Activity::new(false));
        a.bytes_read();
        assert_eq!(a.head_ms.load(Ordering::Relaxed), 0);
        assert!(a.next_check(&limits, false).unwrap() > Instant::now() + limits.header_read_timeout);
        assert_eq!(a.next_check(&limits, true), None, "draining: no clock at all");
        // Without ALPN: the preface tells.
        let b = Arc::new(Activity::new(true));
        b.heard_http2_preface();
        b.bytes_read();
        assert_eq!(b.head_deadline(&limits), None);
    }

    #[test]
    fn nothing_in_flight_for_the_idle_timeout_is_idle_unless_draining() {
        let a = Arc::new(Activity::new(false));
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            ..limits()
        };
        assert_eq!(a.timed_out(&limits, false), Some(Timeout::Idle));
        assert_eq!(a.timed_out(&limits, true), None);
        let request = a.begin();
        assert_eq!(a.timed_out(&limits, false), None);
        drop(request);
        assert_eq!(a.timed_out(&limits, false), Some(Timeout::Idle));
    }

    #[tokio::test]
    async fn the_stream_reports_reads_and_detects_the_http2_preface() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let a = Arc::new(Activity::new(true));
        drop(a.begin());
        let mut watched = Watched::new(server, a.clone());
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = watched.read(&mut buf).await.unwrap();
        assert!(n > 0);
        assert!(
            a.head_deadline(&limits()).is_some(),
            "a read with nothing in flight began a head"
        );

        let (mut client, server) = tokio::io::duplex(1024);
        let b = Arc::new(Activity::new(true));
        let mut watched = Watched::new(server, b.clone());
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        assert!(watched.read(&mut buf).await.unwrap() > 0);
        assert_eq!(b.head_deadline(&limits()), None, "the preface: HTTP/2, no head clock");
        watched.write_all(b"x").await.unwrap();
        assert_eq!(b.head_deadline(&limits()), None);
    }
}
