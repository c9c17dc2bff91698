//! Every driver moves exact batches over loopback; GSO/GRO, truncation,
//! timestamps, waits and the send-side edge cases behave as documented.

mod io_common;

use std::time::{Duration, SystemTime};

use intentra_udp::{
    open_driver, open_udp, Driver, DriverConfig, DriverKind, Flow, RecvStats, SocketConfig, Wait,
};
use io_common::*;

const KINDS: [DriverKind; 3] = [DriverKind::Uring, DriverKind::Mmsg, DriverKind::Basic];

fn mixed_payloads(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| payload(i, 4 + (i as usize * 37) % 1400))
        .collect()
}

#[test]
fn every_driver_pair_exchanges_exact_batches() {
    for a_kind in KINDS {
        for b_kind in KINDS {
            let mut a = open(a_kind, &socket_cfg());
            let mut b = open(b_kind, &socket_cfg());
            let payloads = mixed_payloads(600);
            let (sent, recvd) = exchange(a.as_mut(), b.as_mut(), &payloads);
            assert!(sent.syscalls > 0 && recvd.syscalls > 0);
            // And back, so each driver is exercised in both directions.
            let (_, _) = exchange(b.as_mut(), a.as_mut(), &payloads[..100]);
        }
    }
}

#[test]
fn batched_drivers_need_fewer_syscalls_than_datagrams() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut a = open(kind, &socket_cfg());
        let mut b = open(kind, &socket_cfg());
        let payloads: Vec<_> = (0..512).map(|i| payload(i, 128)).collect();
        let (sent, _) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert!(sent.syscalls < payloads.len() / 8, "{kind}: {sent:?}");
    }
}

/// Runs of equal-size datagrams (last shorter) to one destination.
fn gso_payloads() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut seq = 0;
    for run in 0..6 {
        for _ in 0..10 {
            v.push(payload(seq, 300 + run));
            seq += 1;
        }
        v.push(payload(seq, 100));
        seq += 1;
    }
    v
}

#[test]
fn gso_runs_arrive_as_individual_datagrams() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut cfg = socket_cfg();
        cfg.gso = true;
        let mut a = open(kind, &cfg);
        assert!(
            a.gso_active(),
            "{kind}: GSO should be available on loopback"
        );
        let mut b = open(DriverKind::Mmsg, &socket_cfg());
        let payloads = gso_payloads();
        let (sent, recvd) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert_eq!(sent.gso_batches, 6, "{kind}: {sent:?}");
        assert!(!sent.gso_disabled_now);
        assert_eq!(recvd.gro_buffers, 0);
    }
}

#[test]
fn gso_refused_at_send_time_falls_back_and_is_counted() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut cfg = socket_cfg();
        cfg.gso = true;
        cfg.force.gso_send = true;
        let mut a = open(kind, &cfg);
        assert!(a.gso_active());
        let mut b = open(DriverKind::Mmsg, &socket_cfg());
        // A lone datagram first: no GSO attempted, nothing disabled.
        let (sent, _) = exchange(a.as_mut(), b.as_mut(), &[payload(999, 50)]);
        assert!(!sent.gso_disabled_now && a.gso_active());
        let payloads = gso_payloads();
        let (sent, _) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert!(sent.gso_disabled_now, "{kind}: {sent:?}");
        assert_eq!(sent.gso_batches, 0);
        assert!(!a.gso_active());
        assert!(!a.caps().gso);
        let (sent, _) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert!(!sent.gso_disabled_now);
        assert_eq!(sent.gso_batches, 0);
    }
}

#[test]
fn gro_receivers_walk_coalesced_buffers_into_exact_datagrams() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut tx = socket_cfg();
        tx.gso = true;
        let mut rx = socket_cfg();
        rx.gro = true;
        let mut a = open(DriverKind::Mmsg, &tx);
        let mut b = open(kind, &rx);
        assert!(b.caps().gro);
        let payloads = gso_payloads();
        let (sent, recvd) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert_eq!(sent.gso_batches, 6);
        // Loopback hands a GSO send to a GRO socket as one coalesced buffer.
        assert!(recvd.gro_buffers >= 1, "{kind}: {recvd:?}");
        assert!(recvd.syscalls < payloads.len());
        // Non-coalesced traffic still arrives on a GRO socket.
        let mut c = open(DriverKind::Basic, &socket_cfg());
        exchange(c.as_mut(), b.as_mut(), &mixed_payloads(50));
    }
}

/// Longer than `max_datagram` is `truncated` on every driver, with GRO on or off: a GRO
/// slot holds 64 KiB, so the kernel never cuts there and the driver must say it instead.
#[test]
fn truncated_datagrams_are_counted_not_delivered() {
    for (kind, gro) in KINDS.iter().flat_map(|&k| [(k, false), (k, true)]) {
        let small = DriverConfig {
            max_datagram: 512,
            ..DriverConfig::default()
        };
        let mut rx_cfg = socket_cfg();
        rx_cfg.gro = gro;
        let (sock, caps) = open_udp(&rx_cfg).unwrap();
        let mut b: Box<dyn Driver> = match kind {
            DriverKind::Uring => {
                Box::new(intentra_udp::UringDriver::new(sock, caps, &small).unwrap())
            }
            DriverKind::Mmsg => {
                Box::new(intentra_udp::MmsgDriver::new(sock, caps, &small).unwrap())
            }
            DriverKind::Basic => {
                Box::new(intentra_udp::BasicDriver::new(sock, caps, &small).unwrap())
            }
        };
        let mut a = open(DriverKind::Mmsg, &socket_cfg());
        let dst = b.local_addr();
        send_all(
            a.as_mut(),
            dst,
            &[
                payload(1, 512),
                payload(2, 513),
                payload(3, 1500),
                payload(4, 10),
            ],
        );
        let mut got = Vec::new();
        let mut stats = RecvStats::default();
        for _ in 0..100 {
            stats += b
                .recv_batch(Wait::Timeout(Duration::from_millis(50)), &mut |dg| {
                    got.push(dg.data.to_vec())
                })
                .unwrap();
            if got.len() + stats.truncated >= 4 {
                break;
            }
        }
        assert_eq!(
            got,
            vec![payload(1, 512), payload(4, 10)],
            "{kind} gro={gro}"
        );
        assert_eq!(stats.truncated, 2, "{kind} gro={gro}: {stats:?}");
    }
}

#[test]
fn kernel_timestamps_are_reported_when_enabled() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut rx = socket_cfg();
        rx.timestamps = true;
        let mut b = open(kind, &rx);
        let mut a = open(DriverKind::Basic, &socket_cfg());
        send_all(a.as_mut(), b.local_addr(), &[payload(7, 64)]);
        let mut stamps = Vec::new();
        for _ in 0..100 {
            b.recv_batch(Wait::Timeout(Duration::from_millis(50)), &mut |dg| {
                stamps.push(dg.kernel_time)
            })
            .unwrap();
            if !stamps.is_empty() {
                break;
            }
        }
        let t = stamps[0].expect("a kernel timestamp").to_system_time();
        // Within a day of now: proves it is CLOCK_REALTIME, not garbage.
        let now = SystemTime::now();
        let skew = now.duration_since(t).unwrap_or_else(|e| e.duration());
        assert!(
            skew < Duration::from_secs(86_400),
            "{kind}: {t:?} vs {now:?}"
        );
    }
}

#[test]
fn waits_return_empty_when_nothing_arrives() {
    for kind in KINDS {
        let mut d = open(kind, &socket_cfg());
        let mut n = 0;
        let s = d.recv_batch(Wait::NoWait, &mut |_| n += 1).unwrap();
        assert_eq!((n, s.datagrams), (0, 0));
        let s = d
            .recv_batch(Wait::Timeout(Duration::from_millis(5)), &mut |_| n += 1)
            .unwrap();
        assert_eq!((n, s.datagrams), (0, 0));
        // Forever returns once something is queued.
        let mut a = open(DriverKind::Basic, &socket_cfg());
        send_all(a.as_mut(), d.local_addr(), &[payload(1, 20)]);
        let mut got = 0;
        for _ in 0..3 {
            got += d
                .recv_batch(Wait::Forever, &mut |_| n += 1)
                .unwrap()
                .datagrams;
            if got > 0 {
                break;
            }
        }
        assert_eq!(got, 1);
        assert_eq!(n, 1);
    }
}

#[test]
fn send_ring_fills_then_frees_on_flush() {
    for kind in KINDS {
        let cfg = DriverConfig {
            send_slots: 8,
            ..DriverConfig::default()
        };
        let mut d = open_driver(kind, &socket_cfg(), &cfg).unwrap().driver;
        let dst = open(DriverKind::Basic, &socket_cfg()).local_addr();
        for _ in 0..8 {
            let mut s = d.send_buffer().unwrap();
            assert_eq!(s.capacity(), cfg.max_datagram);
            s.buf()[0] = 1;
            s.commit(dst, 1).unwrap();
        }
        assert!(d.send_buffer().is_none());
        assert_eq!(d.pending_sends(), 8);
        let stats = d.flush().unwrap();
        assert_eq!(stats.datagrams_sent, 8);
        assert_eq!(d.pending_sends(), 0);
        {
            // Written but never committed: queues nothing.
            let mut s = d.send_buffer().unwrap();
            s.buf()[0] = 9;
        }
        assert_eq!(d.pending_sends(), 0);
        assert_eq!(d.flush().unwrap(), Default::default());
    }
}

#[test]
fn unroutable_destinations_are_dropped_and_counted() {
    for kind in KINDS {
        let mut d = open(kind, &socket_cfg());
        let peer = open(DriverKind::Basic, &socket_cfg()).local_addr();
        let v6: std::net::SocketAddr = "[::1]:9".parse().unwrap();
        for dst in [v6, peer, v6] {
            let mut s = d.send_buffer().unwrap();
            s.buf()[..3].copy_from_slice(b"abc");
            s.commit(dst, 3).unwrap();
        }
        let stats = d.flush().unwrap();
        assert_eq!(stats.datagrams_sent, 1, "{kind}: {stats:?}");
        assert_eq!(stats.dropped_error, 2, "{kind}: {stats:?}");
    }
}

#[test]
fn ipv6_sockets_work_when_loopback_v6_exists() {
    let mut cfg = SocketConfig::new("[::1]:0".parse().unwrap());
    cfg.recv_buffer = Some(RCVBUF);
    if open_udp(&cfg).is_err() {
        return; // no IPv6 loopback in this sandbox
    }
    for kind in KINDS {
        let mut a = open(kind, &cfg);
        let mut b = open(kind, &cfg);
        exchange(a.as_mut(), b.as_mut(), &mixed_payloads(100));
    }
}

#[test]
fn nowait_polling_alone_delivers_everything() {
    // A busy-spinning runtime never blocks; io_uring completions must still
    // surface (the coop task-run flag prompts the one enter that is needed).
    for kind in KINDS {
        let mut a = open(DriverKind::Mmsg, &socket_cfg());
        let mut b = open(kind, &socket_cfg());
        let payloads: Vec<_> = (0..200).map(|i| payload(i, 100)).collect();
        send_all(a.as_mut(), b.local_addr(), &payloads);
        let mut got = Vec::new();
        let mut polls = 0;
        while got.len() < payloads.len() && polls < 1_000_000 {
            polls += 1;
            b.recv_batch(Wait::NoWait, &mut |dg| got.push(dg.data.to_vec()))
                .unwrap();
        }
        got.sort();
        assert!(
            got == payloads,
            "{kind}: {} of {} after {polls} polls",
            got.len(),
            payloads.len()
        );
    }
}

#[test]
fn nowait_polling_sees_datagrams_sent_by_another_thread() {
    for kind in KINDS {
        let mut b = open(kind, &socket_cfg());
        let dst = b.local_addr();
        // Arm (io_uring submits its multishot receive on the first pass).
        b.recv_batch(Wait::NoWait, &mut |_| {}).unwrap();
        let sender = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..50u32 {
                s.send_to(&payload(i, 64), dst).unwrap();
            }
        });
        let mut got = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Spin without blocking and without other syscalls in this thread.
        while got < 50 && std::time::Instant::now() < deadline {
            got += b.recv_batch(Wait::NoWait, &mut |_| {}).unwrap().datagrams;
        }
        sender.join().unwrap();
        assert_eq!(got, 50, "{kind}");
    }
}

#[test]
fn a_waker_ends_every_drivers_wait_from_another_thread() {
    for kind in KINDS {
        let mut d = open(kind, &socket_cfg());
        let waker = std::sync::Arc::new(intentra_udp::Waker::new().unwrap());
        d.set_waker(Some(waker.clone()));
        // Woken before the wait: the wait returns at once.
        waker.wake();
        let stats = d.recv_batch(Wait::Forever, &mut |_| {}).unwrap();
        assert!(stats.woken, "{kind}: {stats:?}");
        waker.reset(true);
        // Woken during the wait, from another thread.
        let w = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        let stats = d
            .recv_batch(Wait::Timeout(Duration::from_secs(10)), &mut |_| {})
            .unwrap();
        t.join().unwrap();
        assert!(stats.woken, "{kind}: {stats:?}");
        waker.reset(true);
        // Reset: the next wait times out unwoken.
        let stats = d
            .recv_batch(Wait::Timeout(Duration::from_millis(5)), &mut |_| {})
            .unwrap();
        assert!(!stats.woken, "{kind}: {stats:?}");
    }
}

/// A wake that lands between two waits, and whose completion the driver has already taken
/// when the next wait begins, still ends that wait. (io_uring's one-shot poll once consumed
/// its completion and then slept to the timeout with nothing armed: a lost wake-up, and the
/// loop stalled with commands queued.) The proof is an ordering, not a clock: a datagram
/// sent only if the wait is still going 10 s later must not be what ends it.
#[test]
fn a_wake_between_waits_ends_the_next_wait() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for kind in KINDS {
        let mut d = open(kind, &socket_cfg());
        let waker = Arc::new(intentra_udp::Waker::new().unwrap());
        d.set_waker(Some(waker.clone()));
        // Arms (io_uring: submits the poll), sees nothing.
        let stats = d.recv_batch(Wait::NoWait, &mut |_| {}).unwrap();
        assert!(!stats.woken, "{kind}: {stats:?}");
        waker.wake();
        // Any syscall lets the kernel post the poll's completion now, before the wait.
        std::thread::sleep(Duration::from_millis(5));
        let returned = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let returned = returned.clone();
            let to = d.local_addr();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if returned.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let s = std::net::UdpSocket::bind(loopback()).unwrap();
                let _ = s.send_to(b"the wait was still going", to);
            })
        };
        let stats = d
            .recv_batch(Wait::Timeout(Duration::from_secs(60)), &mut |_| {})
            .unwrap();
        returned.store(true, Ordering::SeqCst);
        watchdog.join().unwrap();
        assert!(stats.woken, "{kind}: {stats:?}");
        assert_eq!(stats.datagrams, 0, "{kind}: the wake was lost: {stats:?}");
    }
}
/// Receives with a callback that pauses after every `every`-th datagram, until `expect`
/// arrived or 5 s passed. Returns the payloads in arrival order, each call's count, and
/// the GRO buffers seen.
fn recv_pausing(
    d: &mut dyn Driver,
    expect: usize,
    every: usize,
) -> (Vec<Vec<u8>>, Vec<usize>, usize) {
    let mut got = Vec::new();
    let mut per_call = Vec::new();
    let mut gro_buffers = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for _ in 0..10_000 {
        if got.len() >= expect || std::time::Instant::now() > deadline {
            break;
        }
        let stats = d
            .recv_until(Wait::Timeout(Duration::from_millis(50)), &mut |dg| {
                got.push(dg.data.to_vec());
                if got.len() % every == 0 {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            })
            .unwrap();
        if stats.datagrams > 0 {
            per_call.push(stats.datagrams);
        }
        gro_buffers += stats.gro_buffers;
    }
    (got, per_call, gro_buffers)
}

/// A pause stops the hand-over at once; the rest of what was already read (whole
/// datagrams, and the segments left in a GRO buffer) comes next call, in order, none lost
/// and none twice.
#[test]
fn a_paused_batch_resumes_in_order_with_nothing_lost() {
    for (kind, gro) in KINDS.iter().flat_map(|&k| [(k, false), (k, true)]) {
        let mut tx = socket_cfg();
        tx.gso = true;
        let mut rx = socket_cfg();
        rx.gro = gro;
        let mut a = open(DriverKind::Mmsg, &tx);
        let mut b = open(kind, &rx);
        // GSO runs (coalesced again on a GRO socket) and single datagrams, twice over.
        let mut payloads = gso_payloads();
        payloads.extend(mixed_payloads(40).into_iter().map(|mut p| {
            p[3] = 0xee;
            p
        }));
        payloads.extend(gso_payloads().into_iter().map(|mut p| {
            p[3] = 0xdd;
            p
        }));
        let sent = send_all(a.as_mut(), b.local_addr(), &payloads);
        assert_eq!(sent.dropped(), 0);
        for every in [1, 3, 7] {
            let (got, per_call, gro_buffers) = recv_pausing(b.as_mut(), payloads.len(), every);
            // Loopback hands a GSO run to a GRO socket coalesced: pauses land inside it.
            assert_eq!(
                gro_buffers > 0,
                gro && kind != DriverKind::Basic,
                "{kind} gro={gro}"
            );
            // One sender to one socket over loopback keeps its order.
            assert!(
                got == payloads,
                "{kind} gro={gro} every={every}: {} of {} in order",
                got.iter()
                    .zip(&payloads)
                    .take_while(|(g, p)| g == p)
                    .count(),
                payloads.len()
            );
            assert!(
                per_call.iter().all(|&n| n <= every),
                "{kind} gro={gro} every={every}: a pause was overrun: {per_call:?}"
            );
            if every < 7 {
                send_all(a.as_mut(), b.local_addr(), &payloads);
            }
        }
    }
}

/// Every driver's look-ahead is the truth: whenever a datagram says what the next one (or the
/// one after) starts with, the datagram handed over next (or after) starts with exactly that
/// (across GRO segments, across messages of one batch, and across a pause); and the batched
/// drivers do look ahead, both one and two datagrams.
#[test]
fn the_next_header_is_the_next_datagrams() {
    for kind in KINDS {
        let mut a = open(kind, &socket_cfg());
        let mut b = open(kind, &socket_cfg());
        // Runs of equal sizes (GRO segments) and odd ones out (separate messages), and a
        // datagram shorter than the header (zero-padded).
        let mut payloads = gso_payloads();
        payloads.extend(mixed_payloads(40));
        payloads.push(vec![0xAB; 3]);
        send_all(a.as_mut(), b.local_addr(), &payloads);
        type Ahead = [Option<intentra_udp::NextHeader>; 2];
        let mut seen: Vec<(Vec<u8>, Ahead)> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut calls = 0;
        while seen.len() < payloads.len() && std::time::Instant::now() < deadline {
            calls += 1;
            // Pausing now and then: the look-ahead must hold across a resumed batch too.
            let pause_every = 7;
            b.recv_until(Wait::Timeout(Duration::from_millis(50)), &mut |dg| {
                assert!(dg.next_header.is_some() || dg.later_header.is_none());
                seen.push((dg.data.to_vec(), [dg.next_header, dg.later_header]));
                if seen.len() % pause_every == 0 {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            })
            .unwrap();
        }
        assert_eq!(seen.len(), payloads.len(), "{kind}: after {calls} calls");
        let mut ahead = 0;
        let mut later = 0;
        for (at, (_, [next, after])) in seen.iter().enumerate() {
            if let Some(header) = next {
                ahead += 1;
                assert_eq!(
                    Some(*header),
                    seen.get(at + 1)
                        .map(|(data, _)| intentra_udp::header_of(data)),
                    "{kind}: a look-ahead that is not the next datagram's start"
                );
            }
            if let Some(header) = after {
                later += 1;
                assert_eq!(
                    Some(*header),
                    seen.get(at + 2)
                        .map(|(data, _)| intentra_udp::header_of(data)),
                    "{kind}: a look-ahead that is not the start of the datagram after next"
                );
            }
        }
        if kind != DriverKind::Basic {
            assert!(
                ahead > payloads.len() / 2,
                "{kind}: looked ahead only {ahead} times"
            );
            assert!(
                later > payloads.len() / 3,
                "{kind}: looked two ahead only {later} times"
            );
        } else {
            assert_eq!(later, 0);
        }
    }
}
