//! intentra's Linux I/O layer: UDP sockets and the drivers that move datagrams in
//! batches between them and the event loop.
//!
//! Owns every system call and every line of `unsafe` in the project (each block
//! with a `// SAFETY:` line saying why it holds; a test checks both). The loop
//! sees only the [`Driver`] trait: an in-place receive callback per datagram
//! (which may pause the batch; the rest is handed over by the next call),
//! in-place send buffers committed one by one, and an explicit `flush`. Every
//! datagram that is not delivered or not sent is counted in the returned stats.
//! This layer must never interpret packet contents, read the protocol's clock,
//! or allocate on the per-packet path (buffers are preallocated in constructors).
//!
//! Three drivers implement it: [`UringDriver`] (io_uring multishot
//! receive into a provided buffer ring, batched sends), [`MmsgDriver`]
//! (recvmmsg/sendmmsg with GRO/GSO) and [`BasicDriver`] (one datagram
//! per syscall, the portable comparison point). [`open_driver`] picks one and
//! falls back from io_uring to mmsg, saying why.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod affinity;
mod basic;
mod batch;
mod gro;
mod idle;
mod memory;
mod mmsg;
mod prefetch;
pub mod raw;
mod ring;
mod sendq;
mod socket;
mod sys;
mod uring;
mod waker;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use affinity::pin_current_thread;
pub use basic::BasicDriver;
pub use gro::{for_each_segment, segment_count};
pub use idle::{IdlePhase, IdleStrategy, Idler};
pub use memory::{advise_huge_pages, HUGE_PAGE};
pub use mmsg::MmsgDriver;
pub use prefetch::prefetch;
pub use ring::{BufferRing, RingError, RingLayout, SlotIndex};
pub use sendq::{CommitError, PendingSend, SendSlot, GSO_MAX_BYTES};
pub use socket::{
    open_udp, ForceFallback, SocketCaps, SocketConfig, SocketWarning, GSO_MAX_SEGMENTS,
};
pub use uring::{probe as probe_uring, UringDriver, UringRefused, UringUnavailable};
pub use waker::Waker;

/// Why `open_driver` did not run the driver asked for.
pub type FallbackReason = UringUnavailable;

/// When the kernel received a datagram (SO_TIMESTAMPNS): CLOCK_REALTIME
/// nanoseconds since the Unix epoch. Compare it with a realtime sample, not
/// with the protocol's monotonic `Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelTime(u64);

impl KernelTime {
    /// A timestamp `nanos` after the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        KernelTime(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

/// One received datagram, lent in place from the driver's buffer ring for the
/// duration of the callback. The callee may decrypt or rewrite it in place.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// Who sent it.
    pub src: SocketAddr,
    /// Its bytes, in the driver's receive slot.
    pub data: &'a mut [u8],
    /// Present when the socket was opened with `timestamps`.
    pub kernel_time: Option<KernelTime>,
    /// The first bytes of the datagram this batch hands over next (zero-padded when it is
    /// shorter), when the driver already holds it: a callee can have that datagram's state
    /// fetched into the cache while it handles this one. `None` at the end of a batch.
    pub next_header: Option<NextHeader>,
    /// The same for the datagram after that one: a callee can start on its state a step
    /// earlier still (intentra fetches the session-index table's line for it, so that the
    /// next datagram's peer can be found without waiting). `None` when the driver does not
    /// hold it, and whenever `next_header` is `None`.
    pub later_header: Option<NextHeader>,
}

/// How many leading bytes of the next datagram [`Datagram::next_header`] carries: a whole
/// intentra transport header, whose receiver index names the peer's state and whose counter
/// names the one word of its replay window that the packet reads.
pub const NEXT_HEADER_LEN: usize = 16;

/// The leading bytes of a datagram, see [`Datagram::next_header`].
pub type NextHeader = [u8; NEXT_HEADER_LEN];

/// The leading bytes of `data`, zero-padded: a [`Datagram::next_header`] for receive
/// loops that batch by other means.
pub fn header_of(data: &[u8]) -> NextHeader {
    // Every datagram worth a hint is this long: a fixed-size copy, not a call to memcpy.
    if let Some(head) = data.first_chunk::<NEXT_HEADER_LEN>() {
        return *head;
    }
    let mut header = [0u8; NEXT_HEADER_LEN];
    let n = data.len().min(NEXT_HEADER_LEN);
    header[..n].copy_from_slice(&data[..n]);
    header
}

/// The leading bytes of the first two datagrams in one received buffer `data`: the second
/// only when the kernel coalesced several into it (GRO, `gro_segment` bytes each). For a
/// driver's look-ahead ([`Datagram::next_header`], [`Datagram::later_header`]).
pub(crate) fn leading_headers(data: &[u8], gro_segment: Option<usize>) -> [Option<NextHeader>; 2] {
    match gro_segment {
        Some(segment) if segment > 0 && segment < data.len() => [
            Some(segment_header(data, segment)),
            data.get(segment..)
                .map(|rest| segment_header(rest, segment)),
        ],
        _ => [Some(header_of(data)), None],
    }
}

/// The header of the first datagram in `data`, a run of coalesced `segment`-byte datagrams:
/// never bytes of the one after it, even when a datagram is shorter than a header.
fn segment_header(data: &[u8], segment: usize) -> NextHeader {
    header_of(data.get(..segment).unwrap_or(data))
}

/// The look-ahead past one received buffer, from the leading headers of the next buffer
/// (`next`, see [`leading_headers`]) and a way to get the one after it (`then`, asked only
/// when the next buffer holds a single datagram): the headers of the two datagrams handed
/// over after this buffer's, none past a gap.
pub(crate) fn look_ahead(
    next: [Option<NextHeader>; 2],
    then: impl FnOnce() -> Option<NextHeader>,
) -> [Option<NextHeader>; 2] {
    match next {
        [None, _] => [None, None],
        [first, Some(second)] => [first, Some(second)],
        [first, None] => [first, then()],
    }
}

/// What one `recv_batch` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Datagrams handed to the callback (GRO segments counted one by one).
    pub datagrams: usize,
    /// System calls made (receive, poll/wait, io_uring_enter).
    pub syscalls: usize,
    /// Datagrams longer than the receive slot (MSG_TRUNC): counted, never handed over.
    pub truncated: usize,
    /// Receive buffers that held more than one GRO-coalesced datagram.
    pub gro_buffers: usize,
    /// Receive errors absorbed (a pending ICMP error, an unreadable source
    /// address, a failed multishot re-arm); each may have cost a datagram.
    pub errors: usize,
    /// The driver's waker (see [`Driver::set_waker`]) ended the wait.
    pub woken: bool,
}

impl std::ops::AddAssign for RecvStats {
    fn add_assign(&mut self, o: Self) {
        self.datagrams += o.datagrams;
        self.syscalls += o.syscalls;
        self.truncated += o.truncated;
        self.gro_buffers += o.gro_buffers;
        self.errors += o.errors;
        self.woken |= o.woken;
    }
}

/// What one `flush` did. Every committed datagram ends up in exactly one of
/// `datagrams_sent` or a `dropped_*` counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Datagrams the kernel accepted (GSO segments counted one by one).
    pub datagrams_sent: usize,
    /// System calls made.
    pub syscalls: usize,
    /// Dropped because the socket stayed unwritable (EAGAIN) past the policy's budget.
    pub dropped_would_block: usize,
    /// Dropped after ENOBUFS persisted through the bounded retries.
    pub dropped_nobufs: usize,
    /// Dropped for a per-datagram error (EMSGSIZE, EHOSTUNREACH, EPERM, an IPv6
    /// destination on an IPv4 socket, ...).
    pub dropped_error: usize,
    /// GSO sends (UDP_SEGMENT runs of two or more datagrams) that went out.
    pub gso_batches: usize,
    /// GSO was refused at send time during this flush and is now off for the
    /// socket; the affected datagrams were resent without it.
    pub gso_disabled_now: bool,
}

impl SendStats {
    /// Datagrams given up on, for any reason.
    pub fn dropped(&self) -> usize {
        self.dropped_would_block + self.dropped_nobufs + self.dropped_error
    }
}

impl std::ops::AddAssign for SendStats {
    fn add_assign(&mut self, o: Self) {
        self.datagrams_sent += o.datagrams_sent;
        self.syscalls += o.syscalls;
        self.dropped_would_block += o.dropped_would_block;
        self.dropped_nobufs += o.dropped_nobufs;
        self.dropped_error += o.dropped_error;
        self.gso_batches += o.gso_batches;
        self.gso_disabled_now |= o.gso_disabled_now;
    }
}

/// What a receive callback tells the driver after each datagram (see [`Driver::recv_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Hand over the next datagram of the batch.
    Continue,
    /// Return now; keep the rest of the batch for the next receive call.
    Pause,
}

/// How far `deliver` got through one receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    /// Every datagram in it was handed over (or it was dropped as truncated); go on.
    All,
    /// The callback paused after the buffer's last datagram: the buffer is done, stop.
    PausedAfter,
    /// The callback paused inside a GRO buffer: resume at this segment.
    PausedWithin(usize),
}

/// How long `recv_batch` may wait for the first datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at once if nothing is ready.
    NoWait,
    /// Wait at most this long for the first datagram (timer-aware: the caller
    /// passes the time until its next deadline).
    Timeout(Duration),
    /// Wait until a datagram arrives (or a signal interrupts).
    Forever,
}

/// What `flush` does when the socket buffer is full (EAGAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WouldBlockPolicy {
    /// Drop the rest of the queue at once and count it.
    Drop,
    /// Wait for writability, at most this long in total per flush, then drop the rest.
    Wait(Duration),
}

/// Driver sizing and policies. Defaults suit 64-512 B datagrams at high rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Datagrams per recvmmsg/sendmmsg call (and CQEs per io_uring receive pass).
    pub batch: usize,
    /// Largest datagram sent or received without GRO; also the send slot size.
    pub max_datagram: usize,
    /// Datagrams that can be committed before a flush is needed.
    pub send_slots: usize,
    /// Receive slot size when GRO is on (a coalesced buffer can reach 64 KiB).
    pub gro_slot_size: usize,
    /// Provided buffers for io_uring's multishot receive (rounded up to a power of two).
    pub uring_recv_buffers: usize,
    /// What a send does when the socket buffer is full.
    pub would_block: WouldBlockPolicy,
    /// ENOBUFS retries per datagram (or GSO run) before it is dropped.
    pub nobufs_retries: u32,
    /// Most datagrams per GSO send.
    pub gso_max_segments: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            batch: 64,
            max_datagram: 2048,
            send_slots: 1024,
            gro_slot_size: 65_536,
            uring_recv_buffers: 256,
            would_block: WouldBlockPolicy::Wait(Duration::from_millis(1)),
            nobufs_retries: 3,
            gso_max_segments: socket::GSO_MAX_SEGMENTS,
        }
    }
}

impl DriverConfig {
    /// Refuses sizes that cannot work (zero, or beyond what the kernel accepts).
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid driver config: {what}"),
            ))
        };
        if self.batch == 0 || self.batch > 1024 {
            return bad("batch must be 1..=1024 (UIO_MAXIOV)");
        }
        if self.max_datagram == 0 || self.max_datagram > 65_535 {
            return bad("max_datagram must be 1..=65535");
        }
        if self.send_slots == 0 || self.send_slots > 65_536 {
            return bad("send_slots must be 1..=65536");
        }
        if self.gro_slot_size < self.max_datagram || self.gro_slot_size > 1 << 20 {
            return bad("gro_slot_size must be max_datagram..=1 MiB");
        }
        if self.uring_recv_buffers == 0 || self.uring_recv_buffers > 32_768 {
            return bad("uring_recv_buffers must be 1..=32768");
        }
        if self.gso_max_segments == 0 {
            return bad("gso_max_segments must be at least 1");
        }
        Ok(())
    }

    /// Receive slot payload size for a socket with these caps.
    pub(crate) fn recv_payload(&self, caps: &SocketCaps) -> usize {
        if caps.gro {
            self.gro_slot_size
        } else {
            self.max_datagram
        }
    }
}

/// A batched UDP driver. One per socket, driven by one thread at a time.
pub trait Driver: Send {
    /// "uring", "mmsg" or "basic".
    fn name(&self) -> &'static str;

    /// The address the socket is bound to.
    fn local_addr(&self) -> SocketAddr;

    /// What the socket ended up with (and `gso` reflects run-time disabling).
    fn caps(&self) -> &SocketCaps;

    /// The socket's descriptor, for a runtime that multiplexes several drivers.
    fn raw_fd(&self) -> RawFd;

    /// Receives one batch (up to `batch` datagrams, or GRO buffers walked into
    /// segments) and calls `on_datagram` once per datagram with the bytes in
    /// place in the ring. Truncated datagrams are counted and not handed over.
    /// Returns with zero datagrams when `wait` elapses or a signal interrupts.
    ///
    /// When `on_datagram` returns [`Flow::Pause`], the driver hands over nothing
    /// more and returns; the datagrams it had already read from the kernel but not
    /// handed over stay in its receive buffers (which it does not reuse meanwhile)
    /// and are handed over first, in order, by the next call, which then returns
    /// without waiting and without reading more. This lets a caller that must
    /// hold what a callback sends until the batch is over (the send slots are the
    /// driver's) empty that hold between two datagrams instead of dropping sends.
    fn recv_until(
        &mut self,
        wait: Wait,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) -> io::Result<RecvStats>;

    /// [`Driver::recv_until`] with a callback that never pauses.
    fn recv_batch(
        &mut self,
        wait: Wait,
        on_datagram: &mut dyn FnMut(Datagram<'_>),
    ) -> io::Result<RecvStats> {
        self.recv_until(wait, &mut |datagram| {
            on_datagram(datagram);
            Flow::Continue
        })
    }

    /// The next send buffer (`max_datagram` bytes) from the ring; write the
    /// packet in place and commit it. None when every send slot is committed:
    /// call `flush`.
    fn send_buffer(&mut self) -> Option<SendSlot<'_>>;

    /// Committed datagrams waiting for `flush`.
    fn pending_sends(&self) -> usize;

    /// Sends every committed datagram (batched; GSO runs where possible),
    /// continuing past partial sends and applying the EAGAIN/ENOBUFS policies.
    /// Afterwards every send slot is free again. Errors only when the socket
    /// itself is unusable; per-datagram failures are counted in the stats.
    fn flush(&mut self) -> io::Result<SendStats>;

    /// Whether sends currently use GSO (false after a run-time refusal).
    fn gso_active(&self) -> bool;

    /// Also ends `recv_batch`'s wait when `waker` is woken (from any thread);
    /// the batch then reports `woken`. `None` stops watching.
    fn set_waker(&mut self, waker: Option<std::sync::Arc<Waker>>);
}

/// Hands one received buffer to the callback, from segment `skip` on (0 unless the
/// callback paused inside it before): once, or once per segment when the kernel
/// coalesced several datagrams (GRO) into it. Stops early when the callback pauses.
///
/// A datagram longer than `max_datagram` is counted as truncated and not handed
/// over, exactly as when the kernel cuts it to fit a slot: a GRO slot is larger
/// than any datagram, so without this check the same oversized datagram would be
/// "truncated" on one driver and reach the protocol (as malformed) on another.
#[allow(clippy::too_many_arguments)]
pub(crate) fn deliver(
    data: &mut [u8],
    gro_segment: Option<usize>,
    max_datagram: usize,
    src: SocketAddr,
    kernel_time: Option<KernelTime>,
    skip: usize,
    after: [Option<NextHeader>; 2],
    stats: &mut RecvStats,
    on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
) -> Handed {
    let segment = gro_segment.unwrap_or(0);
    let datagram_len = if segment == 0 || segment >= data.len() {
        data.len()
    } else {
        segment
    };
    let count = gro::segment_count(data.len(), segment);
    if datagram_len > max_datagram {
        stats.truncated += count;
        return Handed::All;
    }
    // Counted once, on the first visit, so a buffer resumed after a pause is not
    // counted twice.
    if skip == 0 && count > 1 {
        stats.gro_buffers += 1;
    }
    if count == 1 {
        // Also an empty datagram, which the segment walk below would skip.
        stats.datagrams += 1;
        let flow = on_datagram(Datagram {
            src,
            data,
            kernel_time,
            next_header: after[0],
            later_header: after[1],
        });
        return match flow {
            Flow::Continue => Handed::All,
            Flow::Pause => Handed::PausedAfter,
        };
    }
    let mut rest = data
        .get_mut(skip.saturating_mul(segment)..)
        .unwrap_or_default();
    for at in skip..count {
        let len = segment.min(rest.len());
        let (seg, tail) = std::mem::take(&mut rest).split_at_mut(len);
        // The segments after this one first, then what follows the buffer.
        let (next_header, later_header) = match tail.get(segment..) {
            _ if tail.is_empty() => (after[0], after[1]),
            Some(later) if !later.is_empty() => (
                Some(segment_header(tail, segment)),
                Some(segment_header(later, segment)),
            ),
            _ => (Some(segment_header(tail, segment)), after[0]),
        };
        stats.datagrams += 1;
        let flow = on_datagram(Datagram {
            src,
            data: seg,
            kernel_time,
            next_header,
            later_header,
        });
        if flow == Flow::Pause {
            return if at + 1 < count {
                Handed::PausedWithin(at + 1)
            } else {
                Handed::PausedAfter
            };
        }
        rest = tail;
    }
    Handed::All
}

/// Which driver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// io_uring: multishot receive into a provided buffer ring, batched sends.
    Uring,
    /// recvmmsg/sendmmsg with GRO and GSO.
    Mmsg,
    /// One datagram per system call.
    Basic,
}

impl DriverKind {
    /// The name used in configuration, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DriverKind::Uring => "uring",
            DriverKind::Mmsg => "mmsg",
            DriverKind::Basic => "basic",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown driver name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDriver(pub String);

impl fmt::Display for UnknownDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown driver {:?} (expected uring, mmsg or basic)",
            self.0
        )
    }
}

impl std::error::Error for UnknownDriver {}

impl FromStr for DriverKind {
    type Err = UnknownDriver;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uring" | "io_uring" => Ok(DriverKind::Uring),
            "mmsg" => Ok(DriverKind::Mmsg),
            "basic" => Ok(DriverKind::Basic),
            other => Err(UnknownDriver(other.to_owned())),
        }
    }
}

/// The fastest driver this kernel allows: io_uring when a ring with the needed
/// features can be set up, else mmsg (always present on Linux).
pub fn best_available() -> DriverKind {
    match uring::probe() {
        Ok(()) => DriverKind::Uring,
        Err(_) => DriverKind::Mmsg,
    }
}

/// A driver ready to run, and why it is not the one asked for (if it is not).
pub struct Opened {
    /// The driver, boxed so callers need not name its type.
    pub driver: Box<dyn Driver>,
    /// Set when `Uring` was asked for and `Mmsg` runs instead. Log it once.
    pub fallback: Option<UringUnavailable>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("driver", &self.driver.name())
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// Opens the socket and the driver of `kind`, falling back from io_uring to
/// mmsg with the reason. Socket warnings are in `driver.caps().warnings`.
pub fn open_driver(
    kind: DriverKind,
    socket: &SocketConfig,
    cfg: &DriverConfig,
) -> io::Result<Opened> {
    cfg.validate()?;
    let (sock, caps) = open_udp(socket)?;
    match kind {
        DriverKind::Basic => Ok(Opened {
            driver: Box::new(basic::BasicDriver::new(sock, caps, cfg)?),
            fallback: None,
        }),
        DriverKind::Mmsg => Ok(Opened {
            driver: Box::new(mmsg::MmsgDriver::new(sock, caps, cfg)?),
            fallback: None,
        }),
        DriverKind::Uring => match uring::UringDriver::new(sock, caps, cfg) {
            Ok(d) => Ok(Opened {
                driver: Box::new(d),
                fallback: None,
            }),
            Err(refused) => {
                tracing::warn!(
                    "io_uring driver unavailable, falling back to recvmmsg/sendmmsg: {}",
                    refused.reason
                );
                Ok(Opened {
                    driver: Box::new(mmsg::MmsgDriver::new(refused.socket, refused.caps, cfg)?),
                    fallback: Some(refused.reason),
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_the_leading_bytes_zero_padded() {
        let long: Vec<u8> = (1..=20).collect();
        let whole: NextHeader = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(header_of(&long), whole);
        assert_eq!(header_of(&long[..NEXT_HEADER_LEN]), whole);
        let mut short = [0; NEXT_HEADER_LEN];
        short[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(header_of(&long[..3]), short);
        assert_eq!(header_of(&[]), [0; NEXT_HEADER_LEN]);
    }

    #[test]
    fn the_look_ahead_walks_segments_then_buffers_and_stops_at_a_gap() {
        let single: Vec<u8> = (1..=20).collect();
        assert_eq!(
            leading_headers(&single, None),
            [Some(header_of(&single)), None]
        );
        // A segment size as long as the buffer or zero: one datagram.
        assert_eq!(leading_headers(&single, Some(20))[1], None);
        assert_eq!(leading_headers(&single, Some(0))[1], None);
        // Coalesced 8-byte datagrams: each header stops at its datagram's end.
        assert_eq!(
            leading_headers(&single, Some(8)),
            [
                Some(header_of(&single[..8])),
                Some(header_of(&single[8..16]))
            ]
        );
        assert_eq!(
            leading_headers(&single, Some(16)),
            [Some(header_of(&single)), Some(header_of(&single[16..]))]
        );
        let (a, b) = ([1; NEXT_HEADER_LEN], [2; NEXT_HEADER_LEN]);
        let unused = || panic!("asked for a datagram that is not next but one");
        assert_eq!(look_ahead([Some(a), Some(b)], unused), [Some(a), Some(b)]);
        assert_eq!(look_ahead([Some(a), None], || Some(b)), [Some(a), Some(b)]);
        assert_eq!(look_ahead([None, None], unused), [None, None]);
    }

    /// Each segment of a coalesced buffer sees the two after it, then what follows the buffer.
    #[test]
    fn deliver_hands_each_segment_the_two_datagrams_after_it() {
        let mut data: Vec<u8> = (0..30).collect();
        let after = [Some([0xA; NEXT_HEADER_LEN]), Some([0xB; NEXT_HEADER_LEN])];
        let src: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut stats = RecvStats::default();
        let mut walk = |gro_segment: Option<usize>| {
            let mut seen = Vec::new();
            deliver(
                &mut data,
                gro_segment,
                100,
                src,
                None,
                0,
                after,
                &mut stats,
                &mut |d| {
                    seen.push((d.data[0], d.next_header, d.later_header));
                    Flow::Continue
                },
            );
            seen
        };
        let segment = |first: u8| Some(header_of(&(first..first + 10).collect::<Vec<_>>()));
        assert_eq!(
            walk(Some(10)),
            [
                (0, segment(10), segment(20)),
                (10, segment(20), after[0]),
                (20, after[0], after[1]),
            ]
        );
        // A single datagram passes both on.
        assert_eq!(walk(None), [(0, after[0], after[1])]);
    }

    #[test]
    fn driver_kinds_parse_and_print() {
        for k in [DriverKind::Uring, DriverKind::Mmsg, DriverKind::Basic] {
            assert_eq!(k.name().parse::<DriverKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert!("epoll".parse::<DriverKind>().is_err());
    }

    #[test]
    fn config_validation_refuses_nonsense() {
        assert!(DriverConfig::default().validate().is_ok());
        let c = DriverConfig {
            batch: 0,
            ..DriverConfig::default()
        };
        assert!(c.validate().is_err());
        let c = DriverConfig {
            gro_slot_size: 100,
            ..DriverConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
