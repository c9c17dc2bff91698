//! The byte arenas the sender and receiver keep payloads in.
//!
//! Owns bytes and the spans into them, nothing about sequence numbers: the owner
//! enforces how many live bytes there may be.

use core::fmt;

use super::ring::INITIAL_SLOTS;
use super::MAX_IN_FLIGHT;

/// Where a payload lives in an `Arena`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    pub(super) off: usize,
    pub(super) len: usize,
}

impl Span {
    pub(super) fn end(self) -> usize {
        self.off.saturating_add(self.len)
    }
}

/// A slot record that owns a span of an arena.
pub(super) trait Spanned {
    fn span(&self) -> Span;
    fn span_mut(&mut self) -> &mut Span;
}

/// A byte buffer holding at most `max_live` live bytes (the owner enforces that
/// bound), appended at the tail and compacted on demand.
///
/// Allocated as it is used: it starts empty and grows (by doubling) only when
/// compacting would not free enough room, up to `max_live * 3 / 2`. That slack keeps
/// appends amortised O(1): at the cap a compaction frees at least a third of the
/// buffer. Once grown it keeps its size, so a steady state allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Arena {
    buf: Vec<u8>,
    /// The most `buf` may grow to.
    limit: usize,
    /// One past the last byte ever appended since the last compaction or reset.
    tail: usize,
}

/// Small updates, the size the first allocation is made for.
const SMALL_UPDATE: usize = 128;

/// The first allocation (capped at the arena's limit): twice the first slots' worth of
/// small updates plus the one being stored, so that a stream of them that keeps within
/// those slots never fills more than half the buffer (`grow_for`'s rule) and reaches its
/// steady state, and stops allocating, with its first message. Idle peers, and peers
/// that never send Reliable data, allocate nothing.
const MIN_ALLOCATION: usize = 2 * (INITIAL_SLOTS + 1) * SMALL_UPDATE;

impl Arena {
    pub(super) fn new(max_live: usize) -> Self {
        Arena {
            buf: Vec::new(),
            limit: max_live.saturating_add(max_live / 2),
            tail: 0,
        }
    }

    /// Copies `data` in and returns where it went. The caller guarantees that the live
    /// spans in `slots` plus `data` are at most `max_live`, so growing or compacting
    /// always makes room; `None` means that guarantee was broken and nothing was stored.
    pub(super) fn store<T: Spanned>(
        &mut self,
        data: &[u8],
        slots: &mut [Option<T>],
    ) -> Option<Span> {
        if self.buf.len().saturating_sub(self.tail) < data.len() {
            let live: usize = slots.iter().flatten().map(|slot| slot.span().len).sum();
            self.grow_for(live.saturating_add(data.len()), data.len(), slots.len());
            if self.buf.len().saturating_sub(self.tail) < data.len() {
                self.compact(slots);
            }
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

    /// Grows the buffer when `needed` live bytes would fill more than half of it (so a
    /// compaction would free too little), capped at `limit`: at least doubling, and at
    /// once to twice a full window (`slots`, the owner's slots now) of messages of
    /// `message` bytes, so that a stream of one message size grows once per window size
    /// it reaches, not step by step.
    fn grow_for(&mut self, needed: usize, message: usize, slots: usize) {
        let len = self.buf.len();
        if len >= self.limit || needed.saturating_mul(2) <= len {
            return;
        }
        let full_window = slots
            .saturating_add(1)
            .saturating_mul(message)
            .saturating_mul(2);
        let target = len
            .saturating_mul(2)
            .max(needed.saturating_mul(2))
            .max(full_window)
            .max(MIN_ALLOCATION)
            .min(self.limit);
        // `reserve_exact`, so the allocation is what the bound says and not a Vec's
        // own doubling beyond it.
        self.buf.reserve_exact(target - len);
        self.buf.resize(target, 0);
    }

    /// Makes the first allocation now, if none was made: the owner calls it on its first
    /// Reliable traffic so that allocation never waits for a later, rarer event (the first
    /// reordered segment) in the middle of a steady stream.
    pub(super) fn reserve_first(&mut self) {
        if self.buf.is_empty() {
            let target = MIN_ALLOCATION.min(self.limit);
            self.buf.reserve_exact(target);
            self.buf.resize(target, 0);
        }
    }

    /// Bytes allocated for payloads.
    pub(super) fn allocated(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn get(&self, span: Span) -> &[u8] {
        // Spans are only ever made by `store` and moved by `compact`, both in bounds.
        self.buf.get(span.off..span.end()).unwrap_or(&[])
    }

    /// Forgets every byte: only valid once no slot holds a span. Avoids compactions
    /// in the common case where the queue drains completely between bursts.
    pub(super) fn reset(&mut self) {
        self.tail = 0;
    }

    /// Slides every live span to the front, keeping their relative order, so the
    /// free space is one run at the tail. Never inlined: its 8 KiB frame would otherwise be
    /// stack-probed on every message `Bundle::push` writes, Realtime ones included.
    #[inline(never)]
    fn compact<T: Spanned>(&mut self, slots: &mut [Option<T>]) {
        // On the stack, 8 KiB at most: compaction must not allocate either.
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
            .field("allocated", &self.buf.len())
            .field("limit", &self.limit)
            .field("tail", &self.tail)
            .finish()
    }
}
