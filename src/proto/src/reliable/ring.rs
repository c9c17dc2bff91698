//! Slots for the sequence numbers in use, indexed by `seq` modulo a capacity that grows
//! with the span actually in use.
//!
//! Owns the records, nothing about what they mean: the sender and receiver decide
//! which sequence numbers may be held. Starting small keeps an idle or slow stream's
//! state small; a stream that keeps more segments in flight grows it once (doubling,
//! up to `MAX_IN_FLIGHT` slots) and keeps it, so the steady state allocates nothing.

use super::MAX_IN_FLIGHT;

/// The slots a stream starts with: enough for a stream of a few hundred messages a
/// second over a LAN, 1.5 KiB to 5 KiB per direction.
pub(super) const INITIAL_SLOTS: usize = 64;

// Lookups mask instead of dividing: every capacity, from the first to the largest, is a
// power of two, and doubling keeps it one.
const _: () = assert!(INITIAL_SLOTS.is_power_of_two() && MAX_IN_FLIGHT.is_power_of_two());

/// A record that knows its own sequence number.
pub(super) trait Sequenced {
    fn seq(&self) -> u64;
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct SeqRing<T> {
    /// A power of two in `INITIAL_SLOTS..=MAX_IN_FLIGHT` long.
    slots: Vec<Option<T>>,
}

impl<T> Default for SeqRing<T> {
    /// No slots and no allocation: only a placeholder while storage moves.
    fn default() -> Self {
        SeqRing { slots: Vec::new() }
    }
}

impl<T: Copy + Sequenced> SeqRing<T> {
    pub(super) fn new() -> Self {
        SeqRing {
            slots: vec![None; INITIAL_SLOTS],
        }
    }

    /// Slots allocated: how far apart two held sequence numbers may be.
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Empties every slot, keeping the capacity grown so far.
    pub(super) fn clear(&mut self) {
        self.slots.fill(None);
    }

    /// The record of `seq`, if that is what its slot holds.
    pub(super) fn get(&self, seq: u64) -> Option<&T> {
        self.slots
            .get(self.index(seq))?
            .as_ref()
            .filter(|held| held.seq() == seq)
    }

    /// The record of `seq`, if that is what its slot holds.
    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let index = self.index(seq);
        self.slots
            .get_mut(index)?
            .as_mut()
            .filter(|held| held.seq() == seq)
    }

    /// Whether the slot `seq` maps to holds nothing (not even another sequence number).
    pub(super) fn is_free(&self, seq: u64) -> bool {
        matches!(self.slots.get(self.index(seq)), Some(None))
    }

    /// Puts `record` in its slot, replacing whatever was there.
    pub(super) fn put(&mut self, record: T) {
        let index = self.index(record.seq());
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(record);
        }
    }

    /// Removes and returns the record of `seq`, if its slot holds that.
    pub(super) fn take(&mut self, seq: u64) -> Option<T> {
        let index = self.index(seq);
        let slot = self.slots.get_mut(index)?;
        let record = slot.filter(|held| held.seq() == seq)?;
        *slot = None;
        Some(record)
    }

    /// Every record held, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// The slots, for the arena to move spans in.
    pub(super) fn as_mut_slice(&mut self) -> &mut [Option<T>] {
        &mut self.slots
    }

    /// Grows (doubling, at most to `MAX_IN_FLIGHT` slots) until two sequence numbers
    /// `distance` apart map to different slots, or the capacity is at its maximum.
    /// Allocates only the first time a stream reaches a new span.
    pub(super) fn make_room_for(&mut self, distance: u64) {
        let mut capacity = self.slots.len();
        while distance >= capacity as u64 && capacity < MAX_IN_FLIGHT {
            capacity = capacity
                .saturating_mul(2)
                .clamp(INITIAL_SLOTS, MAX_IN_FLIGHT);
        }
        if capacity == self.slots.len() {
            return;
        }
        let mut grown = vec![None; capacity];
        for record in self.slots.iter().flatten() {
            if let Some(slot) = grown.get_mut(Self::index_in(capacity, record.seq())) {
                *slot = Some(*record);
            }
        }
        self.slots = grown;
    }

    fn index(&self, seq: u64) -> usize {
        Self::index_in(self.slots.len(), seq)
    }

    fn index_in(capacity: usize, seq: u64) -> usize {
        // `capacity` is a power of two, so the mask is `seq % capacity` without a division
        // on every lookup; truncating `seq` first keeps its low bits, all the mask needs.
        // (The empty placeholder's mask keeps everything: every lookup then misses.)
        (seq as usize) & capacity.wrapping_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Record(u64);

    impl Sequenced for Record {
        fn seq(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn growing_keeps_every_record_findable_by_its_sequence_number() {
        let mut ring = SeqRing::new();
        let held: Vec<u64> = (1_000..1_000 + INITIAL_SLOTS as u64).step_by(3).collect();
        for &seq in &held {
            ring.put(Record(seq));
        }
        assert!(
            !ring.is_free(1_000 + INITIAL_SLOTS as u64),
            "shares seq 1000's slot"
        );
        ring.make_room_for(INITIAL_SLOTS as u64 - 1);
        assert_eq!(ring.capacity(), INITIAL_SLOTS, "already fits");
        ring.make_room_for(300);
        assert_eq!(ring.capacity(), 512);
        for &seq in &held {
            assert_eq!(ring.get(seq), Some(&Record(seq)));
        }
        assert!(ring.is_free(1_000 + INITIAL_SLOTS as u64));
        assert_eq!(ring.iter().count(), held.len());
        ring.make_room_for(u64::MAX);
        assert_eq!(ring.capacity(), MAX_IN_FLIGHT, "never beyond the maximum");
        assert_eq!(ring.take(1_003), Some(Record(1_003)));
        assert_eq!(ring.take(1_003), None);
        assert_eq!(ring.get(1_003 + MAX_IN_FLIGHT as u64), None);
        ring.clear();
        assert_eq!((ring.iter().count(), ring.capacity()), (0, MAX_IN_FLIGHT));
    }
}
