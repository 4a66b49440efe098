//! Polling a task's side futures only when they woke it.
//!
//! A connection's task runs its HTTP connection beside a few futures that rarely finish:
//! the shutdown signal and the connection's clocks (`server/`). With
//! `tokio::select!` every wake-up polls all of them, and a proxied request wakes the
//! task about twice; the shutdown watch, the idle timer and the select itself came to
//! about 660 user-space instructions per small HTTP/1.1 request (callgrind), a seventh
//! of what the gateway does above the bare hyper proxy (issue 23, target 3). Behind a
//! [`WakeGate`] the side futures see their own waker, so the task knows when one of
//! them asked to be polled and polls them then, and otherwise polls only the connection:
//! 48,790 → 48,210 instructions per HTTP/1.1 100 B request and 63,842 → 63,687 per
//! HTTP/2 one (`bench/callgrind.sh`, both builds with one codegen unit; with the
//! release profile's four, how the compiler splits the crate moves the count by more
//! than this either way).

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// What the side futures' waker shares with the task.
#[derive(Default)]
struct Flag {
    /// A side future woke the task (or new side futures await their first poll).
    woken: AtomicBool,
    /// The task to wake.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Gates one task's side futures: [`WakeGate::poll`] polls them only after their waker
/// fired, or after [`WakeGate::arm`] (new side futures must be polled once to register
/// their wake-ups). One per connection task; the waker is made once.
pub struct WakeGate {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Default for WakeGate {
    fn default() -> Self {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        Self { flag, waker }
    }
}

impl WakeGate {
    /// The side futures were replaced: poll them at the next [`WakeGate::poll`].
    pub fn arm(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// Polls `side` if it woke the task since it was last polled (or the gate was armed);
    /// `Pending` otherwise. Either way the task (`cx`) is woken when `side` next asks.
    pub fn poll<F: Future>(&self, cx: &mut Context<'_>, side: Pin<&mut F>) -> Poll<F::Output> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        side.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    /// Counts its polls and finishes when told.
    struct Side {
        polls: usize,
        done: bool,
        waker: Option<Waker>,
    }

    impl Future for Side {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            if self.done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn side_futures_are_polled_once_armed_and_then_only_when_they_wake_the_task() {
        let gate = WakeGate::default();
        let mut side = Side {
            polls: 0,
            done: false,
            waker: None,
        };
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        // Not armed: never polled.
        assert!(gate.poll(&mut cx, Pin::new(&mut side)).is_pending());
        assert_eq!(side.polls, 0);
        gate.arm();
        assert!(gate.poll(&mut cx, Pin::new(&mut side)).is_pending());
        assert_eq!(side.polls, 1);
        // Woken by something else (the connection): the side future is left alone.
        for _ in 0..5 {
            assert!(gate.poll(&mut cx, Pin::new(&mut side)).is_pending());
        }
        assert_eq!(side.polls, 1);
        // Its own waker fires: polled, and it finishes.
        side.done = true;
        side.waker.take().expect("registered").wake();
        assert!(gate.poll(&mut cx, Pin::new(&mut side)).is_ready());
        assert_eq!(side.polls, 2);
    }

    #[tokio::test]
    async fn a_side_timer_wakes_the_task_through_the_gate() {
        let gate = WakeGate::default();
        gate.arm();
        let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::from_millis(20)));
        // Without the gate's wake-up this would hang (nothing else wakes the task).
        tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| gate.poll(cx, sleep.as_mut())))
            .await
            .expect("the timer's wake-up reached the task");
    }
}
