//! `BufferRing`: every packet buffer a driver uses, allocated once.
//!
//! Owns one heap allocation split into a receive region (`recv_slots` slots of
//! `recv_slot_size` bytes, 64 KiB when GRO may coalesce) and a send region
//! (`send_slots` slots of `send_slot_size` bytes). Slots are named by
//! [`SlotIndex`] and handed out by reference; nothing here ever reallocates,
//! so drivers may point iovecs and io_uring provided buffers at the slots for
//! the ring's whole life.
//!
//! It must never allocate after construction and never create a reference
//! wider than one slot: with io_uring the kernel writes other receive slots
//! concurrently, so a `&mut` spanning them would be a data race.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which ring minted a [`SlotIndex`]: unique among the rings of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RingId(u32);

impl RingId {
    fn next() -> RingId {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        RingId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Names one slot of a [`BufferRing`]. Only a ring mints these, and each carries the
/// identity of the ring that minted it: a slot of one ring handed to another is refused
/// before any pointer arithmetic, so safe code can never reach outside a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotIndex {
    ring: RingId,
    slot: u32,
}

impl SlotIndex {
    /// The slot number across the whole ring (receive slots first).
    pub const fn get(self) -> usize {
        self.slot as usize
    }
}

/// How a ring is carved up. Every field must be non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Receive slots: one per datagram (or GRO train) a receive batch can hold.
    pub recv_slots: usize,
    /// Bytes per receive slot: 64 KiB when GRO may coalesce, else the largest datagram.
    pub recv_slot_size: usize,
    /// Send slots: datagrams that can wait for one flush.
    pub send_slots: usize,
    /// Bytes per send slot: the largest datagram sent.
    pub send_slot_size: usize,
}

impl Default for RingLayout {
    /// 64 receive slots (one recvmmsg batch) and 1024 send slots of 2048 bytes.
    fn default() -> Self {
        RingLayout {
            recv_slots: 64,
            recv_slot_size: 2048,
            send_slots: 1024,
            send_slot_size: 2048,
        }
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// A slot count or size was zero.
    Empty,
    /// The total does not fit in memory arithmetic or a slot number exceeds u32.
    TooLarge,
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Empty => f.write_str("buffer ring slot counts and sizes must be non-zero"),
            RingError::TooLarge => f.write_str("buffer ring layout is too large"),
        }
    }
}

impl std::error::Error for RingError {}

impl From<RingError> for std::io::Error {
    fn from(e: RingError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// One allocation holding all receive and send slots.
pub struct BufferRing {
    id: RingId,
    base: NonNull<u8>,
    total: usize,
    layout: RingLayout,
    send_base: usize,
}

// SAFETY: the ring exclusively owns its allocation (like a Box<[u8]>); moving it to
// another thread moves that ownership. Raw pointers handed to the kernel are the
// owning driver's business, and drivers that share slots with the kernel are not
// themselves moved while the kernel holds them (they own the ring and the io_uring).
unsafe impl Send for BufferRing {}

impl BufferRing {
    /// Allocates every slot of `layout` at once, zeroed.
    pub fn new(layout: RingLayout) -> Result<Self, RingError> {
        let RingLayout {
            recv_slots,
            recv_slot_size,
            send_slots,
            send_slot_size,
        } = layout;
        if recv_slots == 0 || recv_slot_size == 0 || send_slots == 0 || send_slot_size == 0 {
            return Err(RingError::Empty);
        }
        let slots = recv_slots
            .checked_add(send_slots)
            .ok_or(RingError::TooLarge)?;
        if u32::try_from(slots).is_err() {
            return Err(RingError::TooLarge);
        }
        let send_base = recv_slots
            .checked_mul(recv_slot_size)
            .ok_or(RingError::TooLarge)?;
        let total = send_slots
            .checked_mul(send_slot_size)
            .and_then(|s| s.checked_add(send_base))
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(RingError::TooLarge)?;
        // Zeroed so no slot ever exposes uninitialised memory; calloc-backed, so
        // untouched pages cost nothing.
        let boxed: Box<[u8]> = vec![0u8; total].into_boxed_slice();
        let raw = Box::into_raw(boxed);
        // SAFETY: Box::into_raw never returns null; the cast keeps the address.
        let base = unsafe { NonNull::new_unchecked(raw.cast::<u8>()) };
        Ok(BufferRing {
            id: RingId::next(),
            base,
            total,
            layout,
            send_base,
        })
    }

    /// How this ring is carved up.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The `n`th receive slot, if `n < recv_slots`.
    pub fn recv_slot(&self, n: usize) -> Option<SlotIndex> {
        (n < self.layout.recv_slots).then_some(SlotIndex {
            ring: self.id,
            slot: n as u32,
        })
    }

    /// The `n`th send slot, if `n < send_slots`.
    pub fn send_slot(&self, n: usize) -> Option<SlotIndex> {
        (n < self.layout.send_slots).then(|| SlotIndex {
            ring: self.id,
            slot: (self.layout.recv_slots + n) as u32,
        })
    }

    /// Byte offset and length of a slot inside the allocation.
    ///
    /// # Panics
    /// If `slot` was minted by another ring: its number may lie outside this one.
    fn span(&self, slot: SlotIndex) -> (usize, usize) {
        assert!(
            slot.ring == self.id,
            "a SlotIndex of another BufferRing was used on this one"
        );
        let i = slot.get();
        if i < self.layout.recv_slots {
            (i * self.layout.recv_slot_size, self.layout.recv_slot_size)
        } else {
            let n = i - self.layout.recv_slots;
            (
                self.send_base + n * self.layout.send_slot_size,
                self.layout.send_slot_size,
            )
        }
    }

    /// Length of one slot in bytes.
    pub fn slot_len(&self, slot: SlotIndex) -> usize {
        self.span(slot).1
    }

    /// Raw start of a slot, for iovecs and provided-buffer registration. The
    /// pointer stays valid (and the slot's address fixed) until the ring drops.
    pub fn slot_ptr(&self, slot: SlotIndex) -> *mut u8 {
        let (off, len) = self.span(slot);
        debug_assert!(off + len <= self.total);
        // SAFETY: span() accepts only a SlotIndex minted by this ring (it checks the
        // ring's identity), whose range lies inside the allocation (checked arithmetic
        // in new()), so the offset stays in bounds.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Shared view of one slot.
    pub fn slot(&self, slot: SlotIndex) -> &[u8] {
        let (_, len) = self.span(slot);
        // SAFETY: the range is inside our allocation, initialised (zeroed at
        // birth), and `&self` prevents a concurrent `&mut` to it from safe code.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(slot), len) }
    }

    /// Exclusive view of one slot, nothing wider.
    pub fn slot_mut(&mut self, slot: SlotIndex) -> &mut [u8] {
        let (_, len) = self.span(slot);
        // SAFETY: in bounds and initialised as above; `&mut self` makes it the
        // only reference into the ring from Rust. Drivers that lend slots to the
        // kernel only call this for slots the kernel has handed back.
        unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(slot), len) }
    }

    /// Total bytes owned by the ring.
    pub fn total_bytes(&self) -> usize {
        self.total
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.total);
        // SAFETY: `base`/`total` came from Box::into_raw of a Box<[u8]> of exactly
        // this length and are released exactly once, here.
        drop(unsafe { Box::from_raw(slice) });
    }
}

impl std::fmt::Debug for BufferRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferRing")
            .field("layout", &self.layout)
            .field("total", &self.total)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RingLayout {
        RingLayout {
            recv_slots: 3,
            recv_slot_size: 100,
            send_slots: 2,
            send_slot_size: 10,
        }
    }

    #[test]
    fn slots_are_disjoint_and_sized_by_region() {
        let mut ring = BufferRing::new(small()).unwrap();
        assert_eq!(ring.total_bytes(), 320);
        let r2 = ring.recv_slot(2).unwrap();
        let s0 = ring.send_slot(0).unwrap();
        let s1 = ring.send_slot(1).unwrap();
        assert_eq!(ring.slot_len(r2), 100);
        assert_eq!(ring.slot_len(s1), 10);
        ring.slot_mut(r2).fill(7);
        ring.slot_mut(s0).fill(8);
        ring.slot_mut(s1).fill(9);
        assert!(ring.slot(r2).iter().all(|&b| b == 7));
        assert!(ring.slot(s0).iter().all(|&b| b == 8));
        assert!(ring.slot(s1).iter().all(|&b| b == 9));
        assert!(ring
            .slot(ring.recv_slot(1).unwrap())
            .iter()
            .all(|&b| b == 0));
        // Adjacent slots touch but do not overlap.
        let gap = ring.slot_ptr(s1) as usize - ring.slot_ptr(s0) as usize;
        assert_eq!(gap, 10);
    }

    #[test]
    fn out_of_range_slots_are_not_minted() {
        let ring = BufferRing::new(small()).unwrap();
        assert!(ring.recv_slot(3).is_none());
        assert!(ring.send_slot(2).is_none());
    }

    #[test]
    #[should_panic(expected = "another BufferRing")]
    fn a_slot_of_another_ring_is_refused_not_read_out_of_bounds() {
        let big = BufferRing::new(small()).unwrap();
        let tiny = BufferRing::new(RingLayout {
            recv_slots: 1,
            recv_slot_size: 1,
            send_slots: 1,
            send_slot_size: 1,
        })
        .unwrap();
        // Slot 4 of the big ring is far past the end of the tiny one.
        let foreign = big.send_slot(1).unwrap();
        let _ = tiny.slot(foreign);
    }

    #[test]
    fn rings_mint_distinct_slots_for_the_same_number() {
        let a = BufferRing::new(small()).unwrap();
        let b = BufferRing::new(small()).unwrap();
        assert_ne!(a.recv_slot(0), b.recv_slot(0));
        assert_eq!(a.recv_slot(0).unwrap().get(), b.recv_slot(0).unwrap().get());
    }

    #[test]
    fn degenerate_layouts_are_refused() {
        let mut l = small();
        l.send_slots = 0;
        assert_eq!(BufferRing::new(l).unwrap_err(), RingError::Empty);
        let l = RingLayout {
            recv_slots: usize::MAX / 2,
            recv_slot_size: 4,
            send_slots: 1,
            send_slot_size: 1,
        };
        assert_eq!(BufferRing::new(l).unwrap_err(), RingError::TooLarge);
    }
}
