//! A global allocator that counts allocations, for tests that prove a path allocates nothing.
//! Include it with `#[path = "../../udp/tests/common/counting_alloc.rs"] mod counting_alloc;`
//! (it lives with the drivers because it is unsafe code, and all of it is kept there).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates, so the
    // allocator itself may use it.
    static ON_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// Allocations (and reallocations) so far, in every thread of the test binary.
#[allow(dead_code)]
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations (and reallocations) so far by the calling thread alone: for a test whose
/// measured path runs on its own thread, so that the test harness printing another test's
/// result meanwhile is not counted.
#[allow(dead_code)]
pub fn allocations_on_this_thread() -> u64 {
    ON_THIS_THREAD.with(Cell::get)
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ON_THIS_THREAD.with(|n| n.set(n.get() + 1));
}

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
