//! A global allocator that counts the bytes live on top of mimalloc (`--features heap-count`),
//! to set the heap against the resident set at full speed (a heap profiler slows the run, and
//! fewer records are then in flight).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// mimalloc, with [`live`] and [`peak`] kept.
pub struct Counting;

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// `ptr` as allocated: `size` bytes counted when it is not null (a failed allocation, as
/// `try_reserve` may meet, holds nothing).
fn counted(ptr: *mut u8, size: usize) -> *mut u8 {
    if !ptr.is_null() {
        grew(size);
    }
    ptr
}

// SAFETY: every call is passed on to mimalloc unchanged; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        counted(unsafe { mimalloc::MiMalloc.alloc(layout) }, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        counted(
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
            layout.size(),
        )
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let moved = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        // A failed realloc leaves the old block as it was.
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

/// Bytes live on the Rust heap now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once so far.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// With `TIDINGS_HEAP_SAMPLE_MS` set, a thread that prints `heap MS LIVE RSS PEAK` to stderr at
/// that period: milliseconds since the start, then the bytes live, the resident set and the
/// most bytes live so far, in MiB.
pub fn sample_from_env() {
    let Some(ms) = std::env::var("TIDINGS_HEAP_SAMPLE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let t0 = std::time::Instant::now();
    std::thread::spawn(move || {
        loop {
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            eprintln!(
                "heap {} {:.1} {:.1} {:.1}",
                t0.elapsed().as_millis(),
                mib(live()),
                mib(crate::rss_bytes().unwrap_or(0) as usize),
                mib(peak())
            );
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    });
}
