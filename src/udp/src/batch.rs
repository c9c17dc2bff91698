//! Preallocated `msghdr` arrays for batched sends, shared by the mmsg and
//! io_uring drivers.
//!
//! Owns the kernel-facing description of one send round: a message per GSO run
//! (or per datagram), each with its destination, its iovecs pointing straight
//! into the ring's send slots, and a UDP_SEGMENT cmsg when it carries several
//! datagrams; plus a per-datagram `done` flag so retries resend exactly what is
//! left, in order. It must never allocate after construction, copy payloads,
//! or let a message outlive the ring whose slots its iovecs point into.

use super::ring::BufferRing;
use super::sendq::{gso_run, PendingSend};
use super::sys::{self, ControlBuf, RawAddr};
use super::SendStats;

/// The datagrams `[start, start + count)` of the queue, sent as one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: usize,
    pub count: usize,
}

impl Run {
    pub fn gso(&self) -> bool {
        self.count > 1
    }
}

pub(crate) struct SendBatch {
    hdrs: Box<[libc::mmsghdr]>,
    names: Box<[RawAddr]>,
    ctrl: Box<[ControlBuf]>,
    runs: Box<[Run]>,
    /// One iovec per send slot, base fixed at construction.
    iovs: Box<[libc::iovec]>,
    /// Per queued datagram: sent or dropped (and counted) already.
    done: Box<[bool]>,
    built: usize,
}

// SAFETY: the raw pointers inside the hdrs/iovecs point only into heap memory
// owned by this batch or by the driver's ring that owns it alongside; moving the
// driver to another thread moves all of it together, and nothing is shared.
unsafe impl Send for SendBatch {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for
    // which all-zero bytes (null pointers, zero lengths) are a valid value.
    unsafe { std::mem::zeroed() }
}

impl SendBatch {
    /// `msgs` messages per round; iovecs for every send slot of `ring`.
    pub fn new(msgs: usize, ring: &BufferRing) -> Self {
        let slots = ring.layout().send_slots;
        let iovs: Box<[libc::iovec]> = (0..slots)
            .map(|k| libc::iovec {
                iov_base: ring
                    .send_slot(k)
                    .map_or(std::ptr::null_mut(), |s| ring.slot_ptr(s).cast()),
                iov_len: 0,
            })
            .collect();
        SendBatch {
            hdrs: (0..msgs).map(|_| zeroed_mmsghdr()).collect(),
            names: vec![RawAddr::zeroed(); msgs].into_boxed_slice(),
            ctrl: vec![ControlBuf::zeroed(); msgs].into_boxed_slice(),
            runs: vec![Run::default(); msgs].into_boxed_slice(),
            iovs,
            done: vec![false; slots].into_boxed_slice(),
            built: 0,
        }
    }

    /// Marks every queued datagram as not yet sent (start of a flush).
    pub fn reset(&mut self, queued: usize) {
        if let Some(d) = self.done.get_mut(..queued) {
            d.fill(false);
        }
        self.built = 0;
    }

    /// Index of the first datagram at or after `from` still to be sent.
    pub fn first_pending(&self, from: usize, queued: usize) -> usize {
        (from..queued)
            .find(|&k| !self.done.get(k).copied().unwrap_or(true))
            .unwrap_or(queued)
    }

    /// Fills up to `limit` messages (at most the preallocated count) from the
    /// unsent datagrams at or after `from`. With `gso_segments`, consecutive
    /// unsent datagrams forming a GSO run share one message. Destinations the
    /// socket cannot reach (IPv6 on an IPv4 socket) are dropped and counted here.
    /// Returns how many messages were built.
    pub fn build(
        &mut self,
        pending: &[PendingSend],
        from: usize,
        limit: usize,
        gso_segments: Option<usize>,
        v6_socket: bool,
        stats: &mut SendStats,
    ) -> usize {
        let queued = pending.len().min(self.done.len());
        let cap = limit.min(self.hdrs.len());
        let iov_base = self.iovs.as_mut_ptr();
        let mut m = 0;
        let mut k = from;
        while m < cap && k < queued {
            if self.done.get(k).copied().unwrap_or(true) {
                k += 1;
                continue;
            }
            let Some(first) = pending.get(k) else { break };
            let (Some(hdr), Some(name), Some(ctrl), Some(run_slot)) = (
                self.hdrs.get_mut(m),
                self.names.get_mut(m),
                self.ctrl.get_mut(m),
                self.runs.get_mut(m),
            ) else {
                break;
            };
            let Some(name_len) = sys::encode_addr(&first.dst, v6_socket, name) else {
                if let Some(d) = self.done.get_mut(k) {
                    *d = true;
                }
                stats.dropped_error += 1;
                k += 1;
                continue;
            };
            let mut count = gso_segments.map_or(1, |max| gso_run(&pending[..queued], k, max));
            // A retry round may have sent part of a former run already.
            if let Some(hole) =
                (k + 1..k + count).find(|&j| self.done.get(j).copied().unwrap_or(true))
            {
                count = hole - k;
            }
            for (j, meta) in pending.iter().enumerate().skip(k).take(count) {
                if let Some(iov) = self.iovs.get_mut(j) {
                    iov.iov_len = meta.len;
                }
            }
            let h = &mut hdr.msg_hdr;
            h.msg_name = name.bytes.as_mut_ptr().cast();
            h.msg_namelen = name_len;
            // SAFETY: k < queued <= iovs.len(), so the pointer stays inside the
            // iovec array; `count` more entries exist because k + count <= queued.
            h.msg_iov = unsafe { iov_base.add(k) };
            h.msg_iovlen = count;
            if count > 1 {
                let seg = u16::try_from(first.len).unwrap_or(u16::MAX);
                h.msg_controllen = sys::write_gso_control(ctrl, seg);
                h.msg_control = ctrl.bytes.as_mut_ptr().cast();
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            h.msg_flags = 0;
            hdr.msg_len = 0;
            *run_slot = Run { start: k, count };
            m += 1;
            k += count;
        }
        self.built = m;
        m
    }

    /// The messages of the last `build`.
    pub fn hdrs_mut(&mut self) -> &mut [libc::mmsghdr] {
        let n = self.built;
        self.hdrs.get_mut(..n).unwrap_or(&mut [])
    }

    pub fn run(&self, msg: usize) -> Option<Run> {
        self.runs.get(..self.built)?.get(msg).copied()
    }

    #[cfg(test)]
    pub fn built(&self) -> usize {
        self.built
    }

    fn mark_done(&mut self, run: Run) {
        if let Some(d) = self.done.get_mut(run.start..run.start + run.count) {
            d.fill(true);
        }
    }

    /// Message `msg` went out: count it.
    pub fn sent(&mut self, msg: usize, stats: &mut SendStats) {
        if let Some(run) = self.run(msg) {
            self.mark_done(run);
            stats.datagrams_sent += run.count;
            if run.gso() {
                stats.gso_batches += 1;
            }
        }
    }

    /// Message `msg` is given up; returns how many datagrams that drops (the
    /// caller adds them to the right counter).
    pub fn give_up(&mut self, msg: usize) -> usize {
        match self.run(msg) {
            Some(run) => {
                self.mark_done(run);
                run.count
            }
            None => 0,
        }
    }

    /// Gives up every datagram not yet done; returns how many.
    pub fn give_up_all(&mut self, queued: usize) -> usize {
        let mut n = 0;
        for d in self.done.iter_mut().take(queued) {
            if !*d {
                *d = true;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingLayout;
    use std::net::SocketAddr;

    fn p(port: u16, len: usize) -> PendingSend {
        PendingSend {
            dst: SocketAddr::from(([127, 0, 0, 1], port)),
            len,
        }
    }

    fn ring() -> BufferRing {
        BufferRing::new(RingLayout {
            recv_slots: 1,
            recv_slot_size: 8,
            send_slots: 8,
            send_slot_size: 100,
        })
        .unwrap()
    }

    #[test]
    fn builds_gso_runs_and_single_messages() {
        let r = ring();
        let mut b = SendBatch::new(4, &r);
        let q = [p(1, 10), p(1, 10), p(1, 5), p(2, 10), p(2, 20)];
        b.reset(q.len());
        let mut stats = SendStats::default();
        assert_eq!(b.build(&q, 0, 4, Some(64), false, &mut stats), 3);
        assert_eq!(b.run(0), Some(Run { start: 0, count: 3 }));
        assert_eq!(b.run(1), Some(Run { start: 3, count: 1 }));
        assert_eq!(b.run(2), Some(Run { start: 4, count: 1 }));
        let h = &b.hdrs_mut()[0].msg_hdr;
        assert_eq!(h.msg_iovlen, 3);
        assert!(h.msg_controllen > 0);
        let h = &b.hdrs_mut()[1].msg_hdr;
        assert_eq!(h.msg_iovlen, 1);
        assert_eq!(h.msg_controllen, 0);

        b.build(&q, 0, 4, None, false, &mut stats);
        assert_eq!(b.built(), 4);
        assert!((0..4).all(|m| b.run(m).unwrap().count == 1));
    }

    #[test]
    fn retries_skip_what_is_done_and_count_everything_once() {
        let r = ring();
        let mut b = SendBatch::new(8, &r);
        let q = [p(1, 10); 6];
        b.reset(q.len());
        let mut stats = SendStats::default();
        b.build(&q, 0, 8, None, false, &mut stats);
        b.sent(0, &mut stats);
        b.sent(2, &mut stats);
        assert_eq!(b.first_pending(0, q.len()), 1);
        // Runs never span a datagram that already went out.
        assert_eq!(b.build(&q, 0, 8, Some(64), false, &mut stats), 2);
        assert_eq!(b.run(0), Some(Run { start: 1, count: 1 }));
        assert_eq!(b.run(1), Some(Run { start: 3, count: 3 }));
        b.sent(1, &mut stats);
        assert_eq!(b.give_up_all(q.len()), 1);
        assert_eq!(stats.datagrams_sent, 5);
        assert_eq!(stats.gso_batches, 1);
        assert_eq!(b.first_pending(0, q.len()), q.len());
    }

    #[test]
    fn unroutable_destinations_are_dropped_and_counted() {
        let r = ring();
        let mut b = SendBatch::new(4, &r);
        let v6 = PendingSend {
            dst: "[::1]:5".parse().unwrap(),
            len: 3,
        };
        let q = [v6, p(1, 3)];
        b.reset(2);
        let mut stats = SendStats::default();
        assert_eq!(b.build(&q, 0, 4, Some(64), false, &mut stats), 1);
        assert_eq!(stats.dropped_error, 1);
        assert_eq!(b.run(0), Some(Run { start: 1, count: 1 }));
    }
}
