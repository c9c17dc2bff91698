//! The receiving half: the reorder buffer, what the ACK says, and when it is due.
//!
//! Owns out-of-order payloads and in-order ones the application has not popped.
//! It decides what an ACK contains and how long it may wait (`ack_deadline`), never
//! whether it is sent: that is the endpoint's policy.

use core::fmt;

use super::ring::{SeqRing, Sequenced};
use super::storage::{Arena, Span, Spanned};
use super::{nanos, ReliableConfig, WINDOW};
use crate::time::Timestamp;
use crate::wire::Ack;

/// What to do with an arriving segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// seq is the next expected and nothing waits before it: deliver the payload you hold now (in place), then drain `pop_ready`.
    Deliver,
    /// Stored: either out of order (it comes out of `pop_ready` once the gap fills), or
    /// in order behind messages still waiting for `pop_ready`.
    Buffered,
    /// already delivered or already buffered: drop it (still acknowledge).
    Duplicate,
    /// Beyond the slots (1,024 above the oldest undelivered message) or no room in the
    /// reorder buffer: dropped, the sender will retransmit.
    NoRoom,
}

/// One payload held by the receiver: out of order, or in order and waiting for `pop_ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    seq: u64,
    pub(super) span: Span,
}

impl Sequenced for Held {
    fn seq(&self) -> u64 {
        self.seq
    }
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
///
/// Two points split the sequence space: `next_pop` (the oldest message not yet handed
/// to the application) and `next_expected` (the oldest not yet received, what the ACK
/// says). Everything in `next_pop..next_expected` is held and ready; what is held above
/// `next_expected` waits for a gap. Only the second kind counts against the reorder
/// budget (`max_reorder`): a message leaves it the moment its gap fills, not when the
/// application gets round to popping it, because the ACK has already told the sender
/// it arrived and the sender has reused that room for new data.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq))]
pub struct ReliableReceiver {
    /// Out-of-order bytes this receiver accepts: the window a sender must respect.
    max_reorder: usize,
    /// Every byte held, ready or not: `2 * max_reorder`, room for one window waiting
    /// for a gap and one window the application has not popped yet.
    max_held: usize,
    /// Holds sequence numbers in `next_pop..=next_pop + 1024`; the two ends share a
    /// slot, so whichever arrives second is refused.
    pub(super) slots: SeqRing<Held>,
    arena: Arena,
    /// Segments held above `next_expected`, waiting for a gap to fill.
    out_of_order: usize,
    next_pop: u64,
    next_expected: u64,
    /// Bytes held above `next_expected` (`<= max_reorder`).
    reorder_bytes: usize,
    /// Bytes held in `next_pop..next_expected`.
    ready_bytes: usize,
    /// What arrived since the last ACK was taken, if anything did.
    pending_ack: Option<PendingAck>,
    /// How long an ACK for in-order data may wait for more, in ns.
    ack_delay: u64,
    /// Segments covered by a pending ACK that make it due at once (at least 1).
    ack_after_segments: usize,
}

/// Arrivals not yet acknowledged, coalesced into the next ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingAck {
    /// When the ACK should be sent at the latest.
    due: Timestamp,
    /// Payload bytes of the segments it will acknowledge.
    bytes: usize,
    /// Segments it will acknowledge (duplicates included).
    segments: usize,
}

impl fmt::Debug for ReliableReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableReceiver")
            .field("next_pop", &self.next_pop)
            .field("next_expected", &self.next_expected)
            .field("reorder_bytes", &self.reorder_bytes)
            .field("ready_bytes", &self.ready_bytes)
            .field("pending_ack", &self.pending_ack)
            .finish_non_exhaustive()
    }
}

impl ReliableReceiver {
    pub fn new(config: ReliableConfig) -> Self {
        let max_held = config.queue_bound().saturating_mul(2);
        Self::with_storage(config, SeqRing::new(), Arena::new(max_held))
    }

    fn with_storage(config: ReliableConfig, slots: SeqRing<Held>, arena: Arena) -> Self {
        let max_reorder = config.queue_bound();
        ReliableReceiver {
            max_reorder,
            max_held: max_reorder.saturating_mul(2),
            slots,
            arena,
            out_of_order: 0,
            next_pop: 0,
            next_expected: 0,
            reorder_bytes: 0,
            ready_bytes: 0,
            pending_ack: None,
            ack_delay: nanos(config.ack_delay.min(super::MAX_ACK_DELAY)),
            ack_after_segments: config.ack_after_segments.max(1),
        }
    }

    /// Starts the stream again from sequence 0 as `new(config)` would, but keeps the
    /// storage already allocated (slots and payload buffer): a receiver reused for
    /// another session (the endpoint's pool) then allocates nothing for its first segments.
    pub fn restart(&mut self, config: ReliableConfig) {
        let mut slots = core::mem::take(&mut self.slots);
        let mut arena = core::mem::replace(&mut self.arena, Arena::new(0));
        slots.clear();
        // No slot holds a span any more, so every byte of the kept buffer is free.
        arena.reset();
        *self = Self::with_storage(config, slots, arena);
    }

    /// Takes in segment `seq`, arrived at `now`, and notes that the next ACK must cover it.
    pub fn on_segment(&mut self, now: Timestamp, seq: u64, payload: &[u8]) -> Receive {
        self.arena.reserve_first();
        let was_expected = self.next_expected;
        let outcome = self.accept(seq, payload);
        let urgent = self.ack_is_urgent(seq, was_expected, outcome);
        self.note_for_ack(now, payload.len(), urgent);
        outcome
    }

    fn accept(&mut self, seq: u64, payload: &[u8]) -> Receive {
        // At or above `next_expected` only out-of-order segments are held, so a stream
        // arriving in order never looks at its slots (one cache miss each, per segment).
        if seq < self.next_expected || (self.out_of_order > 0 && self.holds(seq)) {
            return Receive::Duplicate;
        }
        // A sender never assigns u64::MAX, so refusing it keeps `next_expected` from
        // overflowing (and a second delivery of the same number impossible).
        let Some(after_seq) = seq.checked_add(1) else {
            return Receive::NoRoom;
        };
        let in_order = seq == self.next_expected;
        if in_order && self.next_pop == seq {
            self.next_pop = after_seq;
            self.next_expected = after_seq;
            if self.out_of_order > 0 {
                self.release_filled_gap();
            }
            return Receive::Deliver;
        }
        if !self.store(seq, payload, in_order) {
            return Receive::NoRoom;
        }
        if in_order {
            self.next_expected = after_seq;
            self.release_filled_gap();
        }
        Receive::Buffered
    }

    /// Whether `pop_ready` has a message.
    pub fn has_ready(&self) -> bool {
        self.next_pop < self.next_expected
    }

    /// The next in-order payload waiting for the application (after a `Deliver`, or an
    /// in-order `Buffered`). The slice stays valid until the next &mut call. None when
    /// the next seq has not arrived.
    pub fn pop_ready(&mut self) -> Option<&[u8]> {
        if !self.has_ready() {
            return None;
        }
        let next = self.next_pop;
        let held = self.slots.take(next)?;
        // `next < next_expected`, so this cannot overflow.
        self.next_pop = next.saturating_add(1);
        self.ready_bytes = self.ready_bytes.saturating_sub(held.span.len);
        if !self.has_ready() && self.out_of_order == 0 {
            // Only forgets the tail position: the bytes returned below stay intact
            // until the next &mut call, which the borrow already forbids.
            self.arena.reset();
        }
        Some(self.arena.get(held.span))
    }

    /// The ACK describing what has arrived: `next_expected` counts the messages only
    /// waiting for `pop_ready` as received, so the sender need not resend them, and the
    /// bitmap names what is held above it.
    pub fn ack(&self) -> Ack {
        let mut ack = Ack::cumulative(self.next_expected);
        if self.out_of_order > 0 {
            for held in self.slots.iter() {
                // Held above `next_expected` means out of order; bit 0 is one above it.
                if let Some(bit) = held.seq.checked_sub(ack.next_expected.saturating_add(1)) {
                    ack.selective.insert(bit);
                }
            }
        }
        ack
    }

    /// Whether anything arrived since the last ACK was taken (duplicates included: the
    /// sender may have lost our ACK).
    pub fn ack_pending(&self) -> bool {
        self.pending_ack.is_some()
    }

    /// When the pending ACK should go out at the latest: at once (the arrival time)
    /// when the sender needs to hear soon (a hole, a duplicate, a gap just filled,
    /// half the receive window or `ack_after_segments` segments unacknowledged), else
    /// `ack_delay` after the first in-order arrival it covers. None when no ACK is pending.
    pub fn ack_deadline(&self) -> Option<Timestamp> {
        self.pending_ack.map(|pending| pending.due)
    }

    /// One ACK covering everything received so far, if anything arrived since the
    /// last one; clears the pending state. Call once per received batch (or at
    /// `ack_deadline`) instead of once per segment.
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.pending_ack.take()?;
        Some(self.ack())
    }

    /// Clears the pending state after the caller sent `ack()` itself.
    pub fn ack_sent(&mut self) {
        self.pending_ack = None;
    }

    /// Every payload byte held: out of order, and in order waiting for `pop_ready`.
    pub fn buffered_bytes(&self) -> usize {
        self.reorder_bytes + self.ready_bytes
    }

    /// Bytes allocated to store payloads: grows with use up to a bound set by the
    /// configuration (`3 * max_queued_bytes`), and is kept once grown.
    pub fn allocated_bytes(&self) -> usize {
        self.arena.allocated()
    }

    /// The receive window to advertise to the peer (in its handshake): the bytes this
    /// receiver buffers out of order. A sender that keeps `window_bytes()` within it
    /// is never refused for lack of room while the application keeps popping.
    pub fn receive_window(&self) -> usize {
        self.max_reorder
    }

    /// Bytes held out of order, counted against the reorder budget (`receive_window`).
    pub fn reorder_bytes(&self) -> usize {
        self.reorder_bytes
    }

    /// The lowest sequence number not yet received (the ACK's cumulative point).
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// The next sequence number `pop_ready` (or a `Deliver`) hands to the application.
    pub fn next_delivery(&self) -> u64 {
        self.next_pop
    }

    /// Copies `payload` in for `seq`. Out of order it must fit the reorder budget; in
    /// order it only needs room in the whole store.
    fn store(&mut self, seq: u64, payload: &[u8], in_order: bool) -> bool {
        let distance = seq - self.next_pop;
        if distance > WINDOW {
            return false;
        }
        let reorder_full = payload.len() > self.max_reorder.saturating_sub(self.reorder_bytes);
        let held_full = payload.len() > self.max_held.saturating_sub(self.buffered_bytes());
        if held_full || (!in_order && reorder_full) {
            return false;
        }
        self.slots.make_room_for(distance);
        if !self.slots.is_free(seq) {
            // Occupied by `next_pop` itself (ready but not yet popped), 1,024 below.
            return false;
        }
        let Some(span) = self.arena.store(payload, self.slots.as_mut_slice()) else {
            return false;
        };
        self.slots.put(Held { seq, span });
        if in_order {
            self.ready_bytes += payload.len();
        } else {
            self.out_of_order += 1;
            self.reorder_bytes += payload.len();
        }
        true
    }

    /// After `next_expected` moved: what was held right above it is in order now, so
    /// it moves from the reorder budget to the ready bytes at once.
    fn release_filled_gap(&mut self) {
        while let Some(held) = self.slots.get(self.next_expected) {
            let len = held.span.len;
            self.out_of_order = self.out_of_order.saturating_sub(1);
            self.reorder_bytes = self.reorder_bytes.saturating_sub(len);
            self.ready_bytes += len;
            match self.next_expected.checked_add(1) {
                Some(next) => self.next_expected = next,
                None => break,
            }
        }
    }

    /// Whether the ACK for this arrival should not wait: anything but in-order data
    /// with no hole above it tells the sender something it acts on (fast retransmit,
    /// stopping a retransmission).
    fn ack_is_urgent(&self, seq: u64, was_expected: u64, outcome: Receive) -> bool {
        let in_order =
            seq == was_expected && matches!(outcome, Receive::Deliver | Receive::Buffered);
        let gap_filled = self.next_expected > seq.saturating_add(1);
        !in_order || gap_filled || self.out_of_order > 0
    }

    fn note_for_ack(&mut self, now: Timestamp, len: usize, urgent: bool) {
        let delayed = delayed_ack_due(now, self.ack_delay);
        let mut pending = self.pending_ack.unwrap_or(PendingAck {
            due: delayed,
            bytes: 0,
            segments: 0,
        });
        pending.bytes = pending.bytes.saturating_add(len);
        pending.segments = pending.segments.saturating_add(1);
        // Half a window or `ack_after_segments` unacknowledged: the sender may be about
        // to stall on its byte window or its sequence numbers.
        let enough =
            pending.bytes >= self.max_reorder / 2 || pending.segments >= self.ack_after_segments;
        if urgent || enough {
            pending.due = pending.due.min(now);
        }
        self.pending_ack = Some(pending);
    }

    fn holds(&self, seq: u64) -> bool {
        self.slots.get(seq).is_some()
    }
}

/// When an ACK for in-order data that arrived at `now` is due at the latest: `ack_delay`
/// later, rounded down to a multiple of a quarter of the delay. The ACKs of many peers then
/// fall due together and leave in one send batch after one wake-up, instead of one by one
/// as each peer's delay runs out. Never later than `now + ack_delay`, never before `now`.
fn delayed_ack_due(now: Timestamp, ack_delay: u64) -> Timestamp {
    let grain = (ack_delay / 4).max(1);
    let latest = now.as_nanos().saturating_add(ack_delay);
    Timestamp::from_nanos((latest - latest % grain).max(now.as_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliable::test_util::*;
    use core::time::Duration;

    #[test]
    fn receiver_orders_buffers_and_rejects_duplicates() {
        let mut receiver = ReliableReceiver::new(config(512));
        assert!(!receiver.ack_pending());
        assert_eq!(receiver.ack(), ack(0, 0));
        assert_eq!(receiver.on_segment(t(0), 2, b"two"), Receive::Buffered);
        assert!(receiver.ack_pending());
        receiver.ack_sent();
        assert!(!receiver.ack_pending());
        assert_eq!(receiver.on_segment(t(0), 2, b"two"), Receive::Duplicate);
        assert!(receiver.ack_pending(), "a duplicate still needs an ACK");
        assert_eq!(receiver.on_segment(t(0), 4, b"four"), Receive::Buffered);
        assert_eq!(receiver.buffered_bytes(), 7);
        // Bit i = next_expected + 1 + i: seqs 2 and 4 are bits 1 and 3.
        assert_eq!(receiver.ack(), ack(0, 0b1010));
        assert_eq!(receiver.pop_ready(), None, "seq 0 still missing");
        assert_eq!(receiver.on_segment(t(0), 0, b"zero"), Receive::Deliver);
        assert_eq!(receiver.next_expected(), 1);
        assert_eq!(receiver.pop_ready(), None, "seq 1 still missing");
        assert_eq!(receiver.ack(), ack(1, 0b101));
        assert_eq!(receiver.on_segment(t(0), 0, b"zero"), Receive::Duplicate);
        assert_eq!(receiver.on_segment(t(0), 1, b"one"), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&b"two"[..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.next_expected(), 3);
        assert_eq!(receiver.on_segment(t(0), 3, b"three"), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&b"four"[..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.buffered_bytes(), 0);
        assert_eq!(receiver.ack(), ack(5, 0));
        assert_eq!(receiver.on_segment(t(0), 4, b"four"), Receive::Duplicate);
    }

    #[test]
    fn receiver_window_and_byte_bound() {
        let mut receiver = ReliableReceiver::new(config(10));
        // next_expected + 1024 is the last in the window (bit 1023).
        assert_eq!(receiver.on_segment(t(0), 1025, b""), Receive::NoRoom);
        assert_eq!(receiver.on_segment(t(0), u64::MAX, b""), Receive::NoRoom);
        assert_eq!(receiver.on_segment(t(0), 1024, b"x"), Receive::Buffered);
        assert_eq!(receiver.ack(), ack_bits(0, &[1023]));
        assert_eq!(receiver.ack().encode().as_bytes().len(), 136);
        assert_eq!(receiver.on_segment(t(0), 5, &[0; 9]), Receive::Buffered);
        assert_eq!(receiver.on_segment(t(0), 6, b"y"), Receive::NoRoom);
        assert_eq!(receiver.buffered_bytes(), 10);
        // In-order segments need no buffer space, however large.
        assert_eq!(receiver.on_segment(t(0), 0, &[0; 100]), Receive::Deliver);
        // Seq 0 and 1024 share a slot; seq 0 was delivered, so 1024 stays buffered.
        assert_eq!(receiver.ack(), ack_bits(1, &[3, 1022]));
    }

    #[test]
    fn ack_counts_ready_but_unpopped_segments_cumulatively() {
        let mut receiver = ReliableReceiver::new(config(512));
        assert_eq!(receiver.on_segment(t(0), 1, b"1"), Receive::Buffered);
        assert_eq!(receiver.on_segment(t(0), 3, b"3"), Receive::Buffered);
        assert_eq!(receiver.on_segment(t(0), 0, b"0"), Receive::Deliver);
        // 1 waits for pop_ready; the ACK already counts it.
        assert_eq!((receiver.next_delivery(), receiver.next_expected()), (1, 2));
        assert_eq!(receiver.ack(), ack(2, 0b1));
        // 1025 would share seq 1's slot while 1 is unpopped.
        assert_eq!(receiver.on_segment(t(0), 1025, b"1025"), Receive::NoRoom);
        assert_eq!(receiver.on_segment(t(0), 1, b"1"), Receive::Duplicate);
        assert_eq!(receiver.pop_ready(), Some(&b"1"[..]));
        assert_eq!(receiver.on_segment(t(0), 1025, b"1025"), Receive::Buffered);
    }

    #[test]
    fn receiver_arena_compacts_without_losing_bytes() {
        // A 40-byte arena for 20 buffered bytes. Seq 60 stays buffered throughout, so
        // the arena never empties and its tail wraps by compaction every few rounds.
        let mut receiver = ReliableReceiver::new(config(20));
        let payload = |seq: u64| [seq as u8 + 1; 5];
        assert_eq!(
            receiver.on_segment(t(0), 60, &payload(60)),
            Receive::Buffered
        );
        for round in 0..19u64 {
            let base = 3 * round;
            for seq in [base + 2, base + 1] {
                assert_eq!(
                    receiver.on_segment(t(0), seq, &payload(seq)),
                    Receive::Buffered
                );
            }
            assert_eq!(
                receiver.on_segment(t(0), base, &payload(base)),
                Receive::Deliver
            );
            for seq in [base + 1, base + 2] {
                assert_eq!(receiver.pop_ready(), Some(&payload(seq)[..]), "{seq}");
            }
            assert_eq!(receiver.pop_ready(), None);
        }
        assert_eq!(receiver.next_expected(), 57);
        assert_eq!(receiver.buffered_bytes(), 5);
        assert_eq!(receiver.ack(), ack(57, 1 << 2));
        for seq in 57..60 {
            assert_eq!(
                receiver.on_segment(t(0), seq, &payload(seq)),
                Receive::Deliver
            );
        }
        assert_eq!(
            receiver.on_segment(t(0), 60, &payload(60)),
            Receive::Duplicate
        );
        assert_eq!(receiver.ack(), ack(61, 0));
        assert_eq!(receiver.pop_ready(), Some(&payload(60)[..]));
        assert_eq!(receiver.buffered_bytes(), 0);
    }

    #[test]
    fn in_order_bytes_leave_the_reorder_budget_as_soon_as_the_gap_fills() {
        // The scenario seen through a lossy proxy: seq 1 waits behind lost seq 0; the
        // retransmitted 0 fills the gap, the ACK already counts 1 as received, and the
        // sender's next 300 bytes (seq 2) arrive before the application popped seq 1.
        let mut receiver = ReliableReceiver::new(config(512));
        assert_eq!(receiver.on_segment(t(0), 1, &[1; 300]), Receive::Buffered);
        assert_eq!(receiver.on_segment(t(0), 0, &[0; 10]), Receive::Deliver);
        assert_eq!(receiver.ack(), ack(2, 0));
        assert_eq!(receiver.on_segment(t(0), 2, &[2; 300]), Receive::Buffered);
        assert_eq!(receiver.ack(), ack(3, 0));
        // Out-of-order bytes still have the whole reorder budget, and no more.
        assert_eq!(receiver.on_segment(t(0), 4, &[4; 300]), Receive::Buffered);
        assert_eq!(receiver.on_segment(t(0), 5, &[5; 300]), Receive::NoRoom);
        assert_eq!(receiver.pop_ready(), Some(&[1u8; 300][..]));
        assert_eq!(receiver.pop_ready(), Some(&[2u8; 300][..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.on_segment(t(0), 3, &[3; 300]), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&[4u8; 300][..]));
        assert_eq!(receiver.buffered_bytes(), 0);
        assert_eq!(receiver.ack(), ack(5, 0));
    }

    #[test]
    fn reorder_storage_is_allocated_as_segments_arrive_not_up_front() {
        use crate::reliable::MAX_QUEUE_BYTES;
        let mut receiver = ReliableReceiver::new(config(MAX_QUEUE_BYTES));
        assert_eq!(receiver.allocated_bytes(), 0);
        // In-order segments are delivered in place; the first Reliable segment makes the
        // one first allocation, so a later reordered segment does not allocate mid-stream.
        for seq in 0..100 {
            assert_eq!(
                receiver.on_segment(t(0), seq, &[1; 1_000]),
                Receive::Deliver
            );
        }
        let first = receiver.allocated_bytes();
        assert!(first > 0 && first <= 17 * 1024, "{first}");
        // A steady trickle of one reordered pair at a time stays small.
        for seq in (100..2_000u64).step_by(2) {
            assert_eq!(
                receiver.on_segment(t(0), seq + 1, &[2; 100]),
                Receive::Buffered
            );
            assert_eq!(receiver.on_segment(t(0), seq, &[2; 100]), Receive::Deliver);
            assert_eq!(receiver.pop_ready(), Some(&[2u8; 100][..]));
        }
        let grown = receiver.allocated_bytes();
        assert!(grown > 0 && grown <= 17 * 1024, "{grown}");
        // Everything it may ever hold stays within three times the bound.
        for seq in 2_001..2_065u64 {
            receiver.on_segment(t(0), seq, &[3; 1_412]);
        }
        assert!(receiver.allocated_bytes() <= 3 * MAX_QUEUE_BYTES);
    }

    #[test]
    fn one_ack_covers_everything_since_the_last_and_in_order_data_may_wait() {
        let cfg = ReliableConfig {
            ack_delay: Duration::from_millis(2),
            ..config(4_096)
        };
        let mut receiver = ReliableReceiver::new(cfg);
        assert!(!receiver.ack_pending());
        assert_eq!((receiver.ack_deadline(), receiver.take_ack()), (None, None));
        // A batch of in-order segments: one ACK, which may wait for the delay.
        for seq in 0..5 {
            assert_eq!(receiver.on_segment(t(10), seq, b"x"), Receive::Deliver);
        }
        assert!(receiver.ack_pending());
        assert_eq!(receiver.ack_deadline(), Some(t(12)));
        assert_eq!(receiver.on_segment(t(11), 5, b"x"), Receive::Deliver);
        assert_eq!(
            receiver.ack_deadline(),
            Some(t(12)),
            "the first arrival sets it"
        );
        assert_eq!(receiver.take_ack(), Some(ack(6, 0)));
        assert!(!receiver.ack_pending());
        assert_eq!(receiver.take_ack(), None, "nothing new, no ACK");
        // A hole: the sender needs the selective bits soon, for fast retransmit.
        assert_eq!(receiver.on_segment(t(20), 7, b"x"), Receive::Buffered);
        assert_eq!(receiver.ack_deadline(), Some(t(20)));
        assert_eq!(receiver.take_ack(), Some(ack(6, 0b1)));
        // The gap filled: the sender should stop retransmitting at once.
        assert_eq!(receiver.on_segment(t(30), 6, b"x"), Receive::Deliver);
        assert_eq!(receiver.ack_deadline(), Some(t(30)));
        assert_eq!(receiver.take_ack(), Some(ack(8, 0)));
        assert_eq!(receiver.pop_ready(), Some(&b"x"[..]));
        // A duplicate: our last ACK was probably lost.
        assert_eq!(receiver.on_segment(t(40), 2, b"x"), Receive::Duplicate);
        assert_eq!(receiver.ack_deadline(), Some(t(40)));
        receiver.ack_sent();
        assert!(!receiver.ack_pending());
        // Half the receive window unacknowledged: do not make the sender stall.
        assert_eq!(receiver.on_segment(t(50), 8, &[0; 1_000]), Receive::Deliver);
        assert_eq!(receiver.ack_deadline(), Some(t(52)));
        assert_eq!(receiver.on_segment(t(51), 9, &[0; 1_048]), Receive::Deliver);
        assert_eq!(receiver.ack_deadline(), Some(t(51)));
    }

    #[test]
    fn enough_unacknowledged_segments_make_the_ack_due_at_once() {
        let cfg = ReliableConfig {
            ack_delay: Duration::from_millis(5),
            ack_after_segments: 3,
            ..config(64 * 1024)
        };
        let mut receiver = ReliableReceiver::new(cfg);
        for seq in 0..2 {
            assert_eq!(receiver.on_segment(t(10), seq, b"x"), Receive::Deliver);
        }
        assert_eq!(receiver.ack_deadline(), Some(t(15)));
        assert_eq!(receiver.on_segment(t(11), 2, b"x"), Receive::Deliver);
        assert_eq!(receiver.ack_deadline(), Some(t(11)), "the third segment");
        assert_eq!(receiver.take_ack(), Some(ack(3, 0)));
        // The count starts again after each ACK. 17 ms is not on the 1.25 ms grid of a
        // 5 ms delay: the deadline is the grid point before it.
        assert_eq!(receiver.on_segment(t(12), 3, b"x"), Receive::Deliver);
        assert_eq!(
            receiver.ack_deadline(),
            Some(Timestamp::from_nanos(16_250_000))
        );
        // Zero is treated as one: every segment is acknowledged at once.
        let mut eager = ReliableReceiver::new(ReliableConfig {
            ack_after_segments: 0,
            ..cfg
        });
        assert_eq!(eager.on_segment(t(20), 0, b"x"), Receive::Deliver);
        assert_eq!(eager.ack_deadline(), Some(t(20)));
    }

    #[test]
    fn delayed_acks_of_different_peers_fall_due_together_never_late() {
        let delay = 1_000_000;
        let mut dues = std::collections::BTreeSet::new();
        for arrival in (0..3_000_000u64).step_by(7_919) {
            let now = Timestamp::from_nanos(arrival);
            let due = delayed_ack_due(now, delay).as_nanos();
            assert!(due >= arrival && due <= arrival + delay, "{arrival}: {due}");
            assert!(due > arrival + delay - delay / 4, "{arrival}: {due}");
            assert_eq!(due % (delay / 4), 0, "{arrival}: {due}");
            dues.insert(due);
        }
        // 379 arrivals over 3 ms, their ACKs due at 12 instants (1 ms to 3.75 ms).
        assert_eq!(dues.len(), 12);
        // A delay of zero, or one too short to divide, is never rounded before `now`.
        assert_eq!(delayed_ack_due(t(5), 0), t(5));
        assert_eq!(
            delayed_ack_due(Timestamp::from_nanos(7), 3),
            Timestamp::from_nanos(10)
        );
        assert_eq!(
            delayed_ack_due(Timestamp::from_nanos(u64::MAX - 1), delay),
            Timestamp::from_nanos(u64::MAX - 1)
        );
    }

    #[test]
    fn an_ack_delay_above_the_protocol_bound_is_treated_as_the_bound() {
        // Senders allow for MAX_ACK_DELAY and no more: a longer wait would make them
        // retransmit what arrived.
        let mut receiver = ReliableReceiver::new(ReliableConfig {
            ack_delay: Duration::from_secs(1),
            ..config(64 * 1024)
        });
        assert_eq!(receiver.on_segment(t(0), 0, b"x"), Receive::Deliver);
        let bound = u64::try_from(super::super::MAX_ACK_DELAY.as_nanos()).unwrap();
        assert_eq!(receiver.ack_deadline(), Some(Timestamp::from_nanos(bound)));
        // The default is the bound itself.
        let mut default = ReliableReceiver::new(config(64 * 1024));
        assert_eq!(default.on_segment(t(0), 0, b"x"), Receive::Deliver);
        assert_eq!(default.ack_deadline(), Some(Timestamp::from_nanos(bound)));
    }
}
