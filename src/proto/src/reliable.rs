//! Reliable delivery for one peer: in order, exactly once, retransmitted with selective ACKs.
//!
//! Owns the sequence space, the retransmission queue and timers (RFC 6298 RTO with
//! Karn's rule, exponential backoff, SACK-driven fast retransmit) of a
//! `ReliableSender`, and the reorder buffer and ACK contents of a `ReliableReceiver`.
//! It is sans-IO and must never read a clock (every instant is a `Timestamp`
//! argument), never build, seal or send packets, never decide when ACKs go out
//! (that is the endpoint's policy), never allocate after `new()` and never panic
//! on anything a peer sends: ACKs and segments are authenticated but may still be
//! buggy or malicious.
//!
//! Storage is fixed at construction: `MAX_IN_FLIGHT` slots indexed by
//! `seq % MAX_IN_FLIGHT` plus a byte arena of twice the configured byte bound.
//! The doubling buys amortised O(1) appends: payloads are appended at the arena's
//! tail, and only when the tail is too short are the live payloads slid to the
//! front (a bounded `copy_within`, at most `max_queued_bytes` bytes, at most once
//! per `max_queued_bytes` bytes appended).

use core::fmt;
use core::time::Duration;

use crate::time::Timestamp;
use crate::wire::Ack;

/// At most this many segments unacknowledged (the selective bitmap spans 64 beyond the cumulative point).
///
/// The sender counts the span from its oldest unacknowledged segment to its next
/// sequence number, not just the live segments: every sequence number it may send
/// then lies within the receiver's window `next_expected + 64`, whatever was lost.
pub const MAX_IN_FLIGHT: usize = 64;

/// `MAX_IN_FLIGHT` in sequence-number arithmetic.
const WINDOW: u64 = MAX_IN_FLIGHT as u64;

/// RFC 6298's K: RTO = SRTT + K * RTTVAR.
const RTTVAR_MULTIPLIER: u128 = 4;

/// Fast retransmit fires when an ACK shows this many segments above a missing one.
const FAST_RETRANSMIT_THRESHOLD: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Bytes of unacknowledged payload a sender may hold, and bytes of out-of-order payload a receiver may buffer. Default 512 (the original design's bound).
    ///
    /// The sender counts every payload from its oldest unacknowledged segment on,
    /// selectively acknowledged ones included (see `ReliableSender::queued_bytes`), so
    /// a receiver with the same bound never refuses a segment for lack of room.
    /// Each side preallocates twice this many bytes.
    pub max_queued_bytes: usize,
    /// The RTO before the first RTT sample. Default 50 ms.
    pub initial_rto: Duration,
    /// Lower clamp of the RTO. Default 5 ms. Treated as at least 1 ns so a
    /// retransmitted segment is never due again at the same instant.
    pub min_rto: Duration,
    /// Upper clamp of the RTO and of every backoff. Default 1 s. Treated as at least `min_rto`.
    pub max_rto: Duration,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            max_queued_bytes: 512,
            initial_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
        }
    }
}

/// The RTO clamp in nanoseconds, normalised so that `1 <= min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RtoBounds {
    min: u64,
    max: u64,
}

impl RtoBounds {
    fn from_config(config: &ReliableConfig) -> Self {
        let min = nanos(config.min_rto).max(1);
        RtoBounds {
            min,
            max: nanos(config.max_rto).max(min),
        }
    }

    fn clamp(self, value: u64) -> u64 {
        value.clamp(self.min, self.max)
    }

    /// One step of exponential backoff, capped.
    fn backoff(self, value: u64) -> u64 {
        self.clamp(value.saturating_mul(2))
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn narrow(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn after(now: Timestamp, interval: u64) -> Timestamp {
    Timestamp::from_nanos(now.as_nanos().saturating_add(interval))
}

/// The slot a sequence number lives in. In range for any `seq`.
fn slot_index(seq: u64) -> usize {
    // The remainder is < 64, so the cast is lossless.
    (seq % WINDOW) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// queue full now; try again after ACKs arrive
    WouldBlock,
    /// larger than max_queued_bytes: can never be sent
    TooLarge,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushError::WouldBlock => "reliable send queue full",
            PushError::TooLarge => "reliable payload larger than the send queue",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// acknowledges a sequence number that was never sent: forged or broken peer
    Invalid,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ACK covers a sequence number never sent")
    }
}

/// What one ACK changed on the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    pub newly_acked: u32,
    /// Payload bytes of the newly acknowledged segments, released from retransmission
    /// storage. Room for `push` (`queued_bytes`) only grows once the cumulative point
    /// passes them, as the receiver may still be buffering selectively acknowledged ones.
    pub bytes_freed: usize,
    /// Taken from the newest newly acknowledged segment that was never retransmitted.
    pub rtt_sample: Option<Duration>,
}

/// A segment to retransmit: the endpoint prefixes `seq` (u64 LE) and seals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// Where a payload lives in an `Arena`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    off: usize,
    len: usize,
}

impl Span {
    fn end(self) -> usize {
        self.off.saturating_add(self.len)
    }
}

/// A slot record that owns a span of an arena.
trait Spanned {
    fn span(&self) -> Span;
    fn span_mut(&mut self) -> &mut Span;
}

/// A fixed byte buffer holding at most `capacity / 2` live bytes (the owner enforces
/// that bound), appended at the tail and compacted on demand.
#[derive(Clone, PartialEq, Eq)]
struct Arena {
    buf: Box<[u8]>,
    /// One past the last byte ever appended since the last compaction or reset.
    tail: usize,
}

impl Arena {
    fn new(max_live: usize) -> Self {
        Arena {
            buf: vec![0u8; max_live.saturating_mul(2)].into_boxed_slice(),
            tail: 0,
        }
    }

    /// Copies `data` in and returns where it went. The caller guarantees that the live
    /// spans in `slots` plus `data` fit in half the arena, so compaction always makes
    /// room; `None` means that guarantee was broken and nothing was stored.
    fn store<T: Spanned>(&mut self, data: &[u8], slots: &mut [Option<T>]) -> Option<Span> {
        if self.buf.len().saturating_sub(self.tail) < data.len() {
            self.compact(slots);
        }
        let span = Span {
            off: self.tail,
            len: data.len(),
        };
        self.buf
            .get_mut(span.off..span.end())?
            .copy_from_slice(data);
        self.tail = span.end();
        Some(span)
    }

    fn get(&self, span: Span) -> &[u8] {
        // Spans are only ever made by `store` and moved by `compact`, both in bounds.
        self.buf.get(span.off..span.end()).unwrap_or(&[])
    }

    /// Forgets every byte: only valid once no slot holds a span. Avoids compactions
    /// in the common case where the queue drains completely between bursts.
    fn reset(&mut self) {
        self.tail = 0;
    }

    /// Slides every live span to the front, keeping their relative order, so the
    /// free space is one run at the tail.
    fn compact<T: Spanned>(&mut self, slots: &mut [Option<T>]) {
        let mut order = [0usize; MAX_IN_FLIGHT];
        let mut live = 0;
        for (index, slot) in slots.iter().enumerate() {
            if slot.is_some() {
                if let Some(entry) = order.get_mut(live) {
                    *entry = index;
                    live += 1;
                }
            }
        }
        let order = order.get_mut(..live).unwrap_or_default();
        // Moving spans in offset order means each one only ever moves down, onto
        // bytes already vacated, so no live byte is overwritten before it is moved.
        // `sort_unstable` sorts in place without allocating.
        order.sort_unstable_by_key(|&index| {
            slots
                .get(index)
                .and_then(Option::as_ref)
                .map_or(usize::MAX, |slot| slot.span().off)
        });
        let mut write = 0usize;
        for &index in order.iter() {
            let Some(Some(slot)) = slots.get_mut(index) else {
                continue;
            };
            let span = slot.span_mut();
            if span.end() > self.buf.len() || span.off < write {
                // Not reachable while the arena's invariants hold; dropping the
                // bytes beats a panic on the packet path.
                span.len = 0;
                span.off = write;
                continue;
            }
            self.buf.copy_within(span.off..span.end(), write);
            span.off = write;
            write += span.len;
        }
        self.tail = write;
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("capacity", &self.buf.len())
            .field("tail", &self.tail)
            .finish()
    }
}

/// One unacknowledged segment on the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    seq: u64,
    span: Span,
    /// When `push` was called: the RTT sample's start if never retransmitted.
    first_sent: Timestamp,
    /// The latest transmission of any kind.
    last_sent: Timestamp,
    /// When the retransmission timer of this segment fires.
    due: Timestamp,
    /// This segment's current timer interval in ns, doubled at every timeout.
    interval: u64,
    /// Karn: an ACK for a retransmitted segment cannot tell which copy it answers.
    retransmitted: bool,
    /// Set by SACK evidence; makes the segment due now without backoff.
    fast_pending: bool,
    /// When fast retransmit was last flagged, to allow it at most once per RTO.
    last_fast: Option<Timestamp>,
}

impl Spanned for Sent {
    fn span(&self) -> Span {
        self.span
    }
    fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl Sent {
    fn is_due(&self, now: Timestamp) -> bool {
        // `last_sent < now` only matters once `due` has saturated at NEVER: it keeps a
        // "call until None" loop finite even at the end of time.
        self.fast_pending || (self.due <= now && self.last_sent < now)
    }

    fn deadline(&self) -> Timestamp {
        match (self.fast_pending, self.last_fast) {
            (true, Some(flagged)) => flagged.min(self.due),
            _ => self.due,
        }
    }
}

/// The sending half of one peer's Reliable stream.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ReliableSender {
    bounds: RtoBounds,
    max_queued: usize,
    slots: [Option<Sent>; MAX_IN_FLIGHT],
    arena: Arena,
    /// The oldest unacknowledged sequence number, or `next_seq` if none is.
    base: u64,
    next_seq: u64,
    /// Payload length of every sequence number in `base..next_seq`, including those
    /// acknowledged selectively, whose slots are already `None`.
    window_lens: [usize; MAX_IN_FLIGHT],
    /// Sum of `window_lens`: the bytes counted against `max_queued_bytes`.
    ///
    /// Selectively acknowledged bytes stay counted until the cumulative point passes
    /// them because the receiver is still buffering them. Every sequence number below
    /// `base` has been delivered (the receiver's `next_expected` is never below the
    /// oldest segment it has not acknowledged), so its reorder buffer holds at most
    /// these bytes, and a receiver with the same bound never refuses one for room.
    queued: usize,
    /// Bytes of the segments still held for retransmission (`<= queued`).
    unacked: usize,
    in_flight: usize,
    srtt: Option<u64>,
    rttvar: u64,
    rto: u64,
}

impl fmt::Debug for ReliableSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableSender")
            .field("base", &self.base)
            .field("next_seq", &self.next_seq)
            .field("queued", &self.queued)
            .field("unacked", &self.unacked)
            .field("in_flight", &self.in_flight)
            .field("srtt", &self.srtt)
            .field("rttvar", &self.rttvar)
            .field("rto", &self.rto)
            .finish_non_exhaustive()
    }
}

impl ReliableSender {
    pub fn new(config: ReliableConfig) -> Self {
        let bounds = RtoBounds::from_config(&config);
        ReliableSender {
            bounds,
            max_queued: config.max_queued_bytes,
            slots: [None; MAX_IN_FLIGHT],
            arena: Arena::new(config.max_queued_bytes),
            base: 0,
            next_seq: 0,
            window_lens: [0; MAX_IN_FLIGHT],
            queued: 0,
            unacked: 0,
            in_flight: 0,
            srtt: None,
            rttvar: 0,
            rto: bounds.clamp(nanos(config.initial_rto)),
        }
    }

    /// Stores a copy of `payload` for retransmission and returns its sequence number (0, 1, 2, ...). The caller transmits the first copy itself right away.
    ///
    /// `WouldBlock` when `queued_bytes() + payload.len()` would exceed the byte bound
    /// or `MAX_IN_FLIGHT` sequence numbers lie between the oldest unacknowledged
    /// segment and the next one; nothing is stored then.
    pub fn push(&mut self, now: Timestamp, payload: &[u8]) -> Result<u64, PushError> {
        if payload.len() > self.max_queued {
            return Err(PushError::TooLarge);
        }
        let window_full = self.next_seq.saturating_sub(self.base) >= WINDOW;
        let bytes_full = payload.len() > self.max_queued.saturating_sub(self.queued);
        if window_full || bytes_full {
            return Err(PushError::WouldBlock);
        }
        let seq = self.next_seq;
        // u64::MAX is never assigned so `next_seq` cannot overflow; 2^64 pushes never happen.
        let next_seq = seq.checked_add(1).ok_or(PushError::WouldBlock)?;
        let span = self
            .arena
            .store(payload, &mut self.slots)
            .ok_or(PushError::WouldBlock)?;
        let index = slot_index(seq);
        let (Some(slot), Some(window_len)) =
            (self.slots.get_mut(index), self.window_lens.get_mut(index))
        else {
            return Err(PushError::WouldBlock);
        };
        *window_len = payload.len();
        // The window check above keeps live sequence numbers within 64 of each
        // other, so this slot's previous occupant has been acknowledged.
        *slot = Some(Sent {
            seq,
            span,
            first_sent: now,
            last_sent: now,
            due: after(now, self.rto),
            interval: self.rto,
            retransmitted: false,
            fast_pending: false,
            last_fast: None,
        });
        self.next_seq = next_seq;
        self.queued += payload.len();
        self.unacked += payload.len();
        self.in_flight += 1;
        Ok(seq)
    }

    /// Applies an authenticated ACK. Err(Invalid) (and no state change) if it covers any seq >= the next seq to be assigned. Frees acked segments (cumulative and selective), takes an RTT sample only from segments never retransmitted (Karn), updates SRTT/RTTVAR/RTO per RFC 6298 in integer nanoseconds clamped to [min_rto, max_rto]. Stale/duplicate ACKs are fine (Ok with zero newly acked). Fast retransmit: when an ACK shows >= 3 segments above an unacked one were received, that unacked segment becomes due immediately (at most once per RTO for that segment).
    pub fn on_ack(&mut self, now: Timestamp, ack: Ack) -> Result<AckOutcome, AckError> {
        if !self.could_have_sent(ack) {
            return Err(AckError::Invalid);
        }
        let mut outcome = AckOutcome::default();
        let mut sample_start = None;
        for seq in self.base..self.next_seq {
            let Some(slot) = self.slots.get_mut(slot_index(seq)) else {
                continue;
            };
            let Some(sent) = *slot else {
                continue;
            };
            if sent.seq != seq || !ack.covers(seq) {
                continue;
            }
            *slot = None;
            outcome.newly_acked += 1;
            outcome.bytes_freed += sent.span.len;
            if !sent.retransmitted {
                // Ascending order: the last one kept is the newest, whose ACK was
                // least likely delayed by the receiver waiting for more.
                sample_start = Some(sent.first_sent);
            }
        }
        self.unacked = self.unacked.saturating_sub(outcome.bytes_freed);
        self.in_flight = self.in_flight.saturating_sub(outcome.newly_acked as usize);
        self.advance_base();
        if let Some(start) = sample_start {
            let rtt = now.saturating_since(start);
            self.update_rto(nanos(rtt));
            outcome.rtt_sample = Some(rtt);
        }
        self.flag_fast_retransmits(now, ack);
        Ok(outcome)
    }

    /// The oldest unacknowledged segment that is due (RTO expired or fast-retransmit flagged), rescheduling it with exponential backoff (capped at max_rto). None if nothing is due. Call repeatedly until None.
    pub fn poll_retransmit(&mut self, now: Timestamp) -> Option<Segment<'_>> {
        let base = self.base;
        let index = (self.base..self.next_seq)
            .map(slot_index)
            .find(|&index| matches!(self.slots.get(index), Some(Some(sent)) if sent.is_due(now)))?;
        let sent = self.slots.get_mut(index)?.as_mut()?;
        if sent.fast_pending {
            // SACK evidence, not a timeout: the path is not necessarily slower, so no backoff.
            sent.fast_pending = false;
        } else {
            sent.interval = self.bounds.backoff(sent.interval);
            if sent.seq == base {
                // RFC 6298 5.5 backs off the connection's one timer, which tracks the
                // oldest segment. Doing it only for the oldest keeps one loss burst from
                // doubling the RTO once per lost segment, while still letting Karn's
                // backed-off RTO survive until a clean sample arrives.
                self.rto = self.bounds.backoff(self.rto);
            }
        }
        sent.retransmitted = true;
        sent.last_sent = now;
        sent.due = after(now, sent.interval);
        let (seq, span) = (sent.seq, sent.span);
        Some(Segment {
            seq,
            payload: self.arena.get(span),
        })
    }

    /// Earliest time a retransmission will be due, if anything is in flight.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.slots.iter().flatten().map(Sent::deadline).min()
    }

    /// Bytes counted against `max_queued_bytes`: every payload from the oldest
    /// unacknowledged segment on, including ones acknowledged selectively (see
    /// `unacked_bytes`). `push` of `len` bytes fits iff `queued_bytes() + len <= max`
    /// and the segment window has room.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes held for retransmission: payloads not yet acknowledged in any way.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked
    }

    /// Unacknowledged segments (those acknowledged selectively are not counted).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn rto(&self) -> Duration {
        Duration::from_nanos(self.rto)
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_nanos)
    }

    /// The sequence number the next `push` will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether every sequence number `ack` covers was assigned.
    fn could_have_sent(&self, ack: Ack) -> bool {
        if ack.next_expected > self.next_seq {
            return false;
        }
        if ack.selective == 0 {
            return true;
        }
        let highest_bit = u64::from(63 - ack.selective.leading_zeros());
        ack.next_expected
            .checked_add(1 + highest_bit)
            .is_some_and(|highest| highest < self.next_seq)
    }

    fn advance_base(&mut self) {
        while self.base < self.next_seq
            && !matches!(self.slots.get(slot_index(self.base)), Some(Some(_)))
        {
            if let Some(len) = self.window_lens.get_mut(slot_index(self.base)) {
                self.queued = self.queued.saturating_sub(*len);
                *len = 0;
            }
            self.base += 1;
        }
        if self.in_flight == 0 {
            self.arena.reset();
        }
    }

    /// RFC 6298 2.2/2.3 in integer nanoseconds (alpha 1/8, beta 1/4, K 4, G 0:
    /// the clock has nanosecond granularity and `min_rto` is the real floor).
    fn update_rto(&mut self, rtt: u64) {
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, rtt / 2),
            Some(srtt) => {
                let deviation = u128::from(srtt.abs_diff(rtt));
                let rttvar = (3 * u128::from(self.rttvar) + deviation) / 4;
                let srtt = (7 * u128::from(srtt) + u128::from(rtt)) / 8;
                (narrow(srtt), narrow(rttvar))
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        let rto = u128::from(srtt) + RTTVAR_MULTIPLIER * u128::from(rttvar);
        self.rto = self.bounds.clamp(narrow(rto));
    }

    fn flag_fast_retransmits(&mut self, now: Timestamp, ack: Ack) {
        let rto = self.rto;
        for seq in self.base..self.next_seq {
            let Some(Some(sent)) = self.slots.get_mut(slot_index(seq)) else {
                continue;
            };
            if sent.seq != seq || sent.fast_pending {
                continue;
            }
            // Still unacknowledged, so `seq >= next_expected`. Bit i of the bitmap is
            // next_expected + 1 + i, so the bits above `seq` start at bit seq - next_expected.
            let received_above = seq
                .checked_sub(ack.next_expected)
                .and_then(|shift| u32::try_from(shift).ok())
                .and_then(|shift| ack.selective.checked_shr(shift))
                .map_or(0, u64::count_ones);
            if received_above < FAST_RETRANSMIT_THRESHOLD {
                continue;
            }
            if sent.last_fast.is_some_and(|last| now < after(last, rto)) {
                continue;
            }
            sent.fast_pending = true;
            sent.last_fast = Some(now);
        }
    }
}

/// What to do with an arriving segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// seq is the next expected: deliver the payload you hold now (in place), then drain `pop_ready`.
    Deliver,
    /// stored out of order; will come out of `pop_ready` once the gap fills.
    Buffered,
    /// already delivered or already buffered: drop it (still acknowledge).
    Duplicate,
    /// beyond next_expected + 64 or no room in the reorder buffer: dropped, the sender will retransmit.
    NoRoom,
}

/// One out-of-order payload held by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    seq: u64,
    span: Span,
}

impl Spanned for Held {
    fn span(&self) -> Span {
        self.span
    }
    fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

/// The receiving half of one peer's Reliable stream.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ReliableReceiver {
    max_buffered: usize,
    /// Holds sequence numbers in `next_expected..=next_expected + 64`; the two ends
    /// share a slot, so whichever arrives second is refused.
    slots: [Option<Held>; MAX_IN_FLIGHT],
    arena: Arena,
    next_expected: u64,
    buffered: usize,
    ack_needed: bool,
}

impl fmt::Debug for ReliableReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableReceiver")
            .field("next_expected", &self.next_expected)
            .field("buffered", &self.buffered)
            .field("ack_needed", &self.ack_needed)
            .finish_non_exhaustive()
    }
}

impl ReliableReceiver {
    pub fn new(config: ReliableConfig) -> Self {
        ReliableReceiver {
            max_buffered: config.max_queued_bytes,
            slots: [None; MAX_IN_FLIGHT],
            arena: Arena::new(config.max_queued_bytes),
            next_expected: 0,
            buffered: 0,
            ack_needed: false,
        }
    }

    pub fn on_segment(&mut self, seq: u64, payload: &[u8]) -> Receive {
        self.ack_needed = true;
        if seq < self.next_expected || self.holds(seq) {
            return Receive::Duplicate;
        }
        if seq == self.next_expected {
            // A sender never assigns u64::MAX, so refusing it keeps `next_expected`
            // from overflowing (and a second delivery of the same number impossible).
            return match seq.checked_add(1) {
                Some(next) => {
                    self.next_expected = next;
                    Receive::Deliver
                }
                None => Receive::NoRoom,
            };
        }
        if seq - self.next_expected > WINDOW {
            return Receive::NoRoom;
        }
        let index = slot_index(seq);
        if !matches!(self.slots.get(index), Some(None)) {
            // Occupied by `next_expected` itself (ready but not yet popped), 64 below.
            return Receive::NoRoom;
        }
        if payload.len() > self.max_buffered.saturating_sub(self.buffered) {
            return Receive::NoRoom;
        }
        let Some(span) = self.arena.store(payload, &mut self.slots) else {
            return Receive::NoRoom;
        };
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(Held { seq, span });
            self.buffered += payload.len();
            Receive::Buffered
        } else {
            Receive::NoRoom
        }
    }

    /// Whether `pop_ready` has a message.
    pub fn has_ready(&self) -> bool {
        let next = self.next_expected;
        self.slots
            .get(slot_index(next))
            .is_some_and(|slot| slot.is_some_and(|held| held.seq == next))
    }

    /// After a `Deliver`: the next buffered in-order payload, advancing next_expected. The slice stays valid until the next &mut call. None when the next seq is missing.
    pub fn pop_ready(&mut self) -> Option<&[u8]> {
        let next = self.next_expected;
        let slot = self.slots.get_mut(slot_index(next))?;
        let held = slot.filter(|held| held.seq == next)?;
        // Buffered sequence numbers are above a delivered one, so never u64::MAX... but
        // stay total anyway.
        let after_next = next.checked_add(1)?;
        *slot = None;
        self.next_expected = after_next;
        self.buffered = self.buffered.saturating_sub(held.span.len);
        if self.buffered == 0 && self.slots.iter().all(Option::is_none) {
            // Only forgets the tail position: the bytes returned below stay intact
            // until the next &mut call, which the borrow already forbids.
            self.arena.reset();
        }
        Some(self.arena.get(held.span))
    }

    /// The ACK describing what has arrived (also counts Buffered segments in the selective bitmap).
    ///
    /// Segments already buffered in order but not yet popped count as received
    /// cumulatively, so the sender need not resend what only waits for `pop_ready`.
    pub fn ack(&self) -> Ack {
        let mut next_expected = self.next_expected;
        while self.holds(next_expected) {
            match next_expected.checked_add(1) {
                Some(next) => next_expected = next,
                None => break,
            }
        }
        let mut selective = 0u64;
        for bit in 0..WINDOW {
            let seq = next_expected.checked_add(1 + bit);
            if seq.is_some_and(|seq| self.holds(seq)) {
                selective |= 1 << bit;
            }
        }
        Ack {
            next_expected,
            selective,
        }
    }

    /// true after any on_segment (incl. duplicates: the sender may have lost our ACK); cleared by ack_sent().
    pub fn ack_needed(&self) -> bool {
        self.ack_needed
    }

    pub fn ack_sent(&mut self) {
        self.ack_needed = false;
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    fn holds(&self, seq: u64) -> bool {
        matches!(self.slots.get(slot_index(seq)), Some(Some(held)) if held.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    const MS: u64 = 1_000_000;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn ack(next_expected: u64, selective: u64) -> Ack {
        Ack {
            next_expected,
            selective,
        }
    }

    fn config(max_queued_bytes: usize) -> ReliableConfig {
        ReliableConfig {
            max_queued_bytes,
            ..ReliableConfig::default()
        }
    }

    /// `percent` in 100 chance.
    fn chance(rng: &mut ChaCha20Rng, percent: u32) -> bool {
        rng.next_u32() % 100 < percent
    }

    /// Uniform-enough in `lo..=hi` for a simulation.
    fn between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
        lo + rng.next_u64() % (hi - lo + 1)
    }

    /// A one-way lossy network: drops, duplicates and reorders (random delay).
    struct Link<T> {
        in_transit: Vec<(Timestamp, T)>,
        loss_percent: u32,
        dup_percent: u32,
    }

    impl<T: Clone> Link<T> {
        fn new(loss_percent: u32, dup_percent: u32) -> Self {
            Link {
                in_transit: Vec::new(),
                loss_percent,
                dup_percent,
            }
        }

        fn send(&mut self, rng: &mut ChaCha20Rng, now: Timestamp, item: T) {
            if chance(rng, self.loss_percent) {
                return;
            }
            if chance(rng, self.dup_percent) {
                let arrival = after(now, between(rng, 1, 20) * MS);
                self.in_transit.push((arrival, item.clone()));
            }
            let arrival = after(now, between(rng, 1, 20) * MS);
            self.in_transit.push((arrival, item));
        }

        fn arrived(&mut self, now: Timestamp) -> Vec<T> {
            let mut out = Vec::new();
            let mut index = 0;
            while index < self.in_transit.len() {
                if self.in_transit[index].0 <= now {
                    // swap_remove shuffles further: same-tick arrivals come in any order.
                    out.push(self.in_transit.swap_remove(index).1);
                } else {
                    index += 1;
                }
            }
            out
        }
    }

    #[derive(Debug, Default)]
    struct SimReport {
        steps: usize,
        retransmits: usize,
        duplicates: usize,
        buffered: usize,
        no_room: usize,
    }

    /// Pushes `count` messages as fast as WouldBlock allows through 10% loss,
    /// 10% duplication and 1-20 ms reordering in both directions; checks every one
    /// comes out exactly once, in order, byte for byte, and that the run ends with
    /// everything acknowledged.
    fn simulate(
        seed: u64,
        sender_config: ReliableConfig,
        receiver_config: ReliableConfig,
        count: usize,
        max_len: usize,
    ) -> SimReport {
        const STEP: u64 = MS / 2;
        const MAX_STEPS: usize = 400_000;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let messages: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let len = between(&mut rng, 0, max_len as u64) as usize;
                (0..len).map(|_| rng.next_u32() as u8).collect()
            })
            .collect();
        let mut sender = ReliableSender::new(sender_config);
        let mut receiver = ReliableReceiver::new(receiver_config);
        let mut data: Link<(u64, Vec<u8>)> = Link::new(10, 10);
        let mut acks: Link<Ack> = Link::new(10, 10);
        let mut pushed = 0usize;
        let mut delivered = 0usize;
        let mut report = SimReport::default();
        let mut now = Timestamp::ZERO;
        let mut check_delivery = |payload: &[u8]| {
            assert!(delivered < count, "delivered more messages than were sent");
            assert_eq!(payload, &messages[delivered][..], "message {delivered}");
            delivered += 1;
        };
        let mut finished = false;
        for step in 0..MAX_STEPS {
            now += Duration::from_nanos(STEP);
            while pushed < count {
                match sender.push(now, &messages[pushed]) {
                    Ok(seq) => {
                        assert_eq!(seq, pushed as u64);
                        data.send(&mut rng, now, (seq, messages[pushed].clone()));
                        pushed += 1;
                    }
                    Err(PushError::WouldBlock) => break,
                    Err(PushError::TooLarge) => panic!("message {pushed} too large"),
                }
            }
            while let Some(segment) = sender.poll_retransmit(now) {
                report.retransmits += 1;
                let copy = (segment.seq, segment.payload.to_vec());
                data.send(&mut rng, now, copy);
            }
            for (seq, payload) in data.arrived(now) {
                match receiver.on_segment(seq, &payload) {
                    Receive::Deliver => {
                        check_delivery(&payload);
                        while let Some(ready) = receiver.pop_ready() {
                            check_delivery(ready);
                        }
                    }
                    Receive::Buffered => report.buffered += 1,
                    Receive::Duplicate => report.duplicates += 1,
                    Receive::NoRoom => report.no_room += 1,
                }
                assert!(receiver.buffered_bytes() <= receiver_config.max_queued_bytes);
            }
            if receiver.ack_needed() {
                acks.send(&mut rng, now, receiver.ack());
                receiver.ack_sent();
            }
            for arrived in acks.arrived(now) {
                sender
                    .on_ack(now, arrived)
                    .expect("a genuine ACK is never Invalid");
            }
            assert!(sender.queued_bytes() <= sender_config.max_queued_bytes);
            assert!(sender.in_flight() <= MAX_IN_FLIGHT);
            if pushed == count && sender.in_flight() == 0 {
                report.steps = step;
                finished = true;
                break;
            }
        }
        assert!(finished, "simulation did not finish: {report:?} {sender:?}");
        assert_eq!(delivered, count);
        assert_eq!(sender.queued_bytes(), 0);
        assert_eq!(sender.next_timeout(), None);
        report
    }

    #[test]
    fn lossy_duplicating_reordering_channel_delivers_everything_once_in_order() {
        for seed in 1..=3 {
            let report = simulate(seed, config(512), config(512), 3_000, 48);
            println!("seed {seed}: {report:?}");
            // The run must actually have exercised recovery.
            assert!(report.retransmits > 0 && report.duplicates > 0 && report.buffered > 0);
            // Equal bounds on both ends: the sender never overruns the reorder buffer.
            assert_eq!(report.no_room, 0);
        }
    }

    #[test]
    fn many_small_messages_hit_the_segment_window_not_the_byte_bound() {
        let report = simulate(7, config(4096), config(4096), 4_000, 8);
        println!("{report:?}");
        assert!(report.retransmits > 0 && report.buffered > 0);
        assert_eq!(report.no_room, 0);
    }

    #[test]
    fn receiver_with_less_room_than_sender_still_gets_everything() {
        let report = simulate(11, config(2048), config(256), 2_000, 200);
        println!("{report:?}");
        assert!(
            report.no_room > 0,
            "the small reorder buffer never filled: {report:?}"
        );
    }

    #[test]
    fn mismatched_bounds_and_many_seeds_still_deliver_everything() {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        for seed in 100..124 {
            let sender_max = between(&mut rng, 16, 1024) as usize;
            let receiver_max = between(&mut rng, 0, 1024) as usize;
            let max_len = between(&mut rng, 0, sender_max as u64) as usize;
            let report = simulate(seed, config(sender_max), config(receiver_max), 300, max_len);
            if receiver_max >= sender_max {
                assert_eq!(report.no_room, 0, "seed {seed}");
            }
        }
    }

    #[test]
    fn push_blocks_on_the_byte_bound_and_resumes_after_an_ack() {
        let mut sender = ReliableSender::new(config(100));
        assert_eq!(sender.push(t(0), &[1; 60]), Ok(0));
        assert_eq!(sender.push(t(0), &[2; 40]), Ok(1));
        assert_eq!(sender.queued_bytes(), 100);
        assert_eq!(sender.push(t(0), &[3; 1]), Err(PushError::WouldBlock));
        // An empty payload needs no bytes, only a slot.
        assert_eq!(sender.push(t(0), &[]), Ok(2));
        let outcome = sender.on_ack(t(10), ack(1, 0)).unwrap();
        assert_eq!(outcome.newly_acked, 1);
        assert_eq!(outcome.bytes_freed, 60);
        assert_eq!(sender.push(t(10), &[3; 60]), Ok(3));
        assert_eq!(sender.push(t(10), &[4; 1]), Err(PushError::WouldBlock));
        assert_eq!(sender.push(t(10), &[4; 101]), Err(PushError::TooLarge));
    }

    #[test]
    fn selectively_acked_bytes_count_until_the_cumulative_point_passes_them() {
        let mut sender = ReliableSender::new(config(100));
        sender.push(t(0), &[1; 50]).unwrap();
        sender.push(t(0), &[2; 50]).unwrap();
        let outcome = sender.on_ack(t(1), ack(0, 0b1)).unwrap();
        assert_eq!((outcome.newly_acked, outcome.bytes_freed), (1, 50));
        assert_eq!(sender.unacked_bytes(), 50);
        // The receiver still buffers seq 1 behind the hole at 0.
        assert_eq!(sender.queued_bytes(), 100);
        assert_eq!(sender.push(t(1), &[3; 1]), Err(PushError::WouldBlock));
        let outcome = sender.on_ack(t(2), ack(2, 0)).unwrap();
        assert_eq!((outcome.newly_acked, outcome.bytes_freed), (1, 50));
        assert_eq!((sender.queued_bytes(), sender.unacked_bytes()), (0, 0));
        assert_eq!(sender.push(t(2), &[3; 100]), Ok(2));
    }

    #[test]
    fn push_blocks_on_the_segment_window_and_resumes_after_an_ack() {
        let mut sender = ReliableSender::new(config(10_000));
        for seq in 0..MAX_IN_FLIGHT as u64 {
            assert_eq!(sender.push(t(0), &[seq as u8]), Ok(seq));
        }
        assert_eq!(sender.in_flight(), MAX_IN_FLIGHT);
        assert_eq!(sender.push(t(0), &[0]), Err(PushError::WouldBlock));
        // Selectively acknowledging everything but the oldest frees bytes, not window:
        // seq 64 would be out of a receiver's window while seq 0 is missing.
        sender.on_ack(t(5), ack(0, u64::MAX >> 1)).unwrap();
        assert_eq!(sender.in_flight(), 1);
        assert_eq!(sender.push(t(5), &[0]), Err(PushError::WouldBlock));
        sender.on_ack(t(6), ack(1, 0)).unwrap();
        assert_eq!(sender.in_flight(), 0);
        assert_eq!(sender.push(t(6), &[9]), Ok(64));
    }

    #[test]
    fn too_large_is_permanent() {
        let mut sender = ReliableSender::new(config(512));
        assert_eq!(sender.push(t(0), &[0; 513]), Err(PushError::TooLarge));
        assert_eq!(sender.push(t(0), &[0; 512]), Ok(0));
        assert_eq!(sender.push(t(0), &[0; 513]), Err(PushError::TooLarge));
        let mut zero = ReliableSender::new(config(0));
        assert_eq!(zero.push(t(0), &[0]), Err(PushError::TooLarge));
        assert_eq!(zero.push(t(0), &[]), Ok(0));
    }

    #[test]
    fn forged_acks_are_invalid_and_change_nothing() {
        let mut sender = ReliableSender::new(config(512));
        for _ in 0..3 {
            sender.push(t(0), &[7; 10]).unwrap();
        }
        sender.on_ack(t(1), ack(1, 0)).unwrap();
        let before = sender.clone();
        let forged = [
            ack(4, 0),                 // cumulative beyond next_seq (3)
            ack(u64::MAX, 0),          // far beyond
            ack(1, 0b10),              // selective bit for seq 3, never sent
            ack(1, 1 << 63),           // selective bit 64 beyond
            ack(3, 1),                 // cumulative fine, selective seq 4 not
            ack(u64::MAX - 1, 1 << 5), // selective arithmetic would overflow
            ack(u64::MAX, u64::MAX),
        ];
        for forged in forged {
            assert_eq!(
                sender.on_ack(t(2), forged),
                Err(AckError::Invalid),
                "{forged:?}"
            );
            assert!(sender == before, "state changed by {forged:?}");
        }
        // The limits themselves are fine.
        assert_eq!(sender.on_ack(t(2), ack(1, 0b1)).unwrap().newly_acked, 1);
        assert_eq!(sender.on_ack(t(2), ack(3, 0)).unwrap().newly_acked, 1);
    }

    #[test]
    fn stale_and_duplicate_acks_are_harmless() {
        let mut sender = ReliableSender::new(config(512));
        for _ in 0..4 {
            sender.push(t(0), &[1; 4]).unwrap();
        }
        assert_eq!(sender.on_ack(t(1), ack(2, 0)).unwrap().newly_acked, 2);
        assert_eq!(
            sender.on_ack(t(1), ack(2, 0)).unwrap(),
            AckOutcome::default()
        );
        assert_eq!(
            sender.on_ack(t(1), ack(0, 0b1)).unwrap(),
            AckOutcome::default()
        );
        assert_eq!(sender.in_flight(), 2);
        assert_eq!(sender.queued_bytes(), 8);
    }

    #[test]
    fn rtt_estimator_follows_rfc_6298() {
        let mut sender = ReliableSender::new(config(512));
        assert_eq!(sender.rto(), Duration::from_millis(50));
        assert_eq!(sender.srtt(), None);
        sender.push(t(0), &[1]).unwrap();
        let outcome = sender.on_ack(t(20), ack(1, 0)).unwrap();
        assert_eq!(outcome.rtt_sample, Some(Duration::from_millis(20)));
        // SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
        assert_eq!(sender.srtt(), Some(Duration::from_millis(20)));
        assert_eq!(sender.rto(), Duration::from_millis(60));
        sender.push(t(100), &[2]).unwrap();
        sender.on_ack(t(112), ack(2, 0)).unwrap();
        // RTTVAR = 3/4 * 10 + 1/4 * |20 - 12| = 9.5; SRTT = 7/8 * 20 + 1/8 * 12 = 19.
        assert_eq!(sender.srtt(), Some(Duration::from_millis(19)));
        assert_eq!(sender.rto(), Duration::from_millis(57));
        // Tiny RTTs clamp to min_rto, huge ones to max_rto.
        sender.push(t(200), &[3]).unwrap();
        for seq in 3..40u64 {
            sender.push(t(200 + seq), &[3]).unwrap();
            sender.on_ack(t(200 + seq), ack(seq, 0)).unwrap();
        }
        assert_eq!(sender.rto(), Duration::from_millis(5));
        let mut slow = ReliableSender::new(config(512));
        slow.push(t(0), &[1]).unwrap();
        slow.on_ack(t(0), ack(0, 0)).unwrap();
        slow.on_ack(t(900), ack(1, 0)).unwrap();
        assert_eq!(slow.rto(), Duration::from_secs(1));
    }

    #[test]
    fn karn_takes_no_sample_from_a_retransmitted_segment() {
        let mut sender = ReliableSender::new(config(512));
        sender.push(t(0), &[1]).unwrap();
        let segment = sender.poll_retransmit(t(50)).unwrap();
        assert_eq!(segment.seq, 0);
        let outcome = sender.on_ack(t(55), ack(1, 0)).unwrap();
        assert_eq!(outcome.newly_acked, 1);
        assert_eq!(outcome.rtt_sample, None);
        assert_eq!(sender.srtt(), None);
        // The backed-off RTO survives until a clean sample.
        assert_eq!(sender.rto(), Duration::from_millis(100));
        // Of two segments acked together, the clean one gives the sample.
        sender.push(t(60), &[2]).unwrap();
        sender.push(t(70), &[3]).unwrap();
        assert_eq!(sender.poll_retransmit(t(160)).map(|s| s.seq), Some(1));
        assert_eq!(sender.poll_retransmit(t(160)), None);
        let outcome = sender.on_ack(t(165), ack(3, 0)).unwrap();
        assert_eq!(outcome.newly_acked, 2);
        assert_eq!(outcome.rtt_sample, Some(Duration::from_millis(95)));
    }

    #[test]
    fn timeout_backoff_doubles_and_caps() {
        let mut sender = ReliableSender::new(config(512));
        sender.push(t(0), &[42; 3]).unwrap();
        assert_eq!(sender.next_timeout(), Some(t(50)));
        assert_eq!(sender.poll_retransmit(t(49)), None);
        let mut now = 50;
        for expected in [100, 200, 400, 800, 1000, 1000, 1000] {
            let segment = sender.poll_retransmit(t(now)).unwrap();
            assert_eq!((segment.seq, segment.payload), (0, &[42u8; 3][..]));
            assert_eq!(sender.poll_retransmit(t(now)), None);
            assert_eq!(sender.rto(), Duration::from_millis(expected));
            now += expected;
            assert_eq!(sender.next_timeout(), Some(t(now)));
        }
    }

    #[test]
    fn fast_retransmit_on_three_sacked_segments_above_a_hole() {
        let mut sender = ReliableSender::new(config(512));
        for seq in 0..6u8 {
            sender.push(t(0), &[seq]).unwrap();
        }
        // Two above the hole: not enough evidence.
        sender.on_ack(t(2), ack(0, 0b11)).unwrap();
        assert_eq!(sender.poll_retransmit(t(2)), None);
        // Three above seq 0 (1, 2, 3): seq 0 is due now, long before its RTO.
        sender.on_ack(t(3), ack(0, 0b111)).unwrap();
        assert_eq!(sender.next_timeout(), Some(t(3)));
        let rto = sender.rto();
        assert!(t(3) + rto < t(50), "fast means before the first timeout");
        let segment = sender.poll_retransmit(t(3)).unwrap();
        assert_eq!((segment.seq, segment.payload), (0, &[0u8][..]));
        assert_eq!(sender.poll_retransmit(t(3)), None);
        // No backoff for a fast retransmit.
        assert_eq!(sender.rto(), rto);
        // More ACKs still showing the hole within one RTO do not repeat it.
        sender.on_ack(t(4), ack(0, 0b1111)).unwrap();
        assert_eq!(sender.poll_retransmit(t(4)), None);
        // After an RTO, the same evidence may trigger it once more.
        let later = t(3) + sender.rto();
        sender.on_ack(later, ack(0, 0b1111)).unwrap();
        assert_eq!(sender.poll_retransmit(later).map(|s| s.seq), Some(0));
        assert_eq!(sender.poll_retransmit(later), None);
        // A hole higher up: seq 4 missing, but only 5 received above it.
        let mut sender = ReliableSender::new(config(512));
        for seq in 0..10u8 {
            sender.push(t(0), &[seq]).unwrap();
        }
        // next_expected 4; received 6, 7, 8 (bits 1, 2, 3); 4 and 5 missing.
        sender.on_ack(t(1), ack(4, 0b1110)).unwrap();
        assert_eq!(sender.poll_retransmit(t(1)).map(|s| s.seq), Some(4));
        assert_eq!(sender.poll_retransmit(t(1)).map(|s| s.seq), Some(5));
        assert_eq!(sender.poll_retransmit(t(1)), None);
    }

    #[test]
    fn retransmitted_payloads_survive_arena_compaction() {
        // Room for three 10-byte payloads in a 60-byte arena: every few pushes the
        // tail reaches the end and the live payloads, with holes between them left by
        // selective ACKs, must be slid to the front.
        let mut sender = ReliableSender::new(config(30));
        let payload = |seq: u64| [seq as u8 + 1; 10];
        let check_stored = |sender: &ReliableSender, expected: &[u64]| {
            let mut probe = sender.clone();
            let mut seen = Vec::new();
            while let Some(segment) = probe.poll_retransmit(t(1_000_000)) {
                assert_eq!(segment.payload, &payload(segment.seq)[..]);
                seen.push(segment.seq);
            }
            assert_eq!(seen, expected);
        };
        for seq in 0..3 {
            assert_eq!(sender.push(t(0), &payload(seq)), Ok(seq));
        }
        for cycle in 0..20u64 {
            let a = 3 * cycle;
            let now = t(cycle);
            check_stored(&sender, &[a, a + 1, a + 2]);
            // Free a (cumulatively) and a + 2 (selectively, bit 0 = a + 2).
            sender.on_ack(now, ack(a + 1, 0b1)).unwrap();
            check_stored(&sender, &[a + 1]);
            assert_eq!(sender.push(now, &payload(a + 3)), Ok(a + 3));
            assert_eq!(
                sender.push(now, &payload(a + 4)),
                Err(PushError::WouldBlock)
            );
            sender.on_ack(now, ack(a + 2, 0)).unwrap();
            check_stored(&sender, &[a + 3]);
            assert_eq!(sender.push(now, &payload(a + 4)), Ok(a + 4));
            assert_eq!(sender.push(now, &payload(a + 5)), Ok(a + 5));
        }
    }

    #[test]
    fn receiver_orders_buffers_and_rejects_duplicates() {
        let mut receiver = ReliableReceiver::new(config(512));
        assert!(!receiver.ack_needed());
        assert_eq!(receiver.ack(), ack(0, 0));
        assert_eq!(receiver.on_segment(2, b"two"), Receive::Buffered);
        assert!(receiver.ack_needed());
        receiver.ack_sent();
        assert!(!receiver.ack_needed());
        assert_eq!(receiver.on_segment(2, b"two"), Receive::Duplicate);
        assert!(receiver.ack_needed(), "a duplicate still needs an ACK");
        assert_eq!(receiver.on_segment(4, b"four"), Receive::Buffered);
        assert_eq!(receiver.buffered_bytes(), 7);
        // Bit i = next_expected + 1 + i: seqs 2 and 4 are bits 1 and 3.
        assert_eq!(receiver.ack(), ack(0, 0b1010));
        assert_eq!(receiver.pop_ready(), None, "seq 0 still missing");
        assert_eq!(receiver.on_segment(0, b"zero"), Receive::Deliver);
        assert_eq!(receiver.next_expected(), 1);
        assert_eq!(receiver.pop_ready(), None, "seq 1 still missing");
        assert_eq!(receiver.ack(), ack(1, 0b101));
        assert_eq!(receiver.on_segment(0, b"zero"), Receive::Duplicate);
        assert_eq!(receiver.on_segment(1, b"one"), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&b"two"[..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.next_expected(), 3);
        assert_eq!(receiver.on_segment(3, b"three"), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&b"four"[..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.buffered_bytes(), 0);
        assert_eq!(receiver.ack(), ack(5, 0));
        assert_eq!(receiver.on_segment(4, b"four"), Receive::Duplicate);
    }

    #[test]
    fn receiver_window_and_byte_bound() {
        let mut receiver = ReliableReceiver::new(config(10));
        // next_expected + 64 is the last in the window (bit 63).
        assert_eq!(receiver.on_segment(65, b""), Receive::NoRoom);
        assert_eq!(receiver.on_segment(u64::MAX, b""), Receive::NoRoom);
        assert_eq!(receiver.on_segment(64, b"x"), Receive::Buffered);
        assert_eq!(receiver.ack(), ack(0, 1 << 63));
        assert_eq!(receiver.on_segment(5, &[0; 9]), Receive::Buffered);
        assert_eq!(receiver.on_segment(6, b"y"), Receive::NoRoom);
        assert_eq!(receiver.buffered_bytes(), 10);
        // In-order segments need no buffer space, however large.
        assert_eq!(receiver.on_segment(0, &[0; 100]), Receive::Deliver);
        // Seq 0 and 64 share a slot; seq 0 was delivered, so 64 stays buffered.
        assert_eq!(receiver.ack(), ack(1, (1 << 62) | (1 << 3)));
    }

    #[test]
    fn ack_counts_ready_but_unpopped_segments_cumulatively() {
        let mut receiver = ReliableReceiver::new(config(512));
        assert_eq!(receiver.on_segment(1, b"1"), Receive::Buffered);
        assert_eq!(receiver.on_segment(3, b"3"), Receive::Buffered);
        assert_eq!(receiver.on_segment(0, b"0"), Receive::Deliver);
        // 1 waits for pop_ready; the ACK already counts it.
        assert_eq!(receiver.next_expected(), 1);
        assert_eq!(receiver.ack(), ack(2, 0b1));
        // 65 would share seq 1's slot while 1 is unpopped.
        assert_eq!(receiver.on_segment(65, b"65"), Receive::NoRoom);
        assert_eq!(receiver.on_segment(1, b"1"), Receive::Duplicate);
        assert_eq!(receiver.pop_ready(), Some(&b"1"[..]));
        assert_eq!(receiver.on_segment(65, b"65"), Receive::Buffered);
    }

    #[test]
    fn receiver_arena_compacts_without_losing_bytes() {
        // A 40-byte arena for 20 buffered bytes. Seq 60 stays buffered throughout, so
        // the arena never empties and its tail wraps by compaction every few rounds.
        let mut receiver = ReliableReceiver::new(config(20));
        let payload = |seq: u64| [seq as u8 + 1; 5];
        assert_eq!(receiver.on_segment(60, &payload(60)), Receive::Buffered);
        for round in 0..19u64 {
            let base = 3 * round;
            for seq in [base + 2, base + 1] {
                assert_eq!(receiver.on_segment(seq, &payload(seq)), Receive::Buffered);
            }
            assert_eq!(receiver.on_segment(base, &payload(base)), Receive::Deliver);
            for seq in [base + 1, base + 2] {
                assert_eq!(receiver.pop_ready(), Some(&payload(seq)[..]), "{seq}");
            }
            assert_eq!(receiver.pop_ready(), None);
        }
        assert_eq!(receiver.next_expected(), 57);
        assert_eq!(receiver.buffered_bytes(), 5);
        assert_eq!(receiver.ack(), ack(57, 1 << 2));
        for seq in 57..60 {
            assert_eq!(receiver.on_segment(seq, &payload(seq)), Receive::Deliver);
        }
        assert_eq!(receiver.on_segment(60, &payload(60)), Receive::Duplicate);
        assert_eq!(receiver.ack(), ack(61, 0));
        assert_eq!(receiver.pop_ready(), Some(&payload(60)[..]));
        assert_eq!(receiver.buffered_bytes(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Ack(u64, u64),
        AckBehind(u64, u64),
        Poll(u64),
        Segment(u64, usize),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..300).prop_map(Op::Push),
            // Near the real sequence space and anywhere at all.
            (0u64..100, any::<u64>()).prop_map(|(n, s)| Op::Ack(n, s)),
            (any::<u64>(), any::<u64>()).prop_map(|(n, s)| Op::Ack(n, s)),
            // Plausible: a little behind the next sequence number, few selective bits.
            (0u64..70, any::<u16>()).prop_map(|(b, s)| Op::AckBehind(b, u64::from(s))),
            (0u64..2_000).prop_map(Op::Poll),
            (0u64..150, 0usize..300).prop_map(|(q, l)| Op::Segment(q, l)),
            (any::<u64>(), 0usize..300).prop_map(|(q, l)| Op::Segment(q, l)),
            Just(Op::Pop),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_acks_and_segments_never_break_invariants(
            max in 0usize..700,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let cfg = config(max);
            let mut sender = ReliableSender::new(cfg);
            let mut receiver = ReliableReceiver::new(cfg);
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Push(len) => {
                        let before = sender.next_seq();
                        match sender.push(t(now), &vec![0xA5; len]) {
                            Ok(seq) => prop_assert_eq!(seq, before),
                            Err(PushError::TooLarge) => prop_assert!(len > max),
                            Err(PushError::WouldBlock) => {}
                        }
                    }
                    Op::Ack(next_expected, selective) => {
                        let before = sender.clone();
                        if sender.on_ack(t(now), ack(next_expected, selective)).is_err() {
                            prop_assert!(sender == before);
                        }
                    }
                    Op::AckBehind(behind, selective) => {
                        let before = sender.clone();
                        let next_expected = sender.next_seq().saturating_sub(behind);
                        if sender.on_ack(t(now), ack(next_expected, selective)).is_err() {
                            prop_assert!(sender == before);
                        }
                    }
                    Op::Poll(advance) => {
                        now += advance;
                        let mut polled = 0;
                        while let Some(segment) = sender.poll_retransmit(t(now)) {
                            prop_assert!(segment.payload.iter().all(|&b| b == 0xA5));
                            polled += 1;
                            prop_assert!(polled <= MAX_IN_FLIGHT);
                        }
                    }
                    Op::Segment(seq, len) => {
                        let expected = receiver.next_expected();
                        let result = receiver.on_segment(seq, &vec![seq as u8; len]);
                        if result == Receive::Deliver {
                            prop_assert_eq!(seq, expected);
                        }
                    }
                    Op::Pop => {
                        let expected = receiver.next_expected();
                        if let Some(payload) = receiver.pop_ready() {
                            prop_assert!(payload.iter().all(|&b| b == expected as u8));
                        }
                    }
                }
                prop_assert!(sender.queued_bytes() <= max);
                prop_assert!(sender.in_flight() <= MAX_IN_FLIGHT);
                prop_assert!(receiver.buffered_bytes() <= max);
                let live_bytes: usize = sender.slots.iter().flatten().map(|s| s.span.len).sum();
                prop_assert_eq!(live_bytes, sender.unacked_bytes());
                prop_assert!(sender.unacked_bytes() <= sender.queued_bytes());
                prop_assert_eq!(sender.window_lens.iter().sum::<usize>(), sender.queued_bytes());
                prop_assert_eq!(sender.slots.iter().flatten().count(), sender.in_flight());
                let held: usize = receiver.slots.iter().flatten().map(|h| h.span.len).sum();
                prop_assert_eq!(held, receiver.buffered_bytes());
                let rto = sender.rto();
                prop_assert!(rto >= cfg.min_rto && rto <= cfg.max_rto);
            }
        }
    }
}
