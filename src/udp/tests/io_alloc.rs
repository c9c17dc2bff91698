//! Zero heap allocations on the steady-state receive and send paths.
//!
//! A counting global allocator counts only allocations made by the measuring
//! thread while measuring is switched on, so the test harness's own threads do
//! not disturb the count. Send and receive run in the same thread in waves, so
//! nothing blocks and nothing is lost.

mod io_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use intentra_udp::{Driver, DriverKind, Wait};
use io_common::*;

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel neither count nor reset each
    // other's allocations.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if MEASURING.with(|m| m.get()) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

/// Runs `f` with counting on and returns how many allocations it made.
fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCS.with(|a| a.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

// SAFETY: defers every operation to the system allocator unchanged; the only
// addition is reading and bumping const-initialised thread locals, which
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WAVE: usize = 64;
const DATAGRAMS: usize = 100_000;

/// Sends `waves` waves of WAVE datagrams from `a` to `b` and receives them all.
/// Returns the datagrams received; panics if a wave does not fully arrive
/// within bounded attempts.
fn run_waves(a: &mut dyn Driver, b: &mut dyn Driver, waves: usize) -> usize {
    let dst = b.local_addr();
    let mut received = 0usize;
    let mut checksum = 0u64;
    for wave in 0..waves {
        for i in 0..WAVE {
            let mut slot = a.send_buffer().expect("send ring has room for a wave");
            let buf = slot.buf();
            buf[..8].copy_from_slice(&((wave * WAVE + i) as u64).to_le_bytes());
            buf[8..128].fill(i as u8);
            slot.commit(dst, 128).expect("fits");
        }
        let sent = a.flush().expect("flush");
        assert_eq!(sent.datagrams_sent, WAVE);
        let mut got = 0;
        let mut attempts = 0;
        while got < WAVE && attempts < 1000 {
            attempts += 1;
            let s = b
                .recv_batch(Wait::Timeout(Duration::from_millis(100)), &mut |dg| {
                    checksum = checksum.wrapping_add(u64::from(dg.data[8]) + dg.data.len() as u64);
                })
                .expect("recv");
            got += s.datagrams;
        }
        assert_eq!(got, WAVE, "wave {wave} incomplete");
        received += got;
    }
    assert!(checksum > 0);
    received
}

fn assert_no_allocations(kind: DriverKind, gso_gro: bool) {
    let mut tx = socket_cfg();
    let mut rx = socket_cfg();
    if gso_gro {
        tx.gso = true;
        rx.gro = true;
        rx.timestamps = true;
    }
    let mut a = open(kind, &tx);
    let mut b = open(kind, &rx);
    // Warm up: first-touch of lazily created state (thread locals, the ring's
    // pages, the multishot arm) happens here, outside the measured region.
    run_waves(a.as_mut(), b.as_mut(), 20);

    let waves = DATAGRAMS.div_ceil(WAVE);
    let (received, allocs) = count_allocs(|| run_waves(a.as_mut(), b.as_mut(), waves));
    assert!(received >= DATAGRAMS);
    assert_eq!(
        allocs, 0,
        "{kind} (gso/gro: {gso_gro}) allocated {allocs} times over {received} datagrams"
    );
}

#[test]
fn mmsg_steady_state_does_not_allocate() {
    assert_no_allocations(DriverKind::Mmsg, false);
}

#[test]
fn mmsg_with_gso_gro_and_timestamps_does_not_allocate() {
    assert_no_allocations(DriverKind::Mmsg, true);
}

#[test]
fn uring_steady_state_does_not_allocate() {
    assert_no_allocations(DriverKind::Uring, false);
}

#[test]
fn uring_with_gso_gro_and_timestamps_does_not_allocate() {
    assert_no_allocations(DriverKind::Uring, true);
}

#[test]
fn the_counter_notices_allocations() {
    let (v, allocs) = count_allocs(|| std::hint::black_box(vec![1u8; 64]));
    drop(v);
    assert_eq!(allocs, 1);
}
