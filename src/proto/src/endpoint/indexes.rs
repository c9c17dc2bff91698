//! The session-index table: every index we issue is 32 bits drawn from the endpoint's RNG, and
//! every packet's receiver field is looked up here.
//!
//! Indexes carry no structure (no slot number, no counter), so a blind spoofer who knows a
//! peer's address must guess among 2^32 values to hit a live session, and learns nothing
//! about other sessions from its own. The table is open addressing with linear probing and
//! backward-shift deletion over a fixed, preallocated array at most half full: a lookup, an
//! insert and a removal touch a few adjacent entries and never allocate. Buckets come from a
//! multiplicative hash with a secret odd key, so even an attacker who chose the indexes could
//! not pick where they land; ours are random anyway.

use rand_core::RngCore;

use super::peers::SlotTarget;
use crate::wire::SessionIndex;

/// How many random draws `insert` makes before it gives up (a full table, or an RNG that
/// keeps repeating itself). With the table at most half full each draw succeeds with
/// probability at least 1/2.
const DRAWS: usize = 64;

#[derive(Clone, Copy)]
struct Entry {
    /// The index as issued; 0 marks an empty entry (0 is never a valid index).
    index: u32,
    target: SlotTarget,
}

const EMPTY: Entry = Entry {
    index: 0,
    target: SlotTarget::Free,
};

/// Live session indexes and what each routes to.
pub(super) struct IndexTable {
    entries: Vec<Entry>,
    /// `entries.len() - 1`; the length is a power of two.
    mask: usize,
    /// log2 of `entries.len()`, for the hash's shift.
    bits: u32,
    /// The hash's secret multiplier (odd).
    key: u32,
    len: usize,
    max_len: usize,
}

impl IndexTable {
    /// A table for at most `max_len` live indexes, keyed from `rng`.
    pub(super) fn new(max_len: usize, rng: &mut dyn RngCore) -> IndexTable {
        let max_len = max_len.max(1);
        // At most half full: short probes on hits and on misses alike.
        let capacity = max_len.saturating_mul(2).next_power_of_two().max(2);
        IndexTable {
            entries: vec![EMPTY; capacity],
            mask: capacity - 1,
            bits: capacity.trailing_zeros(),
            key: rng.next_u32() | 1,
            len: 0,
            max_len,
        }
    }

    /// Live indexes.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn bucket(&self, index: u32) -> usize {
        // The top bits of a multiplicative hash are its best mixed.
        let hash = index.wrapping_mul(self.key);
        if self.bits == 0 {
            0
        } else {
            (hash >> (32 - self.bits)) as usize & self.mask
        }
    }

    /// The addresses of the entry where a lookup of `index` starts (its home bucket) and of
    /// the one after it, where most probes that do not end at home end (the table is at most
    /// half full): `[start, end)`, for a cache hint. Pure arithmetic on the table's base,
    /// key and mask: no entry is read, so the hint costs no miss of its own. The range stops
    /// at the table's end rather than wrapping; a probe that wraps is rare.
    pub(super) fn home_range(&self, index: u32) -> (*const u8, *const u8) {
        let home = self.bucket(index);
        let last = (home + 2).min(self.entries.len());
        let base = self.entries.as_ptr();
        (
            base.wrapping_add(home).cast::<u8>(),
            base.wrapping_add(last).cast::<u8>(),
        )
    }

    fn position(&self, index: u32) -> Option<usize> {
        if index == 0 {
            return None;
        }
        let mut at = self.bucket(index);
        // The table is never full, so an empty entry ends every probe.
        for _ in 0..self.entries.len() {
            let entry = self.entries[at];
            if entry.index == index {
                return Some(at);
            }
            if entry.index == 0 {
                return None;
            }
            at = (at + 1) & self.mask;
        }
        None
    }

    /// What `index` routes to, if we issued it and it is live.
    pub(super) fn get(&self, index: SessionIndex) -> Option<SlotTarget> {
        self.position(index.get()).map(|at| self.entries[at].target)
    }

    /// Points a live `index` somewhere else (a handshake's index becomes a key set's).
    pub(super) fn retarget(&mut self, index: SessionIndex, target: SlotTarget) {
        if let Some(at) = self.position(index.get()) {
            self.entries[at].target = target;
        }
    }

    /// Issues a fresh random index routing to `target`; `None` when the table is full.
    pub(super) fn insert(
        &mut self,
        target: SlotTarget,
        rng: &mut dyn RngCore,
    ) -> Option<SessionIndex> {
        if self.len >= self.max_len {
            return None;
        }
        for _ in 0..DRAWS {
            let raw = rng.next_u32();
            if raw == 0 || self.position(raw).is_some() {
                continue;
            }
            let mut at = self.bucket(raw);
            while self.entries[at].index != 0 {
                at = (at + 1) & self.mask;
            }
            self.entries[at] = Entry { index: raw, target };
            self.len += 1;
            return SessionIndex::new(raw);
        }
        None
    }

    /// Retires `index`; a no-op for an index that is not live.
    pub(super) fn remove(&mut self, index: SessionIndex) {
        let Some(mut hole) = self.position(index.get()) else {
            return;
        };
        self.entries[hole] = EMPTY;
        self.len -= 1;
        // Backward-shift deletion: pull later entries of the probe run into the hole when
        // their home bucket does not lie strictly between the hole and where they sit, so
        // no tombstones are needed and every probe still ends at the first empty entry.
        let mut at = (hole + 1) & self.mask;
        loop {
            let entry = self.entries[at];
            if entry.index == 0 {
                return;
            }
            let home = self.bucket(entry.index);
            let distance_home = at.wrapping_sub(home) & self.mask;
            let distance_hole = at.wrapping_sub(hole) & self.mask;
            if distance_home >= distance_hole {
                self.entries[hole] = entry;
                self.entries[at] = EMPTY;
                hole = at;
            }
            at = (at + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PeerId;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    fn target(n: u32) -> SlotTarget {
        SlotTarget::Keys(PeerId {
            slot: n,
            generation: 1,
        })
    }

    #[test]
    fn indexes_are_random_32_bit_values_not_slot_numbers() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut table = IndexTable::new(1_000, &mut rng);
        let issued: Vec<u32> = (0..1_000)
            .map(|n| table.insert(target(n), &mut rng).unwrap().get())
            .collect();
        // With slot numbers in the low 16 bits the first indexes would share them with
        // 0, 1, 2...; random indexes spread over the whole space.
        let high_half = issued.iter().filter(|&&i| i >= 1 << 31).count();
        assert!((400..600).contains(&high_half), "{high_half}");
        let small_low = issued.iter().filter(|&&i| i & 0xffff < 1_000).count();
        assert!(
            small_low < 100,
            "{small_low} indexes look like slot numbers"
        );
        // Removing one and inserting again does not reissue it.
        let first = SessionIndex::new(issued[0]).unwrap();
        table.remove(first);
        let again = table.insert(target(0), &mut rng).unwrap();
        assert_ne!(again, first);
    }

    #[test]
    fn the_table_agrees_with_a_map_through_inserts_and_removals() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut table = IndexTable::new(300, &mut rng);
        let mut model: HashMap<u32, SlotTarget> = HashMap::new();
        let mut live: Vec<SessionIndex> = Vec::new();
        for step in 0..20_000u32 {
            let pick = rng.next_u32() as usize;
            if live.is_empty() || (pick % 3 != 0 && live.len() < 300) {
                let index = table.insert(target(step), &mut rng).unwrap();
                assert!(model.insert(index.get(), target(step)).is_none());
                live.push(index);
            } else {
                let index = live.swap_remove(pick % live.len());
                table.remove(index);
                model.remove(&index.get());
            }
            assert_eq!(table.len(), model.len());
            if step % 97 == 0 {
                for (&raw, &t) in &model {
                    assert_eq!(table.get(SessionIndex::new(raw).unwrap()), Some(t));
                }
                // Misses stay misses.
                for _ in 0..50 {
                    let probe = rng.next_u32();
                    if let Some(index) = SessionIndex::new(probe) {
                        assert_eq!(table.get(index), model.get(&probe).copied());
                    }
                }
            }
        }
    }

    /// The cache hint's range starts at the home bucket, stays inside the table, and holds
    /// the entry of most live indexes: nearly nine in ten for this table filled to its limit
    /// (half full); the rest sit further along their probe run, the price of not reading.
    #[test]
    fn the_home_range_is_inside_the_table_and_holds_most_entries() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut table = IndexTable::new(1_000, &mut rng);
        let issued: Vec<_> = (0..1_000)
            .map(|n| table.insert(target(n), &mut rng).unwrap())
            .collect();
        let base = table.entries.as_ptr_range();
        let (base_start, base_end) = (base.start.cast::<u8>(), base.end.cast::<u8>());
        let mut held = 0;
        for index in &issued {
            let (start, end) = table.home_range(index.get());
            let home = &table.entries[table.bucket(index.get())];
            assert_eq!(start, std::ptr::from_ref(home).cast::<u8>());
            assert!(base_start <= start && start < end && end <= base_end);
            let at = table.position(index.get()).unwrap();
            let entry = std::ptr::from_ref(&table.entries[at]).cast::<u8>();
            if start <= entry && entry < end {
                held += 1;
            }
        }
        assert!(held >= 850, "{held} of 1000");
        // Any value, issued or not, even 0: a range in the table, never a panic.
        for raw in [0, 1, u32::MAX, rng.next_u32()] {
            let (start, end) = table.home_range(raw);
            assert!(base_start <= start && start < end && end <= base_end);
        }
        // A one-entry table: the range is that entry.
        let tiny = IndexTable::new(0, &mut rng);
        let (start, end) = tiny.home_range(7);
        let whole = tiny.entries.as_ptr_range();
        assert!(whole.start.cast::<u8>() <= start && end <= whole.end.cast::<u8>());
    }

    #[test]
    fn a_full_table_refuses_and_a_removal_makes_room() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut table = IndexTable::new(4, &mut rng);
        let issued: Vec<_> = (0..4)
            .map(|n| table.insert(target(n), &mut rng).unwrap())
            .collect();
        assert!(table.insert(target(9), &mut rng).is_none());
        table.remove(issued[2]);
        assert!(table.insert(target(9), &mut rng).is_some());
        table.retarget(issued[0], SlotTarget::Responder(3));
        assert_eq!(table.get(issued[0]), Some(SlotTarget::Responder(3)));
    }
}
