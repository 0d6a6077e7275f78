//! A global allocator that reports every change of the heap to a counting function, for the
//! memory tests (`#[path = "common/counting.rs"] mod counting;`). [`process`] counts the live
//! heap of the whole process and its peak:
//! `#[global_allocator] static ALLOCATOR: counting::Counting = counting::Counting(counting::process);`
//! (a binary that uses it should hold one test, so nothing else allocates while it measures);
//! a test can pass its own function instead (e.g. one counting per thread).

// Each memory test uses part of this file.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Passes every call on to the system allocator and reports the change in bytes to its
/// function, which must not allocate.
pub struct Counting(pub fn(isize));

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// Counts for the whole process (see [`start`] and [`peak_since`]).
pub fn process(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Starts a measurement: the peak is reset to the live heap, which is returned.
pub fn start() -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    before
}

/// The peak heap above `before` (from [`start`]) since the measurement started.
pub fn peak_since(before: isize) -> isize {
    PEAK.load(Ordering::Relaxed) - before
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting function
// must not allocate (`process` only touches atomics).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            (self.0)(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            (self.0)(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        (self.0)(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            (self.0)(new_size as isize - layout.size() as isize);
        }
        p
    }
}
