//! `MmsgDriver`: `recvmmsg`/`sendmmsg` batches with UDP GRO and GSO.
//!
//! Owns the preallocated receive `mmsghdr`/iovec/address/cmsg arrays (one per
//! receive slot of its `BufferRing`) and a `SendBatch` for sends. Receives are
//! always `MSG_DONTWAIT`; waiting is a separate `ppoll`, because recvmmsg's own
//! timeout is only checked between datagrams and can block forever.
//! It must never allocate or log per packet, and never hand out a truncated
//! datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::batch::SendBatch;
use super::ring::{BufferRing, RingLayout};
use super::sendq::{Retry, SendQueue};
use super::socket::SocketCaps;
use super::sys::{
    self, classify_recv_error, classify_send_error, ControlBuf, RawAddr, RecvFailure, SendFailure,
    ADDR_CAP, CONTROL_CAP,
};
use super::{
    deliver, header_of, leading_headers, look_ahead, Datagram, Driver, DriverConfig, Flow, Handed,
    KernelTime, NextHeader, RecvStats, SendSlot, SendStats, Wait, Waker,
};

/// Batches of datagrams per system call with recvmmsg/sendmmsg, GRO and GSO.
pub struct MmsgDriver {
    socket: UdpSocket,
    caps: SocketCaps,
    cfg: DriverConfig,
    ring: BufferRing,
    recv_hdrs: Box<[libc::mmsghdr]>,
    // The arrays below are only read or written by the kernel through the
    // pointers in recv_hdrs; they are kept here to own the memory.
    _recv_iovs: Box<[libc::iovec]>,
    recv_names: Box<[RawAddr]>,
    recv_ctrl: Box<[ControlBuf]>,
    recv_control_len: usize,
    queue: SendQueue,
    batch: SendBatch,
    gso: bool,
    fake_gso_failure: bool,
    waker: Option<Arc<Waker>>,
    /// Where the last batch stopped when its callback paused: (message, messages
    /// received, GRO segment). Those slots are not reused until handed over.
    held: Option<(usize, usize, usize)>,
}

// SAFETY: the raw pointers in the receive arrays point only into heap memory
// owned by this driver (its ring and boxed arrays), which moves with it; the
// kernel touches them only during this driver's own synchronous syscalls.
unsafe impl Send for MmsgDriver {}

impl MmsgDriver {
    /// Wraps an opened socket and allocates every buffer and header array it will use.
    pub fn new(socket: UdpSocket, caps: SocketCaps, cfg: &DriverConfig) -> io::Result<Self> {
        cfg.validate()?;
        let ring = BufferRing::new(RingLayout {
            recv_slots: cfg.batch,
            recv_slot_size: cfg.recv_payload(&caps),
            send_slots: cfg.send_slots,
            send_slot_size: cfg.max_datagram,
        })?;
        let n = cfg.batch;
        let mut iovs: Box<[libc::iovec]> = (0..n)
            .map(|i| {
                let slot = ring.recv_slot(i);
                libc::iovec {
                    iov_base: slot.map_or(std::ptr::null_mut(), |s| ring.slot_ptr(s).cast()),
                    iov_len: slot.map_or(0, |s| ring.slot_len(s)),
                }
            })
            .collect();
        let mut names = vec![RawAddr::zeroed(); n].into_boxed_slice();
        let mut ctrl = vec![ControlBuf::zeroed(); n].into_boxed_slice();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..n)
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        for (((h, iov), name), c) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(names.iter_mut())
            .zip(ctrl.iter_mut())
        {
            h.msg_hdr.msg_name = name.bytes.as_mut_ptr().cast();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = c.bytes.as_mut_ptr().cast();
        }
        let recv_control_len = if caps.gro || caps.timestamps {
            CONTROL_CAP
        } else {
            0
        };
        let batch = SendBatch::new(cfg.batch, &ring);
        Ok(MmsgDriver {
            gso: caps.gso,
            fake_gso_failure: caps.force.gso_send,
            socket,
            caps,
            cfg: *cfg,
            ring,
            recv_hdrs: hdrs,
            _recv_iovs: iovs,
            recv_names: names,
            recv_ctrl: ctrl,
            recv_control_len,
            queue: SendQueue::new(cfg.send_slots),
            batch,
            waker: None,
            held: None,
        })
    }

    /// One non-blocking recvmmsg. Ok(None) when nothing was queued (or EINTR).
    fn recv_some(&mut self, stats: &mut RecvStats) -> io::Result<Option<usize>> {
        for h in self.recv_hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = ADDR_CAP as libc::socklen_t;
            h.msg_hdr.msg_controllen = self.recv_control_len;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        stats.syscalls += 1;
        let vlen = self.recv_hdrs.len() as libc::c_uint;
        // SAFETY: recv_hdrs holds `vlen` initialised mmsghdrs whose name, iovec
        // and control pointers reference live buffers (names, iovs, ctrl, ring
        // slots) of at least the advertised lengths, all owned by self and not
        // borrowed elsewhere during the call. A null timeout is allowed.
        let rc = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.recv_hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc >= 0 {
            return Ok(Some(rc as usize));
        }
        let e = sys::last_error();
        match classify_recv_error(sys::errno_of(&e)) {
            RecvFailure::Empty | RecvFailure::Interrupted => Ok(None),
            RecvFailure::Absorbed => {
                stats.errors += 1;
                Ok(Some(0))
            }
            RecvFailure::Fatal => Err(e),
        }
    }

    /// The payload and control bytes of message `i` of the last recvmmsg (`n` received).
    fn message(&self, i: usize, n: usize) -> Option<(&[u8], &[u8])> {
        if i >= n {
            return None;
        }
        let h = self.recv_hdrs.get(i)?;
        let data = self
            .ring
            .slot(self.ring.recv_slot(i)?)
            .get(..h.msg_len as usize)?;
        let control = self
            .recv_ctrl
            .get(i)?
            .bytes
            .get(..h.msg_hdr.msg_controllen)?;
        Some((data, control))
    }

    /// The headers of the two datagrams handed over after message `i`'s (of `n`): the next
    /// message's first two when the kernel coalesced it (GRO), else its first and the
    /// first of the message after.
    fn headers_after(&self, i: usize, n: usize) -> [Option<NextHeader>; 2] {
        let next = self
            .message(i + 1, n)
            .map_or([None, None], |(data, control)| {
                leading_headers(data, sys::parse_control(control).gro_segment)
            });
        look_ahead(next, || {
            self.message(i + 2, n).map(|(data, _)| header_of(data))
        })
    }

    /// Hands over messages `from..n` of the last recvmmsg, the first from GRO
    /// segment `skip`; remembers where it stopped if the callback paused.
    fn deliver_batch(
        &mut self,
        (from, n, mut skip): (usize, usize, usize),
        stats: &mut RecvStats,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) {
        for i in from..n {
            let at = std::mem::take(&mut skip);
            let (Some(h), Some(slot)) = (self.recv_hdrs.get(i), self.ring.recv_slot(i)) else {
                break;
            };
            let flags = h.msg_hdr.msg_flags;
            let len = h.msg_len as usize;
            let name_len = h.msg_hdr.msg_namelen as usize;
            let control_len = h.msg_hdr.msg_controllen;
            if flags & libc::MSG_TRUNC != 0 {
                stats.truncated += 1;
                continue;
            }
            let src = self
                .recv_names
                .get(i)
                .and_then(|n| sys::decode_addr(n.bytes.get(..name_len)?));
            let Some(src) = src else {
                stats.errors += 1;
                continue;
            };
            let meta = self
                .recv_ctrl
                .get(i)
                .and_then(|c| c.bytes.get(..control_len))
                .map(sys::parse_control)
                .unwrap_or_default();
            let after = self.headers_after(i, n);
            let Some(data) = self.ring.slot_mut(slot).get_mut(..len) else {
                stats.truncated += 1;
                continue;
            };
            let handed = deliver(
                data,
                meta.gro_segment,
                self.cfg.max_datagram,
                src,
                meta.timestamp_ns.map(KernelTime::from_nanos),
                at,
                after,
                stats,
                on_datagram,
            );
            match handed {
                Handed::All => {}
                Handed::PausedAfter => {
                    self.held = (i + 1 < n).then_some((i + 1, n, 0));
                    return;
                }
                Handed::PausedWithin(segment) => {
                    self.held = Some((i, n, segment));
                    return;
                }
            }
        }
    }

    fn disable_gso(&mut self, stats: &mut SendStats) {
        self.gso = false;
        self.caps.gso = false;
        self.fake_gso_failure = false;
        stats.gso_disabled_now = true;
        tracing::warn!(
            "UDP GSO refused at send time on {}; sending without it from now on",
            self.caps.local_addr
        );
    }

    /// Sends the first `count` built messages. Ok(n) messages went out, Err(errno).
    fn sendmmsg(&mut self, count: usize, stats: &mut SendStats) -> Result<usize, i32> {
        let hdrs = self.batch.hdrs_mut();
        let count = count.min(hdrs.len());
        stats.syscalls += 1;
        // SAFETY: the first `count` mmsghdrs were just built by SendBatch::build:
        // names, cmsgs and iovecs point into buffers owned by this driver (the
        // batch and the ring's send slots), with lengths within those buffers.
        let rc = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            Err(sys::errno_of(&sys::last_error()))
        } else {
            Ok(rc as usize)
        }
    }
}

impl Driver for MmsgDriver {
    fn name(&self) -> &'static str {
        "mmsg"
    }

    fn local_addr(&self) -> SocketAddr {
        self.caps.local_addr
    }

    fn caps(&self) -> &SocketCaps {
        &self.caps
    }

    fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn recv_until(
        &mut self,
        wait: Wait,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) -> io::Result<RecvStats> {
        let mut stats = RecvStats::default();
        // What a paused batch left goes first, alone: a recvmmsg now would
        // overwrite the slots it still sits in.
        if let Some(held) = self.held.take() {
            self.deliver_batch(held, &mut stats, on_datagram);
            return Ok(stats);
        }
        // Try first: when data is queued (the busy case) no poll is needed.
        if let Some(n) = self.recv_some(&mut stats)? {
            self.deliver_batch((0, n, 0), &mut stats, on_datagram);
            return Ok(stats);
        }
        let timeout = match wait {
            Wait::NoWait => return Ok(stats),
            Wait::Timeout(d) => Some(d),
            Wait::Forever => None,
        };
        stats.syscalls += 1;
        let waker = self.waker.as_ref().map(|w| w.raw_fd());
        let (readable, woken) = sys::poll_read_two(self.socket.as_raw_fd(), waker, timeout)?;
        stats.woken |= woken;
        if readable {
            if let Some(n) = self.recv_some(&mut stats)? {
                self.deliver_batch((0, n, 0), &mut stats, on_datagram);
            }
        }
        Ok(stats)
    }

    fn send_buffer(&mut self) -> Option<SendSlot<'_>> {
        self.queue.next_slot(&mut self.ring)
    }

    fn pending_sends(&self) -> usize {
        self.queue.len()
    }

    fn flush(&mut self) -> io::Result<SendStats> {
        let mut stats = SendStats::default();
        let queued = self.queue.len();
        if queued == 0 {
            return Ok(stats);
        }
        let fd = self.socket.as_raw_fd();
        let mut retry = Retry::new(self.cfg.would_block, self.cfg.nobufs_retries);
        self.batch.reset(queued);
        let mut cursor = 0;
        loop {
            cursor = self.batch.first_pending(cursor, queued);
            if cursor >= queued {
                break;
            }
            let gso = self
                .gso
                .then_some(self.cfg.gso_max_segments.min(self.caps.gso_max_segments));
            let built = self.batch.build(
                self.queue.pending(),
                cursor,
                self.cfg.batch,
                gso,
                self.caps.ipv6,
                &mut stats,
            );
            if built == 0 {
                continue;
            }
            // Test hook: the first GSO message "fails" as a refusing NIC would.
            let mut count = built;
            let mut faked = None;
            if self.fake_gso_failure {
                match (0..built).find(|&m| self.batch.run(m).is_some_and(|r| r.gso())) {
                    Some(0) => faked = Some(libc::EIO),
                    Some(m) => count = m,
                    None => {}
                }
            }
            let result = match faked {
                Some(errno) => Err(errno),
                None => self.sendmmsg(count, &mut stats),
            };
            match result {
                Ok(sent) => {
                    for m in 0..sent {
                        self.batch.sent(m, &mut stats);
                    }
                    retry.progress();
                }
                Err(errno) => {
                    let used_gso = self.batch.run(0).is_some_and(|r| r.gso());
                    match classify_send_error(errno, used_gso) {
                        SendFailure::Interrupted => {}
                        SendFailure::WouldBlock => {
                            if !retry.would_block(fd, &mut stats)? {
                                stats.dropped_would_block += self.batch.give_up_all(queued);
                            }
                        }
                        SendFailure::NoBufs => {
                            if !retry.nobufs() {
                                stats.dropped_nobufs += self.batch.give_up(0);
                            }
                        }
                        SendFailure::GsoRefused => self.disable_gso(&mut stats),
                        SendFailure::Fatal => {
                            self.queue.clear();
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                        SendFailure::DropDatagram => {
                            stats.dropped_error += self.batch.give_up(0);
                        }
                    }
                }
            }
        }
        self.queue.clear();
        Ok(stats)
    }

    fn gso_active(&self) -> bool {
        self.gso
    }

    fn set_waker(&mut self, waker: Option<Arc<Waker>>) {
        self.waker = waker;
    }
}
