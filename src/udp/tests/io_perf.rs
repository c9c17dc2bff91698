//! Raw loopback throughput of each driver (128-byte datagrams). Ignored by
//! default; run in release with:
//! `cargo test --release --test io_perf -- --ignored --nocapture --test-threads=1`
//! It prints numbers and asserts only that traffic flowed: no timing assertions.

mod io_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intentra_udp::{DriverKind, RecvStats, SendStats, SocketConfig, Wait};
use io_common::*;

const SIZE: usize = 128;
const BURST: usize = 64;
const RUN: Duration = Duration::from_secs(2);

fn measure(label: &str, kind: DriverKind, tx: SocketConfig, rx: SocketConfig) {
    let mut a = open(kind, &tx);
    let mut b = open(kind, &rx);
    let dst = b.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let done_rx = done.clone();
    let receiver = std::thread::spawn(move || {
        let mut total = RecvStats::default();
        let start = Instant::now();
        let mut last = start;
        let mut quiet = 0;
        // Bounded: stops after the sender finished and 3 empty waits, or 10 s.
        while quiet < 3 && start.elapsed() < Duration::from_secs(10) {
            let s = b
                .recv_batch(Wait::Timeout(Duration::from_millis(20)), &mut |dg| {
                    std::hint::black_box(dg.data);
                })
                .unwrap();
            if s.datagrams > 0 {
                last = Instant::now();
            } else if done_rx.load(Ordering::Acquire) {
                quiet += 1;
            }
            total += s;
        }
        (total, last.duration_since(start))
    });
    let mut sent = SendStats::default();
    let start = Instant::now();
    while start.elapsed() < RUN {
        for i in 0..BURST {
            let Some(mut slot) = a.send_buffer() else {
                break;
            };
            slot.buf()[..8].copy_from_slice(&(i as u64).to_le_bytes());
            slot.commit(dst, SIZE).unwrap();
        }
        sent += a.flush().unwrap();
    }
    let send_time = start.elapsed();
    done.store(true, Ordering::Release);
    let (recvd, recv_time) = receiver.join().unwrap();
    let tx_pps = sent.datagrams_sent as f64 / send_time.as_secs_f64();
    let rx_pps = recvd.datagrams as f64 / recv_time.as_secs_f64().max(1e-9);
    println!(
        "{label:<28} tx {:>10.0} pps ({:>5.1} dgram/syscall, {} gso)   rx {:>10.0} pps ({:>5.1} dgram/syscall, {} gro bufs)   delivered {:.1}%",
        tx_pps,
        sent.datagrams_sent as f64 / sent.syscalls.max(1) as f64,
        sent.gso_batches,
        rx_pps,
        recvd.datagrams as f64 / recvd.syscalls.max(1) as f64,
        recvd.gro_buffers,
        100.0 * recvd.datagrams as f64 / sent.datagrams_sent.max(1) as f64,
    );
    assert!(recvd.datagrams > 0);
}

#[test]
#[ignore]
fn loopback_pps_128_bytes() {
    for kind in [DriverKind::Basic, DriverKind::Mmsg, DriverKind::Uring] {
        measure(kind.name(), kind, socket_cfg(), socket_cfg());
    }
    for kind in [DriverKind::Mmsg, DriverKind::Uring] {
        let mut tx = socket_cfg();
        tx.gso = true;
        let mut rx = socket_cfg();
        rx.gro = true;
        measure(&format!("{} + gso/gro", kind.name()), kind, tx, rx);
    }
}

/// One thread, waves of 1024: time the flush (send path incl. the kernel's
/// loopback delivery) and the drain (receive path) separately.
fn measure_paths(label: &str, kind: DriverKind, tx: SocketConfig, rx: SocketConfig) {
    const WAVE: usize = 1024;
    let mut a = open(kind, &tx);
    let mut b = open(kind, &rx);
    let dst = b.local_addr();
    let mut send_time = Duration::ZERO;
    let mut recv_time = Duration::ZERO;
    let mut sent = SendStats::default();
    let mut recvd = RecvStats::default();
    let start = Instant::now();
    while start.elapsed() < RUN {
        for i in 0..WAVE {
            let Some(mut slot) = a.send_buffer() else {
                break;
            };
            slot.buf()[..8].copy_from_slice(&(i as u64).to_le_bytes());
            slot.commit(dst, SIZE).unwrap();
        }
        let t = Instant::now();
        sent += a.flush().unwrap();
        send_time += t.elapsed();
        let t = Instant::now();
        let mut got = 0;
        let mut empty = 0;
        while got < WAVE && empty < 3 {
            let s = b
                .recv_batch(Wait::Timeout(Duration::from_millis(20)), &mut |dg| {
                    std::hint::black_box(dg.data);
                })
                .unwrap();
            if s.datagrams == 0 {
                empty += 1;
            }
            got += s.datagrams;
            recvd += s;
        }
        recv_time += t.elapsed();
    }
    println!(
        "{label:<28} send path {:>10.0} pps   recv path {:>10.0} pps ({:>5.1} dgram/syscall)   delivered {:.1}%",
        sent.datagrams_sent as f64 / send_time.as_secs_f64(),
        recvd.datagrams as f64 / recv_time.as_secs_f64(),
        recvd.datagrams as f64 / recvd.syscalls.max(1) as f64,
        100.0 * recvd.datagrams as f64 / sent.datagrams_sent.max(1) as f64,
    );
    assert!(recvd.datagrams > 0);
}

#[test]
#[ignore]
fn loopback_paths_128_bytes() {
    for kind in [DriverKind::Basic, DriverKind::Mmsg, DriverKind::Uring] {
        measure_paths(kind.name(), kind, socket_cfg(), socket_cfg());
    }
}
