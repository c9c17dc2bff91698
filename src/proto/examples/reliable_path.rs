//! Reliable over an impaired path on the virtual clock: what the protocol itself does at a
//! given rate, one-way delay and loss, with no CPU, scheduler or socket in the way. A
//! benchmark through real sockets on a small host measures the host as well; this measures
//! the protocol alone, so the two together tell which one limits a result.
//!
//! One sender sends 128-byte Reliable messages at a fixed rate, one datagram each, over a
//! link that delays every datagram by `delay_ms` and loses each with probability `loss`, in
//! both directions (data and ACKs). A message refused with `WouldBlock` is counted and not
//! retried, as intentra-bench's generator does. Latency is from the send to the delivery,
//! to within one send interval.
//!
//!     cargo run --release -p intentra-proto --features sim --example reliable_path -- \
//!         [rate=100000] [seconds=5] [loss=0.01] [delay_ms=1] [window_bytes=default] [seed=1]
//!
//! Prints one line of results.

use std::time::{Duration, Instant};

use intentra_proto::sim::{LinkConfig, Network, Record};
use intentra_proto::{Mode, SendError};

const SIZE: usize = 128;
/// Steps the network may take between two sends (far more than any interval needs).
const MAX_STEPS: usize = 1_000_000;
/// How long the path gets after the last send to deliver what is still in flight.
const DRAIN: Duration = Duration::from_secs(2);

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Delivery bookkeeping: order, duplicates and latency of what the receiver got.
#[derive(Default)]
struct Received {
    latencies_ns: Vec<u64>,
    next_number: u64,
    out_of_order: u64,
}

impl Received {
    /// Takes the receiver's new records, each delivered at `now_ns` (or just before).
    fn take(&mut self, records: &mut Vec<Record>, now_ns: u64) {
        for record in records.drain(..) {
            let Record::Message(_, Mode::Reliable, bytes) = record else {
                continue;
            };
            let field = |at: usize| {
                bytes
                    .get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(u64::MAX, u64::from_le_bytes)
            };
            let (stamp, number) = (field(0), field(8));
            if number != self.next_number {
                self.out_of_order += 1;
            }
            self.next_number = number.saturating_add(1);
            self.latencies_ns.push(now_ns.saturating_sub(stamp));
        }
    }
}

fn main() {
    let rate: u64 = arg(1, 100_000);
    let seconds: f64 = arg(2, 5.0);
    let loss: f64 = arg(3, 0.01);
    let delay_ms: f64 = arg(4, 1.0);
    let window: usize = arg(5, intentra_proto::DEFAULT_QUEUE_BYTES);
    let seed: u64 = arg(6, 1);

    let wall = Instant::now();
    let (mut net, peer, _) = Network::connected_pair(seed, |config| {
        config.reliable.max_queued_bytes = window;
        // The sender is the only source: its token bucket is not what is measured.
        config.rate_pps = u32::MAX;
        config.rate_burst = u32::MAX;
    });
    net.link = LinkConfig {
        loss_ppm: (loss * 1e6) as u32,
        latency: Duration::from_secs_f64(delay_ms / 1e3),
        ..LinkConfig::default()
    };
    let start = net.now;
    let interval_ns = 1_000_000_000 / rate.max(1);
    let total = (rate as f64 * seconds) as u64;
    let (mut sent, mut refused, mut failed) = (0u64, 0u64, 0u64);
    let mut received = Received::default();
    let mut payload = [0u8; SIZE];
    for number in 0..total {
        let due = start + Duration::from_nanos(number * interval_ns);
        net.run_for(due.saturating_since(net.now), MAX_STEPS);
        let now_ns = net.now.as_nanos();
        received.take(&mut net.nodes[1].records, now_ns);
        payload[..8].copy_from_slice(&now_ns.to_le_bytes());
        payload[8..16].copy_from_slice(&sent.to_le_bytes());
        match net.send(0, peer, Mode::Reliable, &payload) {
            Ok(()) => sent += 1,
            Err(SendError::WouldBlock) => refused += 1,
            Err(_) => failed += 1,
        }
    }
    let end = net.now + DRAIN;
    while net.now < end {
        net.run_for(Duration::from_micros(100), MAX_STEPS);
        let now_ns = net.now.as_nanos();
        received.take(&mut net.nodes[1].records, now_ns);
    }

    let delivered = received.latencies_ns.len() as u64;
    let mut latencies = received.latencies_ns;
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |&ns| ns as f64 / 1e6)
    };
    let stats = net.nodes[0].endpoint.stats();
    println!(
        "rate={rate}/s seconds={seconds} loss={loss} delay_ms={delay_ms} window={window} seed={seed} \
         offered={total} sent={sent} refused_would_block={refused} failed={failed} \
         delivered={delivered} out_of_order={} \
         latency_ms p50={:.2} p90={:.2} p99={:.2} p999={:.2} max={:.2} \
         retransmissions={} datagrams_lost={} wall_s={:.1}",
        received.out_of_order,
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        quantile(1.0),
        stats.reliable_retransmits,
        net.lost,
        wall.elapsed().as_secs_f64(),
    );
}
