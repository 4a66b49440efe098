//! Fewer TLS records and system calls per HTTP/2 response: the connection's small writes
//! are gathered into one buffer, and its flush waits for one turn of the scheduler, so
//! that the responses other streams finish in the meantime leave in the same record.
//!
//! Why: hyper's HTTP/2 connection flushes each time it is polled with something to send,
//! and each of its writes becomes one TLS record and one `writev` (tokio-rustls encrypts
//! and sends at once). With many streams, responses finish one task after another, so a
//! connection flushes a ~150-byte record per response, where nginx and HAProxy send one
//! record for all the responses ready in one event-loop turn. The client's work (one
//! decryption and one read per record) and the gateway's (one seal and one system call)
//! fall with the number of records.
//!
//! Bounds: at most [`LIMIT`] bytes are gathered (a TLS record's plaintext); a write that
//! would pass it sends what is gathered first, and a large write (a 16 KiB DATA frame)
//! goes to the TLS stream as it is, uncopied. A flush is put off once: the task wakes
//! itself and yields, and the next flush sends. So nothing waits for more than one turn,
//! and an idle connection holds no buffer (it is freed after each flush).
//!
//! Only for HTTP/2: an HTTP/1.1 connection has one response at a time, and nothing to
//! gather; there the wrapper passes every call straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext gathered before it is sent: one full TLS record.
pub const LIMIT: usize = 16 * 1024;

/// An I/O stream whose writes are gathered and whose flushes wait one scheduler turn
/// (when `gather` is on), see the module documentation.
pub struct CoalescedWrites<IO> {
    inner: IO,
    gather: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed to `inner` (a partial write).
    sent: usize,
    /// The current flush was put off once already.
    deferred: bool,
}

impl<IO> CoalescedWrites<IO> {
    /// Wraps `inner`; with `gather` off every call passes straight through.
    pub fn new(inner: IO, gather: bool) -> Self {
        Self {
            inner,
            gather,
            buf: Vec::new(),
            sent: 0,
            deferred: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> CoalescedWrites<IO> {
    /// Hands everything gathered to `inner`, then frees the buffer (an idle connection
    /// should hold none).
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Gathers `len` bytes (from `put`), sending what was gathered first if they would
    /// not fit; `None` when the write is large enough to go to `inner` as it is.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        put: impl FnOnce(&mut Vec<u8>),
    ) -> Poll<io::Result<Option<usize>>> {
        if self.buf.len() + len > LIMIT {
            ready!(self.poll_send_gathered(cx))?;
            if len >= LIMIT {
                return Poll::Ready(Ok(None));
            }
        }
        if self.buf.capacity() == 0 {
            // One allocation per flush, never a reallocation while gathering.
            self.buf.reserve_exact(LIMIT);
        }
        put(&mut self.buf);
        Poll::Ready(Ok(Some(len)))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.gather {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        match ready!(this.poll_gather(cx, data.len(), |b| b.extend_from_slice(data)))? {
            Some(n) => Poll::Ready(Ok(n)),
            None => Pin::new(&mut this.inner).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.gather {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let put = |b: &mut Vec<u8>| bufs.iter().for_each(|s| b.extend_from_slice(s));
        match ready!(this.poll_gather(cx, len, put))? {
            Some(n) => Poll::Ready(Ok(n)),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Gathering copies the slices anyway, and one vectored call carries a whole
        // buffer of frames.
        self.gather || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.gather && this.sent < this.buf.len() && !this.deferred {
            // Let the streams that are ready run first; their frames join this record.
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send_gathered(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_gathered(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    /// Records every write the wrapper passes on, and every flush.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountWakes(Mutex<usize>);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    fn write(io: &mut CoalescedWrites<Recorder>, cx: &mut Context<'_>, data: &[u8]) {
        assert!(matches!(Pin::new(io).poll_write(cx, data), Poll::Ready(Ok(n)) if n == data.len()));
    }

    #[test]
    fn gathers_small_writes_into_one_and_flushes_after_one_turn() {
        let wakes = Arc::new(CountWakes::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut io = CoalescedWrites::new(Recorder::default(), true);
        write(&mut io, &mut cx, b"headers");
        write(&mut io, &mut cx, b"data");
        // The first flush yields once (waking its task) and sends nothing yet.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(*wakes.0.lock().unwrap(), 1);
        assert!(io.inner.writes.is_empty());
        // Another stream's frames, written before the task is polled again, join them.
        write(&mut io, &mut cx, b"more");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.inner.writes, vec![b"headersdatamore".to_vec()]);
        assert_eq!(io.inner.flushes, 1);
        assert_eq!(io.buf.capacity(), 0, "no buffer is kept between flushes");
        // Nothing gathered: a flush goes straight through.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.inner.flushes, 2);
    }

    #[test]
    fn sends_large_writes_as_they_are_after_what_was_gathered() {
        let waker = Arc::new(CountWakes::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut io = CoalescedWrites::new(Recorder::default(), true);
        write(&mut io, &mut cx, b"head");
        let big = vec![7u8; LIMIT];
        write(&mut io, &mut cx, &big);
        assert_eq!(io.inner.writes, vec![b"head".to_vec(), big]);
        // Writes up to the limit are gathered; one past it sends the gathered ones first.
        let half = vec![1u8; LIMIT / 2];
        write(&mut io, &mut cx, &half);
        write(&mut io, &mut cx, &half);
        assert_eq!(io.inner.writes.len(), 2);
        write(&mut io, &mut cx, b"x");
        assert_eq!(io.inner.writes.len(), 3);
        assert_eq!(io.inner.writes[2].len(), LIMIT);
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.inner.writes[3], b"x");
    }

    #[test]
    fn passes_everything_through_when_not_gathering() {
        let waker = Arc::new(CountWakes::default()).into();
        let mut cx = Context::from_waker(&waker);
        let mut io = CoalescedWrites::new(Recorder::default(), false);
        write(&mut io, &mut cx, b"a");
        write(&mut io, &mut cx, b"b");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.inner.writes, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(io.inner.flushes, 1);
    }
}
