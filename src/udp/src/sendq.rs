//! The queue of committed outgoing datagrams every driver shares, and the
//! rule for grouping them into GSO runs.
//!
//! Owns only metadata (destination and length per send slot, in commit order);
//! the bytes live in the send region of the driver's `BufferRing`, slot `k`
//! holding the `k`th queued datagram. It must never allocate after construction
//! nor reorder datagrams.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use super::ring::{BufferRing, SlotIndex};
use super::{sys, SendStats, WouldBlockPolicy};

/// Largest UDP payload of one IPv4 datagram; a GSO send is one such datagram
/// before segmentation, so a run's total must fit.
pub const GSO_MAX_BYTES: usize = 65_507;

/// One committed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSend {
    /// Where the datagram goes.
    pub dst: SocketAddr,
    /// How many bytes of the slot it uses.
    pub len: usize,
}

/// Why a commit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitError {
    /// The length exceeds the slot (the caller wrote past what it was given?).
    TooLong {
        /// Bytes the datagram needs.
        len: usize,
        /// Bytes a slot holds.
        capacity: usize,
    },
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::TooLong { len, capacity } => {
                write!(
                    f,
                    "datagram of {len} bytes exceeds the {capacity}-byte send slot"
                )
            }
        }
    }
}

impl std::error::Error for CommitError {}

pub(crate) struct SendQueue {
    metas: Box<[PendingSend]>,
    len: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        SendQueue {
            metas: vec![
                PendingSend {
                    dst: unspecified,
                    len: 0
                };
                capacity
            ]
            .into_boxed_slice(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn pending(&self) -> &[PendingSend] {
        self.metas.get(..self.len).unwrap_or(&[])
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Hands out the next free send slot of `ring`, or None when full.
    pub fn next_slot<'a>(&'a mut self, ring: &'a mut BufferRing) -> Option<SendSlot<'a>> {
        let index = ring.send_slot(self.len)?;
        if self.len >= self.metas.len() {
            return None;
        }
        Some(SendSlot {
            buf: ring.slot_mut(index),
            queue: self,
        })
    }
}

/// One outgoing datagram being written in place. Write the packet into
/// [`buf`](Self::buf) and [`commit`](Self::commit) it; dropping the slot without
/// committing queues nothing.
pub struct SendSlot<'a> {
    buf: &'a mut [u8],
    queue: &'a mut SendQueue,
}

impl SendSlot<'_> {
    /// The slot's bytes (`max_datagram` long).
    pub fn buf(&mut self) -> &mut [u8] {
        self.buf
    }

    /// Bytes one slot holds.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Queues the first `len` bytes of the slot for `dst`.
    pub fn commit(self, dst: SocketAddr, len: usize) -> Result<(), CommitError> {
        if len > self.buf.len() {
            return Err(CommitError::TooLong {
                len,
                capacity: self.buf.len(),
            });
        }
        let q = self.queue;
        if let Some(meta) = q.metas.get_mut(q.len) {
            *meta = PendingSend { dst, len };
            q.len += 1;
        }
        Ok(())
    }
}

/// The slot holding queued datagram `k` (callers iterate `0..queue.len()`).
pub(crate) fn send_slot_of(ring: &BufferRing, k: usize) -> Option<SlotIndex> {
    ring.send_slot(k)
}

/// Length of the GSO run starting at `start`: consecutive datagrams to one
/// destination with the size of the first, where the last may be shorter (and
/// then ends the run). Bounded by `max_segments` and by [`GSO_MAX_BYTES`]. A
/// zero-length datagram never joins a run: it would vanish in the concatenation.
pub fn gso_run(pending: &[PendingSend], start: usize, max_segments: usize) -> usize {
    let Some(first) = pending.get(start) else {
        return 0;
    };
    if first.len == 0 {
        return 1;
    }
    let limit = max_segments.min(GSO_MAX_BYTES / first.len).max(1);
    let mut n = 1;
    while n < limit {
        let Some(next) = pending.get(start + n) else {
            break;
        };
        if next.dst != first.dst || next.len > first.len || next.len == 0 {
            break;
        }
        n += 1;
        if next.len < first.len {
            break;
        }
    }
    n
}

/// Per-flush bookkeeping for the EAGAIN and ENOBUFS policies, shared by the drivers.
pub(crate) struct Retry {
    nobufs: u32,
    max_nobufs: u32,
    policy: WouldBlockPolicy,
    deadline: Option<Instant>,
}

impl Retry {
    pub fn new(policy: WouldBlockPolicy, max_nobufs: u32) -> Self {
        Retry {
            nobufs: 0,
            max_nobufs,
            policy,
            deadline: None,
        }
    }

    /// A datagram went out: the ENOBUFS budget is per datagram.
    pub fn progress(&mut self) {
        self.nobufs = 0;
    }

    /// EAGAIN: waits for writability within the policy's per-flush budget.
    /// Ok(true): retry; Ok(false): drop the rest of the queue.
    pub fn would_block(&mut self, fd: RawFd, stats: &mut SendStats) -> io::Result<bool> {
        let WouldBlockPolicy::Wait(budget) = self.policy else {
            return Ok(false);
        };
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now + budget);
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Ok(false);
        }
        stats.syscalls += 1;
        // Ready or not, one more attempt is cheap; the deadline bounds the loop.
        sys::poll_fd(fd, libc::POLLOUT, Some(left))?;
        Ok(true)
    }

    /// ENOBUFS: true to retry the same datagram, false once the budget is spent
    /// (the budget then restarts for the next datagram).
    pub fn nobufs(&mut self) -> bool {
        if self.nobufs < self.max_nobufs {
            self.nobufs += 1;
            // The device queue drains on its own; give it a moment without sleeping.
            std::thread::yield_now();
            true
        } else {
            self.nobufs = 0;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(port: u16, len: usize) -> PendingSend {
        PendingSend {
            dst: SocketAddr::from(([127, 0, 0, 1], port)),
            len,
        }
    }

    #[test]
    fn runs_group_equal_sizes_to_one_destination() {
        let q = [p(1, 100), p(1, 100), p(1, 100), p(2, 100), p(2, 100)];
        assert_eq!(gso_run(&q, 0, 64), 3);
        assert_eq!(gso_run(&q, 3, 64), 2);
        assert_eq!(gso_run(&q, 5, 64), 0);
    }

    #[test]
    fn a_shorter_datagram_ends_the_run_a_longer_one_starts_a_new_one() {
        let q = [p(1, 100), p(1, 100), p(1, 40), p(1, 40), p(1, 200)];
        assert_eq!(gso_run(&q, 0, 64), 3);
        assert_eq!(gso_run(&q, 3, 64), 1);
        let q = [p(1, 100), p(1, 200)];
        assert_eq!(gso_run(&q, 0, 64), 1);
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let q = vec![p(1, 10); 100];
        assert_eq!(gso_run(&q, 0, 64), 64);
        assert_eq!(gso_run(&q, 64, 64), 36);
        let q = vec![p(1, 1400); 100];
        assert_eq!(gso_run(&q, 0, 64), GSO_MAX_BYTES / 1400);
        let q = vec![p(1, 60_000); 3];
        assert_eq!(gso_run(&q, 0, 64), 1);
    }

    #[test]
    fn empty_datagrams_never_coalesce() {
        let q = [p(1, 0), p(1, 0), p(1, 5), p(1, 0)];
        assert_eq!(gso_run(&q, 0, 64), 1);
        assert_eq!(gso_run(&q, 2, 64), 1);
    }

    #[test]
    fn slots_commit_in_order_and_refuse_overlong_lengths() {
        let mut ring = BufferRing::new(crate::ring::RingLayout {
            recv_slots: 1,
            recv_slot_size: 4,
            send_slots: 2,
            send_slot_size: 8,
        })
        .unwrap();
        let mut q = SendQueue::new(2);
        let mut s = q.next_slot(&mut ring).unwrap();
        s.buf()[..3].copy_from_slice(b"abc");
        assert_eq!(
            s.commit(p(1, 0).dst, 9),
            Err(CommitError::TooLong {
                len: 9,
                capacity: 8
            })
        );
        assert_eq!(q.len(), 0);
        let mut s = q.next_slot(&mut ring).unwrap();
        s.buf()[..3].copy_from_slice(b"abc");
        s.commit(p(1, 0).dst, 3).unwrap();
        q.next_slot(&mut ring)
            .unwrap()
            .commit(p(2, 0).dst, 8)
            .unwrap();
        assert!(q.next_slot(&mut ring).is_none());
        assert_eq!(q.pending(), &[p(1, 3), p(2, 8)]);
        assert_eq!(&ring.slot(send_slot_of(&ring, 0).unwrap())[..3], b"abc");
        q.clear();
        assert!(q.next_slot(&mut ring).is_some());
    }
}
