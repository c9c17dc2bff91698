//! The sending half: sequence numbers, the queue, the peer's window, timers and fast retransmit.
//!
//! Owns every message from `push` until an ACK covers it. It transmits nothing
//! itself: `push` says whether the caller sends the first copy now, and
//! `poll_retransmit` hands out what is due (timeouts, fast retransmits, and first
//! transmissions that waited for the peer's window).

use core::fmt;
use core::time::Duration;

use super::ring::{SeqRing, Sequenced};
use super::rtt::RttEstimator;
use super::storage::{Arena, Span, Spanned};
use super::{after, ReliableConfig, MAX_QUEUE_BYTES, WINDOW};
use crate::time::Timestamp;
use crate::wire::Ack;

/// A segment is deemed lost, and retransmitted at once, when an ACK shows this many
/// segments above it received (a first loss), or for a retransmitted segment, covers a
/// segment transmitted this many transmissions after its latest copy (counting every
/// first transmission and retransmission in order, as RACK does): a retransmission lost
/// again is then found about a round trip later instead of after a timeout.
const FAST_RETRANSMIT_THRESHOLD: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// queue full now; try again after ACKs arrive
    WouldBlock,
    /// Larger than the configured queue bound (`bound` bytes): it can never fit, however
    /// many ACKs arrive. Not to be retried; the bound (or the message) must change.
    ExceedsBound { bound: usize },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::WouldBlock => f.write_str("reliable send queue full now"),
            PushError::ExceedsBound { bound } => write!(
                f,
                "reliable message larger than the configured queue bound of {bound} bytes: it can never be sent"
            ),
        }
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

/// A segment to transmit: the endpoint prefixes `seq` (u64 LE) and seals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    /// False for the first transmission of a segment that waited for the peer's window.
    pub retransmission: bool,
}

/// A message `push` accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub seq: u64,
    /// Transmit the first copy now. False when it waits beyond the peer's receive
    /// window: `poll_retransmit` hands it out once ACKs open the window (and
    /// `next_timeout` says so), so the caller must not send it itself.
    pub send_now: bool,
}

/// One unacknowledged segment on the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    seq: u64,
    pub(super) span: Span,
    /// The first transmission (the RTT sample's start if never retransmitted); while
    /// the segment waits for the peer's window, when `push` was called.
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
    /// When SACK evidence last flagged it, to repeat that at most once per RTO.
    last_fast: Option<Timestamp>,
    /// The place of the latest transmission in the order of all this sender's
    /// transmissions (`ReliableSender::next_tx`); meaningless until first sent.
    last_tx: u64,
}

impl Spanned for Sent {
    fn span(&self) -> Span {
        self.span
    }
    fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

impl Sequenced for Sent {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// The payload length of a sequence number in the window, kept until the cumulative
/// point passes it (a selectively acknowledged segment's bytes are still buffered by
/// the receiver, so they still count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WindowLen {
    seq: u64,
    pub(super) len: usize,
}

impl Sequenced for WindowLen {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sent {
    fn is_due(&self, now: Timestamp) -> bool {
        // `last_sent < now` only matters once `due` has saturated at NEVER: it keeps a
        // "call until None" loop finite even at the end of time.
        self.fast_pending || (self.due <= now && self.last_sent < now)
    }
}

/// The sending half of one peer's Reliable stream.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ReliableSender {
    rtt: RttEstimator,
    max_queued: usize,
    pub(super) slots: SeqRing<Sent>,
    arena: Arena,
    /// The oldest unacknowledged sequence number, or `next_seq` if none is.
    base: u64,
    /// Every sequence number in `base..next_unsent` was transmitted; those in
    /// `next_unsent..next_seq` wait for the peer's receive window.
    next_unsent: u64,
    next_seq: u64,
    /// The peer's advertised receive window: bytes in `base..next_unsent` never exceed it,
    /// except for a lone segment (the peer takes the next in-order one in place).
    peer_window: usize,
    /// Bytes in `base..next_unsent`, selectively acknowledged ones included (the
    /// receiver buffers them): what is counted against `peer_window`.
    window_bytes: usize,
    /// Payload length of every sequence number in `base..next_seq`, including those
    /// acknowledged selectively, whose `slots` are already empty.
    pub(super) window_lens: SeqRing<WindowLen>,
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
    /// The earliest deadline (`Sent::due`) of a segment in `base..next_unsent`, kept
    /// as segments are sent and recomputed when an ACK or a retransmission moves one: a
    /// send must not scan a window of up to 1,024 segments to arm its timer.
    retransmit_at: Option<Timestamp>,
    /// The order number the next transmission (first or repeated) gets.
    next_tx: u64,
    /// The latest order number among the segments sent once that an ACK has covered: loss
    /// evidence for a retransmission sent `FAST_RETRANSMIT_THRESHOLD` or more before it.
    newest_acked_tx: Option<u64>,
}

impl fmt::Debug for ReliableSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableSender")
            .field("base", &self.base)
            .field("next_unsent", &self.next_unsent)
            .field("next_seq", &self.next_seq)
            .field("peer_window", &self.peer_window)
            .field("window_bytes", &self.window_bytes)
            .field("queued", &self.queued)
            .field("unacked", &self.unacked)
            .field("in_flight", &self.in_flight)
            .field("rtt", &self.rtt)
            .finish_non_exhaustive()
    }
}

impl ReliableSender {
    pub fn new(config: ReliableConfig) -> Self {
        let arena = Arena::new(config.queue_bound());
        Self::with_storage(config, SeqRing::new(), SeqRing::new(), arena)
    }

    /// Starts the stream again from sequence 0 as `new(config)` would, but keeps the
    /// storage already allocated (slots and payload buffer): a sender reused for another
    /// session (the endpoint's pool) then allocates nothing for its first messages.
    pub fn restart(&mut self, config: ReliableConfig) {
        let mut slots = core::mem::take(&mut self.slots);
        let mut window_lens = core::mem::take(&mut self.window_lens);
        let mut arena = core::mem::replace(&mut self.arena, Arena::new(0));
        slots.clear();
        window_lens.clear();
        // No slot holds a span any more, so every byte of the kept buffer is free.
        arena.reset();
        *self = Self::with_storage(config, slots, window_lens, arena);
    }

    fn with_storage(
        config: ReliableConfig,
        slots: SeqRing<Sent>,
        window_lens: SeqRing<WindowLen>,
        arena: Arena,
    ) -> Self {
        ReliableSender {
            rtt: RttEstimator::new(&config),
            max_queued: config.queue_bound(),
            slots,
            arena,
            base: 0,
            next_unsent: 0,
            next_seq: 0,
            // Until told otherwise, the peer is assumed to be configured like us.
            peer_window: config.queue_bound(),
            window_bytes: 0,
            window_lens,
            queued: 0,
            unacked: 0,
            in_flight: 0,
            retransmit_at: None,
            next_tx: 0,
            newest_acked_tx: None,
        }
    }

    /// The peer's advertised receive window in bytes (from its handshake; more than
    /// `MAX_QUEUE_BYTES` counts as that, since more can never be in flight). Segments
    /// beyond it wait in the queue; lowering it never recalls what was sent.
    pub fn set_peer_window(&mut self, bytes: usize) {
        self.peer_window = bytes.min(MAX_QUEUE_BYTES);
    }

    /// The peer's receive window in force.
    pub fn peer_window(&self) -> usize {
        self.peer_window
    }

    /// Stores a copy of `payload` and returns its sequence number (0, 1, 2, ...). If
    /// `send_now`, the caller transmits the first copy itself right away; otherwise it
    /// waits for the peer's window and comes out of `poll_retransmit`.
    ///
    /// `WouldBlock` when `queued_bytes() + payload.len()` would exceed the byte bound
    /// or `MAX_IN_FLIGHT` sequence numbers lie between the oldest unacknowledged
    /// segment and the next one; nothing is stored then.
    pub fn push(&mut self, now: Timestamp, payload: &[u8]) -> Result<Pushed, PushError> {
        if payload.len() > self.max_queued {
            return Err(PushError::ExceedsBound {
                bound: self.max_queued,
            });
        }
        let span_in_use = self.next_seq.saturating_sub(self.base);
        let window_full = span_in_use >= WINDOW;
        let bytes_full = payload.len() > self.max_queued.saturating_sub(self.queued);
        if window_full || bytes_full {
            return Err(PushError::WouldBlock);
        }
        let seq = self.next_seq;
        // u64::MAX is never assigned so `next_seq` cannot overflow; 2^64 pushes never happen.
        let next_seq = seq.checked_add(1).ok_or(PushError::WouldBlock)?;
        // `base` and `seq` must not share a slot.
        self.slots.make_room_for(span_in_use);
        self.window_lens.make_room_for(span_in_use);
        let span = self
            .arena
            .store(payload, self.slots.as_mut_slice())
            .ok_or(PushError::WouldBlock)?;
        self.window_lens.put(WindowLen {
            seq,
            len: payload.len(),
        });
        // The slots hold every sequence number from `base` on, so this slot's previous
        // occupant has been acknowledged.
        self.slots.put(Sent {
            seq,
            span,
            first_sent: now,
            last_sent: now,
            due: after(now, self.rtt.rto_nanos()),
            interval: self.rtt.rto_nanos(),
            retransmitted: false,
            fast_pending: false,
            last_fast: None,
            last_tx: 0,
        });
        self.next_seq = next_seq;
        self.queued += payload.len();
        self.unacked += payload.len();
        self.in_flight += 1;
        // Older segments still waiting for the window go first.
        let send_now = self.next_unsent == seq && self.window_admits_next();
        if send_now {
            self.mark_first_sent(now);
        }
        Ok(Pushed { seq, send_now })
    }

    /// Applies an authenticated ACK. Err(Invalid) (and no state change) if it covers any seq >= the next seq to be assigned. Frees acked segments (cumulative and selective), takes an RTT sample only from segments never retransmitted (Karn), updates SRTT/RTTVAR/RTO per RFC 6298 in integer nanoseconds clamped to [min_rto, max_rto]. Stale/duplicate ACKs are fine (Ok with zero newly acked). Fast retransmit: an unacknowledged segment with at least 3 segments above it received is deemed lost and becomes due immediately, without backoff; once retransmitted it needs new evidence (a segment transmitted 3 transmissions after the retransmission acknowledged), so a retransmission lost again is repeated after about one round trip, not a timeout.
    pub fn on_ack(&mut self, now: Timestamp, ack: Ack) -> Result<AckOutcome, AckError> {
        if !self.could_have_sent(ack) {
            return Err(AckError::Invalid);
        }
        let mut outcome = AckOutcome::default();
        // The newest newly acknowledged segment never retransmitted: its ACK was the
        // least likely to be delayed by the receiver waiting for more.
        let mut sample: Option<(u64, Timestamp)> = None;
        let cumulative = self.base..ack.next_expected.min(self.next_seq);
        let selective = ack
            .selective
            .iter()
            .filter_map(|bit| ack.next_expected.checked_add(1)?.checked_add(bit));
        for seq in cumulative.chain(selective) {
            let Some(sent) = self.slots.take(seq) else {
                continue;
            };
            outcome.newly_acked += 1;
            outcome.bytes_freed += sent.span.len;
            // Karn: for a segment sent twice, the ACK may answer the older copy, so it
            // gives neither an RTT sample nor order-number evidence of loss.
            if !sent.retransmitted {
                self.newest_acked_tx = self.newest_acked_tx.max(Some(sent.last_tx));
                if sample.is_none_or(|(newest, _)| seq > newest) {
                    sample = Some((seq, sent.first_sent));
                }
            }
        }
        let sample_start = sample.map(|(_, first_sent)| first_sent);
        self.unacked = self.unacked.saturating_sub(outcome.bytes_freed);
        self.in_flight = self.in_flight.saturating_sub(outcome.newly_acked as usize);
        self.advance_base();
        if let Some(start) = sample_start {
            let rtt = now.saturating_since(start);
            self.rtt.on_sample(rtt);
            outcome.rtt_sample = Some(rtt);
        }
        self.flag_lost(now, ack);
        self.recompute_retransmit_at();
        Ok(outcome)
    }

    /// The oldest unacknowledged segment that is due (RTO expired or fast-retransmit flagged), rescheduling it with exponential backoff (capped at max_rto); failing that, the first transmission of a queued segment the peer's window now admits. None if nothing is due. Call repeatedly until None.
    pub fn poll_retransmit(&mut self, now: Timestamp) -> Option<Segment<'_>> {
        let base = self.base;
        let due = (self.base..self.next_unsent)
            .find(|&seq| self.slots.get(seq).is_some_and(|sent| sent.is_due(now)));
        let Some(seq) = due else {
            return self.poll_first_transmission(now);
        };
        let sent = self.slots.get_mut(seq)?;
        if sent.fast_pending {
            // SACK evidence, not a timeout: the path is not necessarily slower, so no backoff.
            sent.fast_pending = false;
        } else {
            sent.interval = self.rtt.bounds().backoff(sent.interval);
            if sent.seq == base {
                // RFC 6298 5.5 backs off the connection's one timer, which tracks the
                // oldest segment. Doing it only for the oldest keeps one loss burst from
                // doubling the RTO once per lost segment, while still letting Karn's
                // backed-off RTO survive until a clean sample arrives.
                self.rtt.back_off();
            }
        }
        sent.retransmitted = true;
        sent.last_sent = now;
        sent.due = after(now, sent.interval);
        sent.last_tx = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1);
        let (seq, span) = (sent.seq, sent.span);
        self.recompute_retransmit_at();
        Some(Segment {
            seq,
            payload: self.arena.get(span),
            retransmission: true,
        })
    }

    /// Earliest time a retransmission will be due, if anything is in flight, or a
    /// time not after now if a queued segment may be sent.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.with_first_transmission(self.retransmit_at)
    }

    /// The earlier of `retransmit` and the first transmission the peer's window now admits.
    fn with_first_transmission(&self, retransmit: Option<Timestamp>) -> Option<Timestamp> {
        let first = self
            .window_admits_next()
            .then(|| self.sent(self.next_unsent).map(|sent| sent.first_sent))
            .flatten();
        match (retransmit, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `next_timeout` computed by scanning every segment in flight: what the kept
    /// `retransmit_at` must always equal.
    #[cfg(test)]
    pub(super) fn next_timeout_by_scan(&self) -> Option<Timestamp> {
        self.with_first_transmission(self.earliest_deadline_in_flight())
    }

    /// Bytes transmitted and not yet covered cumulatively (selectively acknowledged
    /// ones included): what is counted against the peer's window.
    pub fn window_bytes(&self) -> usize {
        self.window_bytes
    }

    /// Bytes counted against `max_queued_bytes`: every payload from the oldest
    /// unacknowledged segment on, including ones acknowledged selectively (see
    /// `unacked_bytes`). `push` of `len` bytes fits iff `queued_bytes() + len <= max`
    /// and the segment window has room.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes allocated to store payloads: grows with use up to a bound set by the
    /// configuration, and is kept once grown.
    pub fn allocated_bytes(&self) -> usize {
        self.arena.allocated()
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
        self.rtt.rto()
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// Messages and payload bytes accepted by `push` and not yet acknowledged in order
    /// (selectively acknowledged ones included: the receiver has not delivered them).
    pub fn unacknowledged(&self) -> (u64, usize) {
        (self.next_seq - self.base, self.queued)
    }

    /// The sequence number the next `push` will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether every sequence number `ack` covers was transmitted.
    fn could_have_sent(&self, ack: Ack) -> bool {
        if ack.next_expected > self.next_unsent {
            return false;
        }
        let Some(highest_bit) = ack.selective.highest() else {
            return true;
        };
        ack.next_expected
            .checked_add(1)
            .and_then(|first| first.checked_add(highest_bit))
            .is_some_and(|highest| highest < self.next_unsent)
    }

    /// The stored segment `seq`, if it is still unacknowledged.
    fn sent(&self, seq: u64) -> Option<&Sent> {
        self.slots.get(seq)
    }

    /// Whether the oldest queued segment may be transmitted: it fits the peer's window,
    /// or nothing else is in it (a lone segment is in order at the receiver, which
    /// delivers it in place, so a window smaller than one message cannot stall us).
    fn window_admits_next(&self) -> bool {
        let Some(len) = self.sent(self.next_unsent).map(|sent| sent.span.len) else {
            return false;
        };
        self.window_bytes == 0 || len <= self.peer_window.saturating_sub(self.window_bytes)
    }

    /// Records the first transmission of segment `next_unsent`, now.
    fn mark_first_sent(&mut self, now: Timestamp) {
        let rto = self.rtt.rto_nanos();
        let seq = self.next_unsent;
        let Some(sent) = self.slots.get_mut(seq) else {
            return;
        };
        sent.first_sent = now;
        sent.last_sent = now;
        sent.due = after(now, rto);
        sent.interval = rto;
        sent.last_tx = self.next_tx;
        self.next_tx = self.next_tx.wrapping_add(1);
        let deadline = sent.due;
        self.window_bytes += sent.span.len;
        self.next_unsent = seq.saturating_add(1);
        self.retransmit_at = Some(self.retransmit_at.map_or(deadline, |at| at.min(deadline)));
    }

    /// The earliest deadline in flight, by a scan of the window: after anything that may
    /// have removed or postponed the earliest one.
    fn recompute_retransmit_at(&mut self) {
        self.retransmit_at = self.earliest_deadline_in_flight();
    }

    fn earliest_deadline_in_flight(&self) -> Option<Timestamp> {
        (self.base..self.next_unsent)
            .filter_map(|seq| self.sent(seq))
            .map(|sent| sent.due)
            .min()
    }

    fn poll_first_transmission(&mut self, now: Timestamp) -> Option<Segment<'_>> {
        if !self.window_admits_next() {
            return None;
        }
        let seq = self.next_unsent;
        self.mark_first_sent(now);
        let span = self.sent(seq)?.span;
        Some(Segment {
            seq,
            payload: self.arena.get(span),
            retransmission: false,
        })
    }

    fn advance_base(&mut self) {
        while self.base < self.next_seq && self.slots.get(self.base).is_none() {
            if let Some(WindowLen { len, .. }) = self.window_lens.take(self.base) {
                self.queued = self.queued.saturating_sub(len);
                // `base < next_unsent` here: an ACK never covers what was not sent.
                self.window_bytes = self.window_bytes.saturating_sub(len);
            }
            self.base += 1;
        }
        if self.in_flight == 0 {
            self.arena.reset();
        }
    }

    /// Flags what the ACK shows lost (due now, without backoff): a segment with
    /// `FAST_RETRANSMIT_THRESHOLD` segments above it received (TCP's duplicate-ACK
    /// threshold; the same evidence repeats it at most once per RTO), and a retransmitted
    /// one as soon as a segment sent once, that many transmissions after its latest copy,
    /// was received (RACK's rule, counted in transmissions): in a stream, a retransmission
    /// lost again is then repeated about a round trip later, not after a timeout.
    ///
    /// Order numbers are not used for first losses: on a path that reorders they would
    /// call a late segment lost as soon as any three later transmissions overtook it,
    /// whereas sequence numbers above a hole count only what the receiver holds.
    fn flag_lost(&mut self, now: Timestamp, ack: Ack) {
        let rto = self.rtt.rto_nanos();
        let retransmission_limit = self
            .newest_acked_tx
            .and_then(|newest| newest.checked_sub(FAST_RETRANSMIT_THRESHOLD));
        // Walks down from the newest transmitted segment, counting the selectively
        // acknowledged ones above each still unacknowledged one (which is at or above
        // `next_expected`: everything below it was just freed).
        let mut received_above = 0u64;
        let lowest = self.base.max(ack.next_expected);
        for seq in (lowest..self.next_unsent).rev() {
            if ack.covers(seq) {
                received_above = received_above.saturating_add(1);
                continue;
            }
            let Some(sent) = self.slots.get_mut(seq) else {
                continue;
            };
            if sent.fast_pending {
                continue;
            }
            let lost_again = sent.retransmitted
                && retransmission_limit.is_some_and(|limit| sent.last_tx <= limit);
            let holes_below_received = received_above >= FAST_RETRANSMIT_THRESHOLD
                && sent.last_fast.is_none_or(|last| now >= after(last, rto));
            if lost_again || holes_below_received {
                sent.fast_pending = true;
                sent.last_fast = Some(now);
                sent.due = sent.due.min(now);
            }
        }
    }
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
