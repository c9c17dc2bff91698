//! Reliable delivery for one peer: in order, exactly once, retransmitted with selective ACKs.
//!
//! Owns the sequence space, the retransmission queue and timers (RFC 6298 RTO with
//! Karn's rule, exponential backoff, SACK-driven fast retransmit) of a
//! `ReliableSender`, and the reorder buffer and ACK contents of a `ReliableReceiver`.
//! It is sans-IO and must never read a clock (every instant is a `Timestamp`
//! argument), never build, seal or send packets, never decide when ACKs go out
//! (that is the endpoint's policy), never allocate beyond its bounds and never panic
//! on anything a peer sends: ACKs and segments are authenticated but may still be
//! buggy or malicious.
//!
//! Split by concern: `send` (the sender), `recv` (the receiver), `storage` (the
//! byte arenas both keep payloads in) and `rtt` (the RFC 6298 estimator).
//!
//! Storage per peer and direction: slots indexed by sequence number (`ring::SeqRing`:
//! 64 at first, doubling up to `MAX_IN_FLIGHT` when a stream keeps more in flight), and
//! a byte arena (`storage::Arena`) that starts empty and grows as payloads arrive, up to 1.5 times the bytes it may hold live: the
//! sender's `max_queued_bytes`, the receiver's twice that (one window out of order
//! plus one in order waiting for the application). Payloads are appended at the
//! arena's tail; when the tail is too short the arena doubles if it is more than
//! half live, else slides the live payloads to the front (a bounded `copy_within`).
//! Grown storage is kept, so the steady state allocates nothing.
//!
//! The segment window is wide (1,024) because small messages are the norm: 64 in
//! flight, the first design's limit, carried 100,000 messages/s of 128 bytes only
//! on paths under 0.64 ms of round trip, and 640 messages/s across a 100 ms WAN.

use core::time::Duration;

use crate::time::Timestamp;
use crate::wire::MAX_RELIABLE_PAYLOAD;

#[cfg(any(test, feature = "sim"))]
pub mod fuzz;
mod recv;
mod ring;
mod rtt;
mod send;
mod storage;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

pub use recv::{Receive, ReliableReceiver};
#[allow(unused_imports)]
pub use send::{AckError, AckOutcome, PushError, Pushed, ReliableSender, Segment};

/// At most this many segments unacknowledged: the span an ACK's selective bitmap can
/// describe (`wire::ACK_SELECTIVE_BITS`).
///
/// The sender counts the span from its oldest unacknowledged segment to its next
/// sequence number, not just the live segments: every sequence number it may send
/// then lies within the receiver's window `next_expected + 1024`, whatever was lost.
pub const MAX_IN_FLIGHT: usize = crate::wire::ACK_SELECTIVE_BITS;

/// `MAX_IN_FLIGHT` in sequence-number arithmetic.
const WINDOW: u64 = MAX_IN_FLIGHT as u64;

/// The default byte bound: 128 KiB, a window fit for real paths. 1000 Hz of 512-byte
/// updates over a 100 ms RTT, plus the 10 ms an ACK may wait, need 55 KiB in flight;
/// 100,000 messages/s of 128 B over a 2 ms RTT with 1% loss each way need more than
/// 64 KiB while losses are repaired (on the virtual clock, `examples/reliable_path.rs`:
/// 64 KiB refused 0.8–1.0% of them, 128 KiB none). 128 KiB is also exactly the
/// `MAX_IN_FLIGHT` sequence numbers of 128-byte messages, and room for 92 messages of the
/// maximum payload. Storage grows with use, so an idle or slow stream costs less.
pub const DEFAULT_QUEUE_BYTES: usize = 128 * 1024;

/// The largest useful byte bound: `MAX_IN_FLIGHT` messages of the maximum payload.
/// More could never be in flight, so a larger configured bound is treated as this.
pub const MAX_QUEUE_BYTES: usize = MAX_IN_FLIGHT * MAX_RELIABLE_PAYLOAD;

/// The longest a receiver may hold an ACK for in-order data after the first arrival it
/// covers (PROTOCOL.md 15), and what every sender's RTO allows for: a timer that could
/// fire before a delayed ACK arrives would retransmit what was received (RFC 9002's
/// `max_ack_delay`, fixed by the protocol instead of negotiated).
///
/// 10 ms: at the 200–1,000 Hz a stream runs at, one ACK then covers 2 to 10 messages
/// instead of each message earning its own, and on loopback an ACK's kernel cost is
/// three times a message's. Losses are still reported at once (a segment above a hole
/// makes the ACK urgent), so only a lone lost last segment waits for the longer RTO
/// (15 ms instead of 5 on a fast path).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(10);

/// The default `ReliableConfig::ack_after_segments`.
pub const DEFAULT_ACK_AFTER_SEGMENTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Bytes of unacknowledged payload a sender may hold, and bytes of out-of-order
    /// payload a receiver may buffer. Default `DEFAULT_QUEUE_BYTES` (128 KiB); at most
    /// `MAX_QUEUE_BYTES` is used. Any value is valid: 512 suits a memory-constrained
    /// peer, whose messages must then each fit in 512 bytes.
    ///
    /// The sender counts every payload from its oldest unacknowledged segment on,
    /// selectively acknowledged ones included (see `ReliableSender::queued_bytes`), so
    /// a receiver with the same bound never refuses a segment for lack of room.
    pub max_queued_bytes: usize,
    /// The RTO before the first RTT sample. Default 50 ms.
    pub initial_rto: Duration,
    /// Lower clamp of the path's part of the RTO (SRTT + 4 RTTVAR), before the peer's
    /// `MAX_ACK_DELAY` is added on top: the margin for timer and scheduling jitter.
    /// Default 5 ms, so the RTO is at least 15 ms once an RTT is measured. Treated as at
    /// least 1 ns so a retransmitted segment is never due again at the same instant.
    pub min_rto: Duration,
    /// Upper clamp of the RTO and of every backoff. Default 1 s. Treated as at least `min_rto`.
    pub max_rto: Duration,
    /// How long the receiver's ACK for in-order data may wait to cover more
    /// (`ReliableReceiver::ack_deadline`). Default and upper bound `MAX_ACK_DELAY`
    /// (10 ms; a larger value is treated as it), which every sender's RTO allows for;
    /// a smaller one costs more ACKs, not latency: data is delivered on arrival, and
    /// out-of-order data is acknowledged at once. The deadline is rounded down to a
    /// quarter of the delay, so that many peers' ACKs leave together.
    pub ack_delay: Duration,
    /// In-order segments that make a pending ACK due at once, whatever `ack_delay`
    /// says (TCP's "every second segment", scaled to batches). Default 16, a small
    /// fraction of the 1,024-segment window, so a fast sender hears back long before it
    /// runs out of sequence numbers; treated as at least 1.
    pub ack_after_segments: usize,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            max_queued_bytes: DEFAULT_QUEUE_BYTES,
            initial_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
            ack_delay: MAX_ACK_DELAY,
            ack_after_segments: DEFAULT_ACK_AFTER_SEGMENTS,
        }
    }
}

impl ReliableConfig {
    /// The byte bound in effect: `max_queued_bytes`, capped at `MAX_QUEUE_BYTES`.
    pub fn queue_bound(&self) -> usize {
        self.max_queued_bytes.min(MAX_QUEUE_BYTES)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn after(now: Timestamp, interval: u64) -> Timestamp {
    Timestamp::from_nanos(now.as_nanos().saturating_add(interval))
}
