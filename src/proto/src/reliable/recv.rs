//! The receiving half: the reorder buffer and what the ACK says.

use core::fmt;

use super::storage::{Arena, Span, Spanned};
use super::{slot_index, ReliableConfig, MAX_IN_FLIGHT, WINDOW};
use crate::wire::Ack;

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
pub(super) struct Held {
    seq: u64,
    pub(super) span: Span,
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
    pub(super) slots: [Option<Held>; MAX_IN_FLIGHT],
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
    use crate::reliable::test_util::*;

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
}
