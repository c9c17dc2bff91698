//! Throughput of a `Handle` (messages/s from one producer thread to one peer) and the loop's
//! CPU per message, against the same messages sent from inside the loop (a tick callback).
//! A benchmark, not a test; run it in release on an otherwise idle machine:
//!
//! ```text
//! cargo run --release -p intentra --example handle_bench -- [messages] [runs]
//! ```
//!
//! Loop CPU is the loop thread's utime+stime from /proc/thread-self/stat (10 ms ticks), so
//! runs should last a second or more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::{Mode, PeerId};
use intentra::HandleError;
use intentra::{Node, NodeConfig};

fn node() -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng));
    config.rate_pps = u32::MAX;
    config.rate_burst = u32::MAX;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.socket.recv_buffer = Some(4 << 20);
    node_config.socket.send_buffer = Some(4 << 20);
    Node::bind(node_config).unwrap()
}

/// This thread's CPU time so far (utime + stime), in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
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

struct Run {
    messages_per_s: f64,
    loop_cpu_ns_per_msg: f64,
    delivered: u64,
    /// Messages per loop batch (Handle: per command-queue take; loop: per tick).
    per_batch: f64,
}

fn pair() -> (Node, Node, PeerId) {
    let mut a = node();
    let mut b = node();
    let peer = a.connect(b.local_addr(), b.public_key()).unwrap();
    for _ in 0..5_000 {
        if a.peer_info(peer).is_some_and(|p| p.established) && !b.peers().is_empty() {
            break;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }
    (a, b, peer)
}

fn receiver(
    mut b: Node,
) -> (
    Arc<AtomicU64>,
    intentra::ShutdownHandle,
    std::thread::JoinHandle<()>,
) {
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    b.on_message(move |_, _, _| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let stop = b.shutdown_handle();
    let t = std::thread::spawn(move || b.run_for(Duration::from_secs(120)).unwrap());
    (delivered, stop, t)
}

/// One producer thread through a Handle.
fn through_handle(n: u64, size: usize) -> Run {
    let (mut a, b, peer) = pair();
    let (delivered, b_stop, b_thread) = receiver(b);
    let handle = a.handle();
    let a_stop = a.shutdown_handle();
    let a_thread = std::thread::spawn(move || {
        let cpu = thread_cpu();
        a.run_for(Duration::from_secs(120)).unwrap();
        (thread_cpu() - cpu, a)
    });
    let payload = vec![0x33u8; size];
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        match handle.send(peer, Mode::Realtime, &payload) {
            Ok(()) => sent += 1,
            Err(HandleError::QueueFull(_)) => std::thread::yield_now(),
            Err(err) => panic!("{err}"),
        }
    }
    while handle.stats().sent + handle.stats().failed.total() < n {
        std::thread::yield_now();
    }
    let elapsed = start.elapsed();
    let stats = handle.stats();
    a_stop.shutdown();
    handle.wake();
    let (cpu, _a) = a_thread.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    b_stop.shutdown();
    b_thread.join().unwrap();
    Run {
        messages_per_s: n as f64 / elapsed.as_secs_f64(),
        loop_cpu_ns_per_msg: cpu * 1e9 / n as f64,
        delivered: delivered.load(Ordering::Relaxed),
        per_batch: stats.commands as f64 / stats.batches.max(1) as f64,
    }
}

/// The same messages sent by a tick callback inside the loop, 64 per turn.
fn inside_loop(n: u64, size: usize) -> Run {
    let (mut a, b, peer) = pair();
    let (delivered, b_stop, b_thread) = receiver(b);
    let payload = vec![0x33u8; size];
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    a.every(Duration::ZERO, move |ctx| {
        for _ in 0..64 {
            if count.load(Ordering::Relaxed) >= n {
                return;
            }
            if ctx.send(peer, Mode::Realtime, &payload).is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let a_stop = a.shutdown_handle();
    let start = Instant::now();
    let done = sent.clone();
    let a_thread = std::thread::spawn(move || {
        let cpu = thread_cpu();
        let finished = a
            .run_until(Duration::from_secs(120), |_| {
                done.load(Ordering::Relaxed) >= n
            })
            .unwrap();
        assert!(finished);
        (thread_cpu() - cpu, start.elapsed())
    });
    let (cpu, elapsed) = a_thread.join().unwrap();
    a_stop.shutdown();
    std::thread::sleep(Duration::from_millis(50));
    b_stop.shutdown();
    b_thread.join().unwrap();
    Run {
        messages_per_s: n as f64 / elapsed.as_secs_f64(),
        loop_cpu_ns_per_msg: cpu * 1e9 / n as f64,
        delivered: delivered.load(Ordering::Relaxed),
        per_batch: 64.0,
    }
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    format!("{median:.0} (min {min:.0}, max {max:.0})")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("{n} Realtime messages per run, {runs} runs; median (min, max)");
    println!("| path | size | messages/s | loop CPU ns/message | messages per loop batch | delivered (last run) |");
    println!("|---|---|---|---|---|---|");
    for size in [64usize, 128] {
        for (name, f) in [
            (
                "Handle, one producer thread",
                through_handle as fn(u64, usize) -> Run,
            ),
            ("inside the loop (tick)", inside_loop),
        ] {
            let results: Vec<Run> = (0..runs).map(|_| f(n, size)).collect();
            let rate: Vec<f64> = results.iter().map(|r| r.messages_per_s).collect();
            let cpu: Vec<f64> = results.iter().map(|r| r.loop_cpu_ns_per_msg).collect();
            let delivered = results.last().map_or(0, |r| r.delivered);
            let batch: Vec<f64> = results.iter().map(|r| r.per_batch).collect();
            println!(
                "| {name} | {size} B | {} | {} | {} | {delivered} of {n} |",
                spread(&rate),
                spread(&cpu),
                spread(&batch)
            );
        }
    }
}
