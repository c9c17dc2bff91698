//! `UringDriver`: io_uring multishot receive into a provided buffer ring, and
//! batched `SendMsg` submissions (one submit per flush).
//!
//! Owns two rings: a receive ring carrying one armed multishot `RecvMsg` whose
//! buffers come from a registered provided-buffer ring (the receive region of
//! the driver's `BufferRing`), and a send ring for `SendMsg` SQEs built from a
//! `SendBatch`. Keeping them apart means a flush never meets receive
//! completions and a receive never meets send completions.
//! It must never let the kernel write into a slot Rust currently borrows: a
//! receive slot is only read between its CQE and its recycling, and on drop
//! every request is cancelled synchronously before any memory is released.
//! It must never allocate per packet.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::batch::SendBatch;
use super::ring::{BufferRing, RingLayout};
use super::sendq::{Retry, SendQueue};
use super::socket::SocketCaps;
use super::sys::{self, classify_recv_error, classify_send_error, RecvFailure, SendFailure};
use super::{
    deliver, header_of, leading_headers, look_ahead, Datagram, Driver, DriverConfig, Flow, Handed,
    KernelTime, NextHeader, RecvStats, SendSlot, SendStats, Wait,
};

/// Why the io_uring driver cannot run here. Log it once; mmsg takes over.
#[derive(Debug)]
pub enum UringUnavailable {
    /// `ForceFallback::io_uring` asked to pretend.
    Forced,
    /// ENOSYS: the kernel was built without io_uring (or a sandbox hides it).
    NotSupported,
    /// The sysctl `kernel.io_uring_disabled` is set (1: only the io_uring_group
    /// may use it, 2: nobody may).
    DisabledBySysctl {
        /// The sysctl's value.
        value: u8,
    },
    /// EPERM with the sysctl allowing it: a seccomp filter (Docker's default
    /// profile blocks io_uring) or an LSM refused.
    PermissionDenied,
    /// The kernel lacks something this driver needs (each appeared in a known
    /// release: multishot recvmsg 6.0, provided buffer rings 5.19, EXT_ARG 5.11).
    MissingFeature(&'static str),
    /// Setup failed otherwise (e.g. ENOMEM from RLIMIT_MEMLOCK on old kernels).
    Setup(io::Error),
}

impl fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UringUnavailable::Forced => f.write_str("io_uring refused by ForceFallback (test hook)"),
            UringUnavailable::NotSupported => {
                f.write_str("io_uring_setup returned ENOSYS: kernel built without io_uring")
            }
            UringUnavailable::DisabledBySysctl { value } => write!(
                f,
                "io_uring is disabled by sysctl kernel.io_uring_disabled={value}"
            ),
            UringUnavailable::PermissionDenied => f.write_str(
                "io_uring_setup returned EPERM: blocked by a seccomp profile (e.g. a container runtime's default) or an LSM",
            ),
            UringUnavailable::MissingFeature(what) => {
                write!(f, "kernel io_uring lacks a needed feature: {what}")
            }
            UringUnavailable::Setup(e) => write!(f, "io_uring setup failed: {e}"),
        }
    }
}

impl std::error::Error for UringUnavailable {}

/// `UringDriver::new` failed; the socket comes back so another driver can use it.
#[derive(Debug)]
pub struct UringRefused {
    /// Why io_uring cannot run here.
    pub reason: UringUnavailable,
    /// The socket, unchanged.
    pub socket: UdpSocket,
    /// What took effect on it.
    pub caps: SocketCaps,
}

fn read_io_uring_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn classify_setup_error(e: io::Error) -> UringUnavailable {
    match sys::errno_of(&e) {
        libc::ENOSYS => UringUnavailable::NotSupported,
        libc::EPERM | libc::EACCES => match read_io_uring_disabled() {
            Some(v) if v > 0 => UringUnavailable::DisabledBySysctl { value: v },
            _ => UringUnavailable::PermissionDenied,
        },
        libc::EINVAL => UringUnavailable::MissingFeature("io_uring_setup flags (kernel too old)"),
        _ => UringUnavailable::Setup(e),
    }
}

/// Builds a ring, preferring cooperative task running (no IPIs; the kernel
/// flags pending work so an idle poll needs no syscall) and falling back to
/// the defaults on kernels without it.
fn build_ring(entries: u32, cq_entries: u32) -> Result<IoUring, UringUnavailable> {
    let coop = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(cq_entries)
        .build(entries);
    match coop {
        Ok(r) => Ok(r),
        Err(e) if sys::errno_of(&e) == libc::EINVAL => IoUring::builder()
            .setup_cqsize(cq_entries)
            .build(entries)
            .map_err(classify_setup_error),
        Err(e) => Err(classify_setup_error(e)),
    }
}

fn check_features(ring: &IoUring) -> Result<(), UringUnavailable> {
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(UringUnavailable::MissingFeature(
            "IORING_FEAT_EXT_ARG (5.11) for receive timeouts",
        ));
    }
    if !params.is_feature_nodrop() {
        return Err(UringUnavailable::MissingFeature("IORING_FEAT_NODROP (5.5)"));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| UringUnavailable::MissingFeature("IORING_REGISTER_PROBE (5.6)"))?;
    if !probe.is_supported(opcode::RecvMsg::CODE) || !probe.is_supported(opcode::SendMsg::CODE) {
        return Err(UringUnavailable::MissingFeature(
            "IORING_OP_RECVMSG/SENDMSG",
        ));
    }
    // Multishot recvmsg arrived in 6.0 together with SEND_ZC; the opcode probe
    // cannot see the multishot flag, so the newer opcode stands in for it.
    if !probe.is_supported(opcode::SendZc::CODE) {
        return Err(UringUnavailable::MissingFeature("multishot recvmsg (6.0)"));
    }
    Ok(())
}

/// Checks that io_uring with everything this driver needs can be set up here.
pub fn probe() -> Result<(), UringUnavailable> {
    let ring = build_ring(8, 16)?;
    check_features(&ring)?;
    let pbuf = PbufRing::new(1).map_err(UringUnavailable::Setup)?;
    // SAFETY: the buffer ring memory is page-aligned and sized for one entry;
    // it lists no buffers, so the kernel never writes through it, and it is
    // unregistered (and the ring closed) before `pbuf` is unmapped below.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(pbuf.addr(), 1, PROBE_BGID, 0)
            .map_err(|_| UringUnavailable::MissingFeature("provided buffer rings (5.19)"))?;
    }
    let _ = ring.submitter().unregister_buf_ring(PROBE_BGID);
    drop(ring);
    drop(pbuf);
    Ok(())
}

const PROBE_BGID: u16 = 7;
const BGID: u16 = 0;
const RECV_TAG: u64 = 1;
/// The one-shot `PollAdd` on the waker's eventfd.
const WAKE_TAG: u64 = 2;
/// Reserved in each provided buffer for the source address (>= sockaddr_in6).
const NAME_LEN: usize = 32;
/// `struct io_uring_recvmsg_out` (namelen, controllen, payloadlen, flags: u32
/// each) at the start of every multishot receive buffer.
const OUT_HDR: usize = 16;

/// Mirrors `struct io_uring_buf` (16 bytes; in entry 0, `resv` is the ring tail).
#[repr(C)]
struct IoUringBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The shared array of a provided buffer ring, in its own page-aligned mapping.
struct PbufRing {
    base: NonNull<IoUringBuf>,
    map_len: usize,
    mask: u16,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
}

// SAFETY: the mapping is owned exclusively by this struct; the kernel's access
// is tied to the registration, not to a thread.
unsafe impl Send for PbufRing {}

impl PbufRing {
    /// `entries` must be a power of two no larger than 32768.
    fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32_768 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let bytes = usize::from(entries) * std::mem::size_of::<IoUringBuf>();
        let page = 4096;
        let map_len = bytes.div_ceil(page) * page;
        // SAFETY: anonymous private mapping with no address hint; the result is
        // checked against MAP_FAILED before use and unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys::last_error());
        }
        let base = NonNull::new(p.cast::<IoUringBuf>()).ok_or_else(sys::last_error)?;
        Ok(PbufRing {
            base,
            map_len,
            mask: entries - 1,
            tail: 0,
        })
    }

    fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Queues a buffer for the kernel (visible after `publish`).
    fn push(&mut self, addr: u64, len: u32, bid: u16) {
        let idx = usize::from(self.tail & self.mask);
        // SAFETY: idx <= mask < entries, inside the mapping. Only the addr/len/bid
        // fields are written, never `resv`, which in entry 0 is the tail the
        // kernel reads; the kernel does not read this entry until the tail
        // published below moves past it.
        unsafe {
            let e = self.base.as_ptr().add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(len);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at offset 14 of entry 0, 2-byte aligned in
        // a page-aligned mapping that outlives this reference; the kernel reads
        // it concurrently, hence the atomic.
        let tail =
            unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*self.base.as_ptr()).resv)) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for PbufRing {
    fn drop(&mut self) {
        // SAFETY: base/map_len describe the mapping created in new(); the owning
        // driver unregisters the ring before dropping it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

/// Control-message room reserved in each receive buffer.
fn control_room(caps: &SocketCaps) -> usize {
    if caps.gro || caps.timestamps {
        sys::CONTROL_CAP
    } else {
        0
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// io_uring: multishot receive into a provided buffer ring, batched sends, one `io_uring_enter` per flush.
pub struct UringDriver {
    // Declared first so they drop first: both rings close before the memory
    // their requests point into is released (Drop also cancels explicitly).
    recv_ring: IoUring,
    send_ring: IoUring,
    pbuf: PbufRing,
    ring: BufferRing,
    recv_msghdr: Box<libc::msghdr>,
    socket: UdpSocket,
    caps: SocketCaps,
    cfg: DriverConfig,
    armed: bool,
    /// (user data, result, flags) of the CQEs taken in one pass.
    cqes: Box<[(u64, i32, u32)]>,
    /// Where the last pass stopped when its callback paused: (CQE, CQEs taken,
    /// GRO segment). The buffers of those CQEs are not recycled until handed over.
    held: Option<(usize, usize, usize)>,
    queue: SendQueue,
    batch: SendBatch,
    send_results: Box<[i32]>,
    gso: bool,
    fake_gso_failure: bool,
    /// Declared after the rings: its eventfd outlives any poll request on it.
    waker: Option<std::sync::Arc<super::Waker>>,
    wake_armed: bool,
}

// SAFETY: every raw pointer the driver holds or has handed to the kernel points
// into memory it owns (ring, pbuf, msghdr box, batch arrays); moving the driver
// moves ownership of all of it together, and it is used by one thread at a time.
unsafe impl Send for UringDriver {}

impl UringDriver {
    /// Sets up both rings and the provided buffers over `socket`. On failure the
    /// socket and caps come back with the reason, for a fallback driver.
    pub fn new(
        socket: UdpSocket,
        caps: SocketCaps,
        cfg: &DriverConfig,
    ) -> Result<Self, Box<UringRefused>> {
        match Self::setup(&caps, cfg) {
            Ok(parts) => Ok(Self::assemble(parts, socket, caps, cfg)),
            Err(reason) => Err(Box::new(UringRefused {
                reason,
                socket,
                caps,
            })),
        }
    }

    fn setup(caps: &SocketCaps, cfg: &DriverConfig) -> Result<Parts, UringUnavailable> {
        if caps.force.io_uring {
            return Err(UringUnavailable::Forced);
        }
        cfg.validate().map_err(UringUnavailable::Setup)?;
        let payload = cfg.recv_payload(caps);
        let wanted = if caps.gro {
            // 64 KiB each: keep the footprint near 4 MiB.
            cfg.uring_recv_buffers.min(64)
        } else {
            cfg.uring_recv_buffers
        };
        let recv_buffers = u16::try_from(wanted.next_power_of_two())
            .ok()
            .filter(|&n| n <= 32_768)
            .ok_or(UringUnavailable::Setup(io::Error::from(
                io::ErrorKind::InvalidInput,
            )))?;
        // Exactly header + address + cmsg room + payload: the kernel then
        // truncates (MSG_TRUNC) anything longer than the configured payload.
        let slot_size = OUT_HDR + NAME_LEN + control_room(caps) + payload;
        let ring = BufferRing::new(RingLayout {
            recv_slots: usize::from(recv_buffers),
            recv_slot_size: slot_size,
            send_slots: cfg.send_slots,
            send_slot_size: cfg.max_datagram,
        })
        .map_err(|e| UringUnavailable::Setup(e.into()))?;
        if u32::try_from(slot_size).is_err() {
            return Err(UringUnavailable::Setup(io::Error::from(
                io::ErrorKind::InvalidInput,
            )));
        }

        let recv_entries = 8;
        let recv_ring = build_ring(recv_entries, (u32::from(recv_buffers) * 2).max(64))?;
        check_features(&recv_ring)?;
        let send_entries = (cfg.send_slots.next_power_of_two()).clamp(8, 4096) as u32;
        let send_ring = build_ring(send_entries, send_entries * 2)?;

        let mut pbuf = PbufRing::new(recv_buffers).map_err(UringUnavailable::Setup)?;
        for bid in 0..recv_buffers {
            if let Some(slot) = ring.recv_slot(usize::from(bid)) {
                pbuf.push(ring.slot_ptr(slot) as u64, slot_size as u32, bid);
            }
        }
        pbuf.publish();
        // SAFETY: the buffer ring array is page-aligned and sized for
        // `recv_buffers` entries; it and every buffer it lists (receive slots of
        // `ring`) live in the driver until Drop cancels all requests and
        // unregisters the group.
        unsafe {
            recv_ring
                .submitter()
                .register_buf_ring_with_flags(pbuf.addr(), recv_buffers, BGID, 0)
                .map_err(|e| match sys::errno_of(&e) {
                    libc::EINVAL => {
                        UringUnavailable::MissingFeature("provided buffer rings (5.19)")
                    }
                    _ => UringUnavailable::Setup(e),
                })?;
        }
        let sq_msgs = send_ring.params().sq_entries() as usize;
        Ok(Parts {
            recv_ring,
            send_ring,
            pbuf,
            ring,
            recv_buffers,
            sq_msgs,
        })
    }

    fn assemble(p: Parts, socket: UdpSocket, caps: SocketCaps, cfg: &DriverConfig) -> Self {
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        // Multishot recvmsg only reads the lengths: they reserve room for the
        // address and cmsgs at the start of each provided buffer.
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msghdr.msg_controllen = control_room(&caps);
        let batch = SendBatch::new(p.sq_msgs, &p.ring);
        UringDriver {
            recv_ring: p.recv_ring,
            send_ring: p.send_ring,
            pbuf: p.pbuf,
            ring: p.ring,
            recv_msghdr: msghdr,
            gso: caps.gso,
            fake_gso_failure: caps.force.gso_send,
            socket,
            caps,
            cfg: *cfg,
            armed: false,
            cqes: vec![(0, 0, 0); usize::from(p.recv_buffers) * 2 + 8].into_boxed_slice(),
            held: None,
            waker: None,
            wake_armed: false,
            queue: SendQueue::new(cfg.send_slots),
            batch,
            send_results: vec![0; p.sq_msgs].into_boxed_slice(),
        }
    }

    fn arm(&mut self) -> bool {
        let sqe = opcode::RecvMsgMulti::new(
            types::Fd(self.socket.as_raw_fd()),
            &*self.recv_msghdr as *const libc::msghdr,
            BGID,
        )
        .build()
        .user_data(RECV_TAG);
        // SAFETY: the msghdr is boxed in self and outlives the request (Drop
        // cancels it first); the buffer group BGID is registered for the
        // lifetime of the ring.
        let pushed = unsafe { self.recv_ring.submission().push(&sqe) }.is_ok();
        self.armed = pushed;
        pushed
    }

    /// Queues a one-shot poll of the waker's eventfd (submitted with the next
    /// enter), unless one is in flight.
    fn arm_waker(&mut self) {
        let Some(waker) = &self.waker else {
            return;
        };
        if self.wake_armed {
            return;
        }
        let sqe = opcode::PollAdd::new(types::Fd(waker.raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_TAG);
        // SAFETY: a poll request carries no pointers into our memory; the
        // eventfd stays open while the driver holds the waker, and the kernel
        // holds its own reference to the file while the poll is in flight.
        self.wake_armed = unsafe { self.recv_ring.submission().push(&sqe) }.is_ok();
    }

    /// Takes up to `batch` CQEs, delivers their datagrams, recycles their buffers;
    /// or, after a pause, goes on with the CQEs already taken, taking none.
    /// Returns how many CQEs were handled.
    fn reap(
        &mut self,
        stats: &mut RecvStats,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) -> io::Result<usize> {
        let (from, taken, mut skip) = match self.held.take() {
            Some(held) => held,
            None => {
                let limit = self.cfg.batch.min(self.cqes.len());
                let mut taken = 0;
                let cq = self.recv_ring.completion();
                // The slot iterator goes first so zip never pulls (and loses) a
                // CQE it has no room for.
                for (out, cqe) in self.cqes.iter_mut().take(limit).zip(cq) {
                    *out = (cqe.user_data(), cqe.result(), cqe.flags());
                    taken += 1;
                }
                (0, taken, 0)
            }
        };
        let mut fatal = None;
        for i in from..taken {
            let Some(&(tag, res, flags)) = self.cqes.get(i) else {
                break;
            };
            // Non-zero only for the CQE a pause stopped inside, whose flags were
            // already acted on (acting again could re-arm twice).
            let at = std::mem::take(&mut skip);
            if tag == WAKE_TAG {
                // One-shot: armed again at the next receive.
                self.wake_armed = false;
                stats.woken = true;
                continue;
            }
            if at == 0 && !cqueue::more(flags) {
                self.armed = false;
            }
            match cqueue::buffer_select(flags) {
                Some(bid) => {
                    let after = self.headers_after(i, taken);
                    let handed = match usize::try_from(res) {
                        Ok(used) => self.handle_buffer(bid, used, at, after, stats, on_datagram),
                        Err(_) => {
                            stats.errors += 1;
                            Handed::All
                        }
                    };
                    if let Handed::PausedWithin(segment) = handed {
                        self.held = Some((i, taken, segment));
                        break;
                    }
                    self.recycle(bid);
                    if handed == Handed::PausedAfter {
                        self.held = (i + 1 < taken).then_some((i + 1, taken, 0));
                        break;
                    }
                }
                None if res < 0 => match -res {
                    // The buffer ring ran dry, or our own cancellation: re-arm.
                    libc::ENOBUFS | libc::ECANCELED => {}
                    errno => match classify_recv_error(errno) {
                        RecvFailure::Fatal => fatal = Some(errno),
                        _ => stats.errors += 1,
                    },
                },
                None => {}
            }
        }
        if taken > from {
            self.pbuf.publish();
        }
        if let Some(errno) = fatal {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(taken - from)
    }

    fn recycle(&mut self, bid: u16) {
        if let Some(slot) = self.ring.recv_slot(usize::from(bid)) {
            let len = self.ring.slot_len(slot) as u32;
            let addr = self.ring.slot_ptr(slot) as u64;
            self.pbuf.push(addr, len, bid);
        }
    }

    /// Where a received datagram's bytes start in a provided buffer: after the
    /// io_uring_recvmsg_out header and the room the msghdr reserved for the name and cmsgs.
    fn payload_start(&self) -> usize {
        OUT_HDR + NAME_LEN + self.recv_msghdr.msg_controllen
    }

    /// The payload and control bytes of the datagram buffer CQE `i` (of `taken`) names, if
    /// it names one.
    fn datagram_of_cqe(&self, i: usize, taken: usize) -> Option<(&[u8], &[u8])> {
        if i >= taken {
            return None;
        }
        let &(tag, res, flags) = self.cqes.get(i)?;
        if tag == WAKE_TAG {
            return None;
        }
        let bid = cqueue::buffer_select(flags)?;
        let used = usize::try_from(res).ok()?;
        let slot = self.ring.recv_slot(usize::from(bid))?;
        let buf = self.ring.slot(slot).get(..used)?;
        let start = self.payload_start();
        let len = read_u32(buf, 8)? as usize;
        let control_start = OUT_HDR + NAME_LEN;
        let control_len = (read_u32(buf, 4)? as usize).min(self.recv_msghdr.msg_controllen);
        Some((
            buf.get(start..start.checked_add(len)?)?,
            buf.get(control_start..control_start + control_len)?,
        ))
    }

    /// The headers of the two datagrams handed over after CQE `i`'s (of `taken`): the next
    /// CQE's first two when the kernel coalesced them (GRO), else its first and the first
    /// of the CQE after; none past a CQE that carries no datagram.
    fn headers_after(&self, i: usize, taken: usize) -> [Option<NextHeader>; 2] {
        let next = self
            .datagram_of_cqe(i + 1, taken)
            .map_or([None, None], |(data, control)| {
                leading_headers(data, sys::parse_control(control).gro_segment)
            });
        look_ahead(next, || {
            self.datagram_of_cqe(i + 2, taken)
                .map(|(data, _)| header_of(data))
        })
    }

    fn handle_buffer(
        &mut self,
        bid: u16,
        used: usize,
        skip: usize,
        after: [Option<NextHeader>; 2],
        stats: &mut RecvStats,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) -> Handed {
        let control_cap = self.recv_msghdr.msg_controllen;
        let Some(slot) = self.ring.recv_slot(usize::from(bid)) else {
            stats.errors += 1;
            return Handed::All;
        };
        let buf = self.ring.slot_mut(slot);
        let Some(buf) = buf.get_mut(..used) else {
            stats.errors += 1;
            return Handed::All;
        };
        let (Some(namelen), Some(controllen), Some(payloadlen), Some(flags)) = (
            read_u32(buf, 0),
            read_u32(buf, 4),
            read_u32(buf, 8),
            read_u32(buf, 12),
        ) else {
            stats.errors += 1;
            return Handed::All;
        };
        if flags as i32 & libc::MSG_TRUNC != 0 {
            stats.truncated += 1;
            return Handed::All;
        }
        let name_end = OUT_HDR + (namelen as usize).min(NAME_LEN);
        let control_start = OUT_HDR + NAME_LEN;
        let control_end = control_start + (controllen as usize).min(control_cap);
        let payload_start = control_start + control_cap;
        let src = buf.get(OUT_HDR..name_end).and_then(sys::decode_addr);
        let meta = buf
            .get(control_start..control_end)
            .map(sys::parse_control)
            .unwrap_or_default();
        let Some(src) = src else {
            stats.errors += 1;
            return Handed::All;
        };
        let Some(data) = buf.get_mut(payload_start..payload_start + payloadlen as usize) else {
            stats.truncated += 1;
            return Handed::All;
        };
        deliver(
            data,
            meta.gro_segment,
            self.cfg.max_datagram,
            src,
            meta.timestamp_ns.map(KernelTime::from_nanos),
            skip,
            after,
            stats,
            on_datagram,
        )
    }

    /// Enters the kernel for the receive ring. Returns false on timeout/EINTR.
    fn enter_recv(&mut self, wait: Wait, stats: &mut RecvStats) -> io::Result<bool> {
        stats.syscalls += 1;
        let submitter = self.recv_ring.submitter();
        let r = match wait {
            Wait::NoWait => submitter.submit(),
            Wait::Timeout(d) => {
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
            Wait::Forever => submitter.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) => match sys::errno_of(&e) {
                libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY => Ok(false),
                _ => Err(e),
            },
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

    /// Pushes the first `count` built messages, submits once and collects each
    /// message's result into `send_results`.
    fn submit_sends(&mut self, count: usize, stats: &mut SendStats) -> io::Result<()> {
        let fd = types::Fd(self.socket.as_raw_fd());
        let hdrs = self.batch.hdrs_mut();
        let count = count.min(hdrs.len()).min(self.send_results.len());
        {
            let mut sq = self.send_ring.submission();
            for (m, h) in hdrs.iter().take(count).enumerate() {
                let sqe = opcode::SendMsg::new(fd, &h.msg_hdr as *const libc::msghdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(m as u64);
                // SAFETY: the msghdr and everything it points to (name, cmsg,
                // iovecs, send slots) live in self and are not touched until
                // this function has reaped every completion below.
                if unsafe { sq.push(&sqe) }.is_err() {
                    // Cannot happen: count <= SQ entries and the SQ is drained
                    // by every call. Refuse rather than leak state.
                    return Err(io::Error::other("io_uring send queue full"));
                }
            }
        }
        if let Some(r) = self.send_results.get_mut(..count) {
            r.fill(i32::MIN);
        }
        let mut outstanding = count;
        // MSG_DONTWAIT makes every SendMsg complete inline (EAGAIN included),
        // so one enter normally returns them all; the bound only guards
        // against a kernel that parks a request anyway.
        let mut rounds = 0;
        while outstanding > 0 {
            stats.syscalls += 1;
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let r = self
                .send_ring
                .submitter()
                .submit_with_args(outstanding, &args);
            if let Err(e) = r {
                match sys::errno_of(&e) {
                    libc::EINTR | libc::ETIME | libc::EBUSY => {}
                    _ => return Err(e),
                }
            }
            for cqe in self.send_ring.completion() {
                if let Some(slot) = self.send_results.get_mut(cqe.user_data() as usize) {
                    *slot = cqe.result();
                    outstanding = outstanding.saturating_sub(1);
                }
            }
            rounds += 1;
            if outstanding > 0 && rounds >= 5 {
                // Cancel whatever is parked and collect the cancellations.
                let _ = self
                    .send_ring
                    .submitter()
                    .register_sync_cancel(None, types::CancelBuilder::any());
                for cqe in self.send_ring.completion() {
                    if let Some(slot) = self.send_results.get_mut(cqe.user_data() as usize) {
                        *slot = cqe.result();
                    }
                }
                // Anything still unknown counts as would-block.
                for slot in self.send_results.iter_mut().take(count) {
                    if *slot == i32::MIN {
                        *slot = -libc::EAGAIN;
                    }
                }
                break;
            }
        }
        Ok(())
    }
}

struct Parts {
    recv_ring: IoUring,
    send_ring: IoUring,
    pbuf: PbufRing,
    ring: BufferRing,
    recv_buffers: u16,
    sq_msgs: usize,
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // Synchronously cancel the multishot receive so the kernel stops
        // writing into provided buffers before their memory is freed.
        let _ = self
            .recv_ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
        let _ = self.recv_ring.submitter().unregister_buf_ring(BGID);
    }
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "uring"
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
        // What a paused pass left goes first, alone, without entering the kernel:
        // the next wait happens once it is all handed over.
        if self.held.is_some() {
            self.reap(&mut stats, on_datagram)?;
            return Ok(stats);
        }
        let mut entered_nowait = false;
        let mut waited = false;
        self.arm_waker();
        loop {
            if !self.armed && !self.arm() {
                stats.errors += 1;
            }
            self.reap(&mut stats, on_datagram)?;
            if !self.armed {
                // Re-arm now so the submission below carries it.
                self.arm();
            }
            let sq_pending = !self.recv_ring.submission().is_empty();
            // A wake taken from the CQ has consumed the one-shot poll: waiting now would
            // sleep to the timeout with the caller's work queued and nothing armed.
            if stats.datagrams > 0 || stats.truncated > 0 || stats.woken {
                if sq_pending {
                    self.enter_recv(Wait::NoWait, &mut stats)?;
                }
                return Ok(stats);
            }
            let kernel_has_work = {
                let sq = self.recv_ring.submission();
                sq.taskrun() || sq.cq_overflow()
            };
            match wait {
                Wait::NoWait => {
                    if entered_nowait || !(sq_pending || kernel_has_work) {
                        return Ok(stats);
                    }
                    entered_nowait = true;
                    self.enter_recv(Wait::NoWait, &mut stats)?;
                }
                Wait::Timeout(_) | Wait::Forever => {
                    if waited {
                        return Ok(stats);
                    }
                    waited = true;
                    if !self.enter_recv(wait, &mut stats)? {
                        // Timed out or interrupted; take anything that raced in.
                        self.reap(&mut stats, on_datagram)?;
                        return Ok(stats);
                    }
                }
            }
        }
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
                self.send_results.len(),
                gso,
                self.caps.ipv6,
                &mut stats,
            );
            if built == 0 {
                continue;
            }
            // Test hook: GSO messages "fail" with EIO as a refusing NIC would.
            let mut count = built;
            if self.fake_gso_failure {
                if let Some(m) = (0..built).find(|&m| self.batch.run(m).is_some_and(|r| r.gso())) {
                    count = m;
                }
            }
            if count > 0 {
                self.submit_sends(count, &mut stats)?;
            }
            if count < built {
                // The hooked GSO message "failed"; the ones after it were never
                // submitted and stay pending (EINTR: retry).
                if let Some(r) = self.send_results.get_mut(count) {
                    *r = -libc::EIO;
                }
                for r in self.send_results.iter_mut().take(built).skip(count + 1) {
                    *r = -libc::EINTR;
                }
            }
            let mut progressed = false;
            let mut would_block = false;
            let mut nobufs = false;
            let mut gso_refused = false;
            for m in 0..built {
                let res = self.send_results.get(m).copied().unwrap_or(-libc::EIO);
                if res >= 0 {
                    self.batch.sent(m, &mut stats);
                    progressed = true;
                    continue;
                }
                let used_gso = self.batch.run(m).is_some_and(|r| r.gso());
                match classify_send_error(-res, used_gso) {
                    SendFailure::Interrupted => {}
                    SendFailure::WouldBlock => would_block = true,
                    SendFailure::NoBufs => nobufs = true,
                    SendFailure::GsoRefused => gso_refused = true,
                    SendFailure::Fatal => {
                        self.queue.clear();
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    SendFailure::DropDatagram => stats.dropped_error += self.batch.give_up(m),
                }
            }
            if progressed {
                retry.progress();
            }
            if gso_refused {
                self.disable_gso(&mut stats);
            }
            if would_block && !retry.would_block(fd, &mut stats)? {
                stats.dropped_would_block += self.batch.give_up_all(queued);
            } else if nobufs && !retry.nobufs() {
                for m in 0..built {
                    let res = self.send_results.get(m).copied().unwrap_or(0);
                    if res == -libc::ENOBUFS {
                        stats.dropped_nobufs += self.batch.give_up(m);
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

    fn set_waker(&mut self, waker: Option<std::sync::Arc<super::Waker>>) {
        // A poll in flight on the old eventfd completes harmlessly (it holds
        // its own file reference); its CQE only reports a spurious wake.
        self.waker = waker;
        self.wake_armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbuf_ring_rejects_bad_sizes() {
        assert!(PbufRing::new(3).is_err());
        assert!(PbufRing::new(0).is_err());
        assert!(PbufRing::new(8).is_ok());
    }

    #[test]
    fn setup_errors_are_explained() {
        assert!(matches!(
            classify_setup_error(io::Error::from_raw_os_error(libc::ENOSYS)),
            UringUnavailable::NotSupported
        ));
        assert!(matches!(
            classify_setup_error(io::Error::from_raw_os_error(libc::ENOMEM)),
            UringUnavailable::Setup(_)
        ));
        let eperm = classify_setup_error(io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(
            eperm,
            UringUnavailable::PermissionDenied | UringUnavailable::DisabledBySysctl { .. }
        ));
        assert!(!eperm.to_string().is_empty());
    }
}
