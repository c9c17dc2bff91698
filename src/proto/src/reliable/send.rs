//! The sending half: sequence numbers, the retransmission queue, timers and fast retransmit.

use core::fmt;
use core::time::Duration;

use super::rtt::RttEstimator;
use super::storage::{Arena, Span, Spanned};
use super::{after, slot_index, ReliableConfig, MAX_IN_FLIGHT, WINDOW};
use crate::time::Timestamp;
use crate::wire::Ack;

/// Fast retransmit fires when an ACK shows this many segments above a missing one.
const FAST_RETRANSMIT_THRESHOLD: u32 = 3;

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

/// A segment to retransmit: the endpoint prefixes `seq` (u64 LE) and seals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// One unacknowledged segment on the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    seq: u64,
    pub(super) span: Span,
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
    rtt: RttEstimator,
    max_queued: usize,
    pub(super) slots: [Option<Sent>; MAX_IN_FLIGHT],
    arena: Arena,
    /// The oldest unacknowledged sequence number, or `next_seq` if none is.
    base: u64,
    next_seq: u64,
    /// Payload length of every sequence number in `base..next_seq`, including those
    /// acknowledged selectively, whose slots are already `None`.
    pub(super) window_lens: [usize; MAX_IN_FLIGHT],
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
}

impl fmt::Debug for ReliableSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableSender")
            .field("base", &self.base)
            .field("next_seq", &self.next_seq)
            .field("queued", &self.queued)
            .field("unacked", &self.unacked)
            .field("in_flight", &self.in_flight)
            .field("rtt", &self.rtt)
            .finish_non_exhaustive()
    }
}

impl ReliableSender {
    pub fn new(config: ReliableConfig) -> Self {
        ReliableSender {
            rtt: RttEstimator::new(&config),
            max_queued: config.queue_bound(),
            slots: [None; MAX_IN_FLIGHT],
            arena: Arena::new(config.queue_bound()),
            base: 0,
            next_seq: 0,
            window_lens: [0; MAX_IN_FLIGHT],
            queued: 0,
            unacked: 0,
            in_flight: 0,
        }
    }

    /// Stores a copy of `payload` for retransmission and returns its sequence number (0, 1, 2, ...). The caller transmits the first copy itself right away.
    ///
    /// `WouldBlock` when `queued_bytes() + payload.len()` would exceed the byte bound
    /// or `MAX_IN_FLIGHT` sequence numbers lie between the oldest unacknowledged
    /// segment and the next one; nothing is stored then.
    pub fn push(&mut self, now: Timestamp, payload: &[u8]) -> Result<u64, PushError> {
        if payload.len() > self.max_queued {
            return Err(PushError::ExceedsBound {
                bound: self.max_queued,
            });
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
            due: after(now, self.rtt.rto_nanos()),
            interval: self.rtt.rto_nanos(),
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
            self.rtt.on_sample(rtt);
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

    fn flag_fast_retransmits(&mut self, now: Timestamp, ack: Ack) {
        let rto = self.rtt.rto_nanos();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliable::test_util::*;
    use crate::reliable::{Receive, ReliableReceiver};

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
        assert_eq!(
            sender.push(t(10), &[4; 101]),
            Err(PushError::ExceedsBound { bound: 100 })
        );
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
    fn the_default_bound_holds_a_message_of_the_maximum_payload() {
        use crate::wire::MAX_RELIABLE_PAYLOAD;
        let mut sender = ReliableSender::new(ReliableConfig::default());
        assert!(sender.push(t(0), &[1; MAX_RELIABLE_PAYLOAD]).is_ok());
        let mut receiver = ReliableReceiver::new(ReliableConfig::default());
        assert_eq!(
            receiver.on_segment(1, &[1; MAX_RELIABLE_PAYLOAD]),
            Receive::Buffered
        );
    }

    #[test]
    fn a_huge_configured_bound_is_capped_at_what_can_ever_be_in_flight() {
        use crate::reliable::MAX_QUEUE_BYTES;
        let huge = config(1 << 30);
        assert_eq!(huge.queue_bound(), MAX_QUEUE_BYTES);
        let mut sender = ReliableSender::new(huge);
        assert_eq!(
            sender.push(t(0), &vec![0; MAX_QUEUE_BYTES + 1]),
            Err(PushError::ExceedsBound {
                bound: MAX_QUEUE_BYTES
            })
        );
        assert_eq!(config(512).queue_bound(), 512);
    }

    #[test]
    fn storage_is_allocated_as_payloads_arrive_not_up_front() {
        use crate::reliable::MAX_QUEUE_BYTES;
        let mut sender = ReliableSender::new(config(MAX_QUEUE_BYTES));
        assert_eq!(sender.allocated_bytes(), 0);
        // A steady stream of 100-byte messages, two in flight at a time.
        let mut grown = 0;
        for seq in 0..2_000u64 {
            assert_eq!(sender.push(t(seq), &[seq as u8; 100]), Ok(seq));
            if seq > 0 {
                sender.on_ack(t(seq), ack(seq, 0)).unwrap();
            }
            if seq == 100 {
                grown = sender.allocated_bytes();
            }
        }
        assert!(grown > 0 && grown <= 1024, "{grown}");
        assert_eq!(
            sender.allocated_bytes(),
            grown,
            "steady state allocates no more"
        );
        // A burst up to the bound grows storage to hold it, and no further.
        sender.on_ack(t(3_000), ack(2_000, 0)).unwrap();
        for seq in 2_000..2_064u64 {
            assert!(sender.push(t(3_000), &[1; 1_400]).is_ok(), "{seq}");
        }
        let bound = MAX_QUEUE_BYTES + MAX_QUEUE_BYTES / 2;
        assert!(
            sender.allocated_bytes() <= bound,
            "{}",
            sender.allocated_bytes()
        );
    }

    #[test]
    fn too_large_is_permanent() {
        let mut sender = ReliableSender::new(config(512));
        assert_eq!(
            sender.push(t(0), &[0; 513]),
            Err(PushError::ExceedsBound { bound: 512 })
        );
        assert_eq!(sender.push(t(0), &[0; 512]), Ok(0));
        assert_eq!(
            sender.push(t(0), &[0; 513]),
            Err(PushError::ExceedsBound { bound: 512 })
        );
        let mut zero = ReliableSender::new(config(0));
        assert_eq!(
            zero.push(t(0), &[0]),
            Err(PushError::ExceedsBound { bound: 0 })
        );
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
}
