//! Smart batching (PROTOCOL.md 7.5, `NodeConfig::bundling`) measured: one producer thread
//! sends 64-byte Realtime messages through a `Handle` to one peer over loopback, with
//! bundling off and on in the same run (alternating which goes first).
//!
//! - *Flat out*: the producer sends `messages` as fast as it can. Reported: delivered
//!   messages/s (at the receiver, until its count settles), datagrams/s, and the receiver
//!   loop's CPU per message and per datagram.
//! - *Paced*: 10,000 messages/s for `paced_seconds`, each carrying its send time; reported:
//!   one-way latency p50 and p99, producer to the receiver's callback.
//!
//! A benchmark, not a test; run it in release on an otherwise idle machine:
//!
//! ```text
//! cargo run --release -p intentra --example bundling_bench -- [messages] [runs] [paced_seconds]
//! ```
//!
//! `messages` 0 runs only the paced part. `BENCH_TX_DRIVER` and `BENCH_RX_DRIVER`
//! (`uring`, `mmsg`, `basic`) choose the sending and receiving node's driver; the paced table
//! counts messages over 10 ms, which only a stalled loop produces at this rate.
//!
//! CPU is the receiver thread's utime+stime from /proc/thread-self/stat (10 ms ticks).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intentra::proto::{EndpointConfig, Keypair, Mode, PeerId};
use intentra::{HandleError, Node, NodeConfig};

const SIZE: usize = 64;
const PACED_RATE: u64 = 10_000;

fn node(bundling: bool, var: &str) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng));
    config.rate_pps = u32::MAX;
    config.rate_burst = u32::MAX;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.socket.recv_buffer = Some(8 << 20);
    node_config.socket.send_buffer = Some(8 << 20);
    node_config.bundling = bundling;
    // BENCH_TX_DRIVER / BENCH_RX_DRIVER = uring | mmsg | basic (default: the node's).
    match std::env::var(var).as_deref() {
        Ok("uring") => node_config.driver = intentra::udp::DriverKind::Uring,
        Ok("mmsg") => node_config.driver = intentra::udp::DriverKind::Mmsg,
        Ok("basic") => node_config.driver = intentra::udp::DriverKind::Basic,
        _ => {}
    }
    Node::bind(node_config).unwrap()
}

/// This thread's CPU time so far (utime + stime), in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn pair(bundling: bool) -> (Node, Node, PeerId) {
    let mut a = node(bundling, "BENCH_TX_DRIVER");
    let mut b = node(true, "BENCH_RX_DRIVER");
    let peer = a.connect(b.local_addr(), b.public_key()).unwrap();
    for _ in 0..5_000 {
        if a.peer_info(peer).is_some_and(|p| p.established) && !b.peers().is_empty() {
            break;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }
    assert!(a.peer_info(peer).is_some_and(|p| p.established));
    (a, b, peer)
}

/// What the receiver counted.
#[derive(Default)]
struct Received {
    messages: AtomicU64,
    datagrams: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
}

struct Running {
    received: Arc<Received>,
    stop: intentra::ShutdownHandle,
    thread: std::thread::JoinHandle<f64>,
}

/// Runs `b` on its own thread; its thread CPU comes back when it stops.
fn receive(mut b: Node, base: Instant, timed: bool) -> Running {
    let received = Arc::new(Received::default());
    let counts = received.clone();
    b.on_message(move |_, _, bytes| {
        counts.messages.fetch_add(1, Ordering::Relaxed);
        if timed {
            if let Some(sent) = bytes.get(..8).and_then(|b| b.try_into().ok()) {
                let sent = u64::from_le_bytes(sent);
                let now = base.elapsed().as_nanos() as u64;
                if let Ok(mut l) = counts.latencies_ns.lock() {
                    l.push(now.saturating_sub(sent));
                }
            }
        }
    });
    let counts = received.clone();
    b.every(Duration::from_millis(1), move |ctx| {
        counts
            .datagrams
            .store(ctx.stats().packets_received, Ordering::Relaxed);
    });
    let stop = b.shutdown_handle();
    let thread = std::thread::spawn(move || {
        let cpu = thread_cpu();
        b.run_for(Duration::from_secs(300)).unwrap();
        thread_cpu() - cpu
    });
    Running {
        received,
        stop,
        thread,
    }
}

struct FlatOut {
    messages_per_s: f64,
    datagrams_per_s: f64,
    cpu_ns_per_message: f64,
    cpu_ns_per_datagram: f64,
    delivered: u64,
}

fn flat_out(bundling: bool, n: u64) -> FlatOut {
    let (mut a, b, peer) = pair(bundling);
    let base = Instant::now();
    let rx = receive(b, base, false);
    let handle = a.handle();
    let a_stop = a.shutdown_handle();
    let a_thread = std::thread::spawn(move || a.run_for(Duration::from_secs(300)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let datagrams_before = rx.received.datagrams.load(Ordering::Relaxed);
    let payload = [0x33u8; SIZE];
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        match handle.send(peer, Mode::Realtime, &payload) {
            Ok(()) => sent += 1,
            Err(HandleError::QueueFull(_)) => std::thread::yield_now(),
            Err(err) => panic!("{err}"),
        }
    }
    // Until the receiver's count stops moving for 20 ms (or every message arrived).
    let mut last = (rx.received.messages.load(Ordering::Relaxed), Instant::now());
    let end = loop {
        std::thread::sleep(Duration::from_millis(1));
        let now = rx.received.messages.load(Ordering::Relaxed);
        if now >= n {
            break Instant::now();
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(20) {
            break last.1;
        }
    };
    let elapsed = end.duration_since(start).as_secs_f64();
    std::thread::sleep(Duration::from_millis(5));
    let delivered = rx.received.messages.load(Ordering::Relaxed);
    let datagrams = rx
        .received
        .datagrams
        .load(Ordering::Relaxed)
        .saturating_sub(datagrams_before);
    a_stop.shutdown();
    handle.wake();
    a_thread.join().unwrap();
    rx.stop.shutdown();
    let cpu = rx.thread.join().unwrap();
    FlatOut {
        messages_per_s: delivered as f64 / elapsed,
        datagrams_per_s: datagrams as f64 / elapsed,
        cpu_ns_per_message: cpu * 1e9 / delivered.max(1) as f64,
        cpu_ns_per_datagram: cpu * 1e9 / datagrams.max(1) as f64,
        delivered,
    }
}

struct Paced {
    p50_us: f64,
    p99_us: f64,
    max_ms: f64,
    /// Messages that took over 10 ms: a stall of the loop, not a slow path.
    over_10ms: u64,
    delivered: u64,
    sent: u64,
}

fn paced(bundling: bool, seconds: f64) -> Paced {
    let (mut a, b, peer) = pair(bundling);
    let base = Instant::now();
    let rx = receive(b, base, true);
    if let Ok(mut l) = rx.received.latencies_ns.lock() {
        l.reserve((seconds * PACED_RATE as f64) as usize + 1024);
    }
    let handle = a.handle();
    let a_stop = a.shutdown_handle();
    let a_thread = std::thread::spawn(move || a.run_for(Duration::from_secs(300)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let total = (seconds * PACED_RATE as f64) as u64;
    let interval = Duration::from_nanos(1_000_000_000 / PACED_RATE);
    let start = Instant::now();
    let mut payload = [0x44u8; SIZE];
    for i in 0..total {
        // Sleep, not spin: on a small host a spinning producer would take the core the
        // loops need and measure the scheduler instead.
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let stamp = base.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        while let Err(HandleError::QueueFull(_)) = handle.send(peer, Mode::Realtime, &payload) {
            std::thread::yield_now();
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    a_stop.shutdown();
    handle.wake();
    a_thread.join().unwrap();
    rx.stop.shutdown();
    let _ = rx.thread.join();
    let mut latencies = rx
        .received
        .latencies_ns
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let over_10ms = latencies.iter().filter(|&&ns| ns > 10_000_000).count() as u64;
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, |&ns| ns as f64 / 1_000.0)
    };
    Paced {
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_ms: latencies.last().map_or(0.0, |&ns| ns as f64 / 1e6),
        over_10ms,
        delivered: latencies.len() as u64,
        sent: total,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2.0);
    println!(
        "{SIZE}-byte Realtime messages from one producer thread through a Handle to one peer; \
         bundling off and on in each run, alternating which goes first"
    );
    if n > 0 {
        flat_out_table(n, runs);
    }
    paced_table(runs, seconds);
}

fn flat_out_table(n: u64, runs: usize) {
    println!();
    println!("Flat out, {n} messages:");
    println!("| run | bundling | delivered msg/s | datagrams/s | msgs per datagram | receiver CPU ns/msg | receiver CPU ns/datagram | delivered | on ÷ off msg/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in 1..=runs {
        // Alternate which goes first, so a drift in the host's load favours neither.
        let (off, on) = if run % 2 == 1 {
            let off = flat_out(false, n);
            (off, flat_out(true, n))
        } else {
            let on = flat_out(true, n);
            (flat_out(false, n), on)
        };
        for (label, r) in [("off", &off), ("on", &on)] {
            println!(
                "| {run} | {label} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {} of {n} | {} |",
                r.messages_per_s,
                r.datagrams_per_s,
                r.messages_per_s / r.datagrams_per_s.max(1.0),
                r.cpu_ns_per_message,
                r.cpu_ns_per_datagram,
                r.delivered,
                if label == "on" {
                    format!("{:.2}", on.messages_per_s / off.messages_per_s.max(1.0))
                } else {
                    String::new()
                }
            );
        }
    }
}

fn paced_table(runs: usize, seconds: f64) {
    println!();
    println!(
        "Paced, {PACED_RATE} messages/s for {seconds} s (one-way latency, producer to callback):"
    );
    println!(
        "| run | bundling | p50 µs | p99 µs | max ms | over 10 ms | delivered | on ÷ off p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for run in 1..=runs {
        let (off, on) = if run % 2 == 1 {
            let off = paced(false, seconds);
            (off, paced(true, seconds))
        } else {
            let on = paced(true, seconds);
            (paced(false, seconds), on)
        };
        for (label, r) in [("off", &off), ("on", &on)] {
            println!(
                "| {run} | {label} | {:.1} | {:.1} | {:.1} | {} | {} of {} | {} |",
                r.p50_us,
                r.p99_us,
                r.max_ms,
                r.over_10ms,
                r.delivered,
                r.sent,
                if label == "on" {
                    format!("{:.2}", on.p50_us / off.p50_us.max(0.001))
                } else {
                    String::new()
                }
            );
        }
    }
}
