//! The `--producer-thread` sender: one `intentra::Node` (its own loop thread), fed by one
//! producer thread through the node's `Handle`, to the bench's receiver as its one peer. This
//! is how an application embeds intentra, and the path smart batching (`NodeConfig::bundling`,
//! PROTOCOL.md 7.5) is on: messages the handle queued together leave in one datagram.
//!
//! Owns the node's setup and handshake, the producer's pacing (or flat out) and its send
//! timestamps (the shared clock, first 8 payload bytes, as the peers' generator writes them).
//! It must never run past the measurement window's end (the node's loop is bounded too) and
//! never send anywhere but the receiver on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use intentra::proto::wire;
use intentra::proto::{EndpointConfig, Keypair, Mode, PeerId, PublicKey};
use intentra::udp::raw as sys;
use intentra::udp::DriverKind;
use intentra::{Handle, HandleError, Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::load::{source_addr, LoadError, LoadResult};
use crate::Shared;

/// Longest sleep of a paced producer, so it notices the window's end.
const MAX_IDLE: Duration = Duration::from_millis(1);
/// A paced producer more than this far behind schedule skips the stale messages (as the
/// peers' generator does), so that offered load below target shows the producer's limit.
const MAX_BACKLOG: Duration = Duration::from_millis(50);
/// After the window, how long the node's loop gets to take what the producer queued.
const DRAIN: Duration = Duration::from_millis(200);
/// The node's loop runs at most this long past the window, whatever happens (waiting for
/// the last Reliable messages' acknowledgements included).
const LOOP_SLACK: Duration = Duration::from_secs(5);
/// Messages between two updates of the progress bar's count.
const PROGRESS_EVERY: u64 = 4096;
/// Socket buffers of the sending node (as the bundling example sets them).
const NODE_BUFFERS: usize = 8 << 20;

/// One `--producer-thread` run.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub receiver: SocketAddr,
    pub receiver_key: PublicKey,
    pub mode: Mode,
    /// Messages per second; 0 is flat out (as fast as the handle takes them).
    pub rate_hz: u32,
    pub size: usize,
    pub bundling: bool,
    /// The sending node's driver (`--io`, the same as the receiver's).
    pub driver: DriverKind,
    pub gso: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub handshake_timeout: Duration,
    /// Keepalive interval and idle timeout (`load::liveness`).
    pub liveness: (Duration, Duration),
}

/// Binds the node, handshakes with the receiver, then produces for warm-up plus duration.
pub fn run(config: ProducerConfig, shared: Arc<Shared>) -> Result<LoadResult, LoadError> {
    let mut node = bind(&config)?;
    let mut result = LoadResult {
        datagram_len: config.size + overhead(config.mode),
        gso_used: config.gso,
        sender_io: Some(match node.driver_note() {
            Some(note) => format!("driver:{} ({note})", node.driver_name()),
            None => format!("driver:{}", node.driver_name()),
        }),
        ..LoadResult::default()
    };
    let started = shared.now_ns();
    let peer = handshake(&mut node, &config)?;
    result.handshake = Duration::from_nanos(shared.now_ns().saturating_sub(started));
    result.peers_up = 1;
    shared.peers_up.store(1, Ordering::Relaxed);

    let handle = node.handle();
    let bound = config.warmup + config.duration + LOOP_SLACK;
    let finished = Arc::new(AtomicBool::new(false));
    let producer_finished = Arc::clone(&finished);
    let loop_shared = Arc::clone(&shared);
    // Once the producer is done, the loop goes on until every Reliable message it accepted
    // is acknowledged, so that the run's last messages (a loss, a host pause near the end)
    // are repaired as they would be in an application, not dropped with the node.
    let node_loop = thread::Builder::new()
        .name("bench-node".into())
        .spawn(move || {
            let mut cpu = WindowCpu::default();
            let outcome = node.run_until(bound, |n| {
                cpu.observe(&loop_shared);
                finished.load(Ordering::Acquire) && nothing_unacknowledged(n, peer)
            });
            (outcome, cpu.used())
        })
        .map_err(|_| LoadError::NodeThread)?;
    let produced = produce(&config, &shared, &handle, peer, &mut result);
    drain(&handle, produced.accepted);
    producer_finished.store(true, Ordering::Release);
    handle.wake();
    let (outcome, loop_cpu) = node_loop.join().map_err(|_| LoadError::NodeThread)?;
    outcome.map_err(LoadError::Node)?;
    result.loop_cpu = Some(loop_cpu);
    let failed = handle.stats().failed;
    // Sends the loop refused after the handle took them (a Reliable window and its deferred
    // queue full, above all) never left: the window's are taken off `sent`, as the peers'
    // generator never counts a send its endpoint refused. The loop publishes its counts per
    // batch, so the split at the window's start is as fine as one batch.
    let failed_in_window = failed.total().saturating_sub(produced.failed_before);
    result.sent = result.sent.saturating_sub(failed_in_window);
    result.send_would_block = failed.would_block;
    result.send_errors = failed.total().saturating_sub(failed.would_block);
    result.send_failed = failed_in_window;
    Ok(result)
}

/// The CPU time a thread used over the measurement window, read by that thread itself
/// (`RUSAGE_THREAD`) whenever it calls `observe`: the node's loop does so once a turn, so
/// each edge is as fine as one turn (a batch under load, at most the loop's 20 ms wait
/// when idle).
#[derive(Debug, Default)]
struct WindowCpu {
    start: Option<Duration>,
    end: Option<Duration>,
}

impl WindowCpu {
    fn observe(&mut self, shared: &Shared) {
        if self.end.is_some() {
            return;
        }
        let now = shared.now_ns();
        // Both edges stay at u64::MAX until the producer sets them.
        if self.start.is_none() && now >= shared.window_start.load(Ordering::Acquire) {
            self.start = Some(sys::thread_cpu_time());
        }
        if self.start.is_some() && now >= shared.window_end.load(Ordering::Acquire) {
            self.end = Some(sys::thread_cpu_time());
        }
    }

    /// The window's CPU time; up to now where the window's end was not observed (the loop
    /// stopped first), nothing where its start was not.
    fn used(&self) -> Duration {
        match self.start {
            Some(start) => self
                .end
                .unwrap_or_else(sys::thread_cpu_time)
                .saturating_sub(start),
            None => Duration::ZERO,
        }
    }
}

/// Whether the node holds no Reliable message for `peer` that is not yet acknowledged: none
/// waiting for room in its window, none sent and unacknowledged (always so for Realtime).
fn nothing_unacknowledged(node: &Node, peer: PeerId) -> bool {
    node.deferred() == 0
        && node
            .peer_info(peer)
            .is_none_or(|info| info.reliable_queued_bytes == 0)
}

/// Wire bytes intentra adds to one message sent alone.
fn overhead(mode: Mode) -> usize {
    match mode {
        Mode::Realtime => wire::TRANSPORT_OVERHEAD,
        Mode::Reliable => wire::TRANSPORT_OVERHEAD + wire::RELIABLE_SEQ_LEN,
    }
}

fn bind(config: &ProducerConfig) -> Result<Node, LoadError> {
    let keypair = Keypair::generate(&mut ChaCha20Rng::from_entropy());
    let mut endpoint = EndpointConfig::new(keypair);
    endpoint.max_peers = 1;
    // It receives only ACKs and keepalives: its own token bucket must never be the limit.
    endpoint.rate_pps = u32::MAX;
    endpoint.rate_burst = u32::MAX;
    (endpoint.keepalive_interval, endpoint.idle_timeout) = config.liveness;
    let addr = source_addr(0);
    let mut node_config = NodeConfig::new(addr, endpoint);
    node_config.driver = config.driver;
    node_config.bundling = config.bundling;
    node_config.socket.recv_buffer = Some(NODE_BUFFERS);
    node_config.socket.send_buffer = Some(NODE_BUFFERS);
    node_config.socket.gso = config.gso;
    Node::bind(node_config).map_err(|e| LoadError::Bind(addr, e))
}

/// Connects to the receiver and turns the node's loop here until the session is up.
fn handshake(node: &mut Node, config: &ProducerConfig) -> Result<PeerId, LoadError> {
    let peer = node
        .connect(config.receiver, config.receiver_key)
        .map_err(|_| LoadError::NoPeersUp)?;
    let up = node
        .run_until(config.handshake_timeout, |n| {
            n.peer_info(peer).is_some_and(|p| p.established)
        })
        .map_err(LoadError::Node)?;
    if up {
        Ok(peer)
    } else {
        Err(LoadError::NoPeersUp)
    }
}

/// What `produce` leaves for `run` to settle.
struct Produced {
    /// Every message the handle took, warm-up included.
    accepted: u64,
    /// The loop's failed sends (`HandleStats::failed`) as the window began.
    failed_before: u64,
}

/// Sends stamped messages through `handle` until the window ends, paced at `rate_hz` or flat
/// out. Counts the window's messages the handle took in `result.sent`.
fn produce(
    config: &ProducerConfig,
    shared: &Shared,
    handle: &Handle,
    peer: PeerId,
    result: &mut LoadResult,
) -> Produced {
    let t0 = shared.now_ns();
    let start = t0.saturating_add(config.warmup.as_nanos() as u64);
    let end = start.saturating_add(config.duration.as_nanos() as u64);
    shared.window_end.store(end, Ordering::Release);
    shared.window_start.store(start, Ordering::Release);
    let mut payload: Vec<u8> = (0..config.size).map(|i| i as u8).collect();
    let rate = u64::from(config.rate_hz);
    let max_backlog = (rate * MAX_BACKLOG.as_micros() as u64 / 1_000_000).max(1);
    let mut cpu_start = None;
    let mut failed_before = 0;
    let mut accepted = 0u64;
    loop {
        let now = shared.now_ns();
        if now >= end {
            break;
        }
        if cpu_start.is_none() && now >= start {
            cpu_start = Some(sys::thread_cpu_time());
            failed_before = handle.stats().failed.total();
        }
        if rate > 0 {
            let due = due(now - t0, rate);
            if due.saturating_sub(accepted) > max_backlog {
                result.skipped += due - accepted - max_backlog;
                accepted = due - max_backlog;
            }
            if accepted >= due {
                // Message number `accepted` (from 0) is due once `accepted + 1` are.
                pace(shared, t0, accepted + 1, rate, end);
                continue;
            }
        }
        // `now` was read since the last wait: no second clock read per message.
        let stamp = now;
        if let Some(head) = payload.get_mut(..8) {
            head.copy_from_slice(&stamp.to_le_bytes());
        }
        // A full queue is back-pressure: the producer sleeps until the loop takes the queue
        // (spinning would take the CPU the loop needs to drain it), and the message keeps
        // its first stamp, so the wait shows in latency, not as loss.
        let outcome = match handle.send(peer, config.mode, &payload) {
            Err(HandleError::QueueFull(_)) => {
                result.queue_full += 1;
                let left = Duration::from_nanos(end.saturating_sub(shared.now_ns()));
                handle.send_wait(peer, config.mode, &payload, left)
            }
            sent => sent,
        };
        match outcome {
            Ok(()) => {
                accepted += 1;
                if stamp >= start {
                    result.sent += 1;
                    // For the progress bar: its cache line is the one the receiver reads the
                    // window from, so not once per message.
                    if result.sent % PROGRESS_EVERY == 0 {
                        shared.sent.store(result.sent, Ordering::Relaxed);
                    }
                }
            }
            // The window ended while waiting.
            Err(HandleError::QueueFull(_)) => {}
            // The node is gone (its loop failed): `run` reports the loop's error.
            Err(HandleError::Closed) => break,
            Err(_) => {
                accepted += 1;
                result.send_errors += 1;
            }
        }
    }
    shared.sent.store(result.sent, Ordering::Relaxed);
    result.cpu = cpu_start.map_or(Duration::ZERO, |c| sys::thread_cpu_time().saturating_sub(c));
    Produced {
        accepted,
        failed_before,
    }
}

/// Messages due `elapsed_ns` after the start at `rate` per second.
fn due(elapsed_ns: u64, rate: u64) -> u64 {
    u64::try_from(u128::from(elapsed_ns) * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// Sleeps until `count` messages are due (at most `MAX_IDLE`, never past `end`). Sleeps, not
/// spins: on a small host a spinning producer would take the core the loops need.
fn pace(shared: &Shared, t0: u64, count: u64, rate: u64, end: u64) {
    let at = u128::from(count) * 1_000_000_000 / u128::from(rate.max(1));
    let at = t0.saturating_add(u64::try_from(at).unwrap_or(u64::MAX));
    let now = shared.now_ns();
    let wait = Duration::from_nanos(at.min(end).saturating_sub(now)).min(MAX_IDLE);
    if !wait.is_zero() {
        thread::sleep(wait);
    }
}

/// Waits (at most `DRAIN`) until the node's loop has taken all `accepted` commands, so that
/// messages stamped just before the window's end are sent, not dropped with the node.
fn drain(handle: &Handle, accepted: u64) {
    let deadline = std::time::Instant::now() + DRAIN;
    while handle.stats().commands < accepted && std::time::Instant::now() < deadline {
        handle.wake();
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts_whole_messages_at_the_rate() {
        assert_eq!(due(0, 10_000), 0);
        assert_eq!(due(99_999, 10_000), 0);
        assert_eq!(due(100_000, 10_000), 1);
        assert_eq!(due(1_000_000_000, 10_000), 10_000);
        assert_eq!(due(u64::MAX, u64::MAX), u64::MAX);
    }
}
