//! The request-latency histogram must not grow with the number of requests when nobody
//! scrapes `/metrics` (AV-DOS-1). The Prometheus recorder keeps each sample until it is
//! drained; `metrics::spawn_upkeep` drains them. This binary counts the bytes that are
//! allocated and not yet freed, so it runs alone (one test, its own process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(flavor = "current_thread")]
async fn unscraped_latency_samples_are_drained_so_memory_stays_flat() {
    let handle = phr_gateway::metrics::install();
    let route = phr_gateway::metrics::RouteMetrics::new("memory-test");
    phr_gateway::metrics::spawn_upkeep(handle, Duration::from_millis(5));
    // Warm up: the first samples allocate the histogram's buckets.
    for _ in 0..10_000 {
        route.record(200, 0.002);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = LIVE.load(Ordering::Relaxed);
    // 400,000 requests' samples, in batches the upkeep task sees between.
    for _ in 0..40 {
        for _ in 0..10_000 {
            route.record(200, 0.002);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let grown = LIVE.load(Ordering::Relaxed) - before;
    // Kept samples would be at least 400,000 x 8 bytes = 3.2 MB.
    assert!(
        grown < 256 * 1024,
        "{grown} bytes still allocated after 400,000 unscraped samples: the histogram keeps them"
    );
}
