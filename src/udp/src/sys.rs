//! Thin, allocation-free wrappers over the socket system calls and wire structs
//! the drivers share: socket options, `ppoll`, socket addresses and control
//! messages encoded and decoded as plain bytes.
//!
//! Owns the byte layouts of `sockaddr_in`/`sockaddr_in6`/`cmsghdr` so the drivers
//! never reinterpret kernel memory through typed pointers. It must never
//! allocate, log, or hide an errno: every failure comes back as `io::Error`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Room for any socket address the kernel may return (as `sockaddr_storage`).
pub const ADDR_CAP: usize = 128;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// A socket address in kernel layout, aligned like `sockaddr_storage`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct RawAddr {
    pub bytes: [u8; ADDR_CAP],
}

impl RawAddr {
    pub const fn zeroed() -> Self {
        RawAddr {
            bytes: [0; ADDR_CAP],
        }
    }
}

/// Control-message space per message: UDP_SEGMENT/UDP_GRO (an int) plus a
/// `timespec` timestamp, with headroom for one more small cmsg.
pub const CONTROL_CAP: usize = 96;

/// A control-message buffer, aligned like `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct ControlBuf {
    pub bytes: [u8; CONTROL_CAP],
}

impl ControlBuf {
    pub const fn zeroed() -> Self {
        ControlBuf {
            bytes: [0; CONTROL_CAP],
        }
    }
}

/// The last OS error as `io::Error` (never allocates: it is an errno).
pub fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live c_int and its exact size; the kernel
    // only reads that many bytes. An invalid fd yields EBADF, not UB.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: value/len point to live locals of the advertised size; the kernel
    // writes at most `len` bytes and updates `len`.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(last_error())
    }
}

/// Waits until `fd` reports one of `events` or `timeout` passes (`None`: no limit).
/// Returns whether it became ready; EINTR counts as "not ready" so callers
/// return to their loop (and their signal checks) instead of sleeping on.
pub fn poll_fd(fd: RawFd, events: i16, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: one valid pollfd, a timespec that outlives the call (or null for
    // "forever") and no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
    if rc < 0 {
        let e = last_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0 && pfd.revents != 0)
}

/// Like [`poll_fd`] for reading, also watching `also` (a waker's eventfd).
/// Returns (the socket is readable, `also` is readable); EINTR gives neither.
pub fn poll_read_two(
    fd: RawFd,
    also: Option<RawFd>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let Some(also) = also else {
        return poll_fd(fd, libc::POLLIN, timeout).map(|ready| (ready, false));
    };
    let mut pfds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: also,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: two valid pollfds in a live array (the count matches its length),
    // a timespec that outlives the call (or null for "forever"), no signal mask.
    let rc = unsafe { libc::ppoll(pfds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
    if rc < 0 {
        let e = last_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok((false, false));
        }
        return Err(e);
    }
    Ok((pfds[0].revents != 0, pfds[1].revents != 0))
}

/// Decodes a kernel socket address. Unknown families and short buffers give None.
pub fn decode_addr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
    let port = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// Encodes `addr` for a socket of the given family, mapping IPv4 destinations
/// into `::ffff:a.b.c.d` on IPv6 sockets. Returns the address length, or None
/// when an IPv6 destination is given to an IPv4 socket (unroutable: the caller
/// drops and counts it).
pub fn encode_addr(addr: &SocketAddr, v6_socket: bool, out: &mut RawAddr) -> Option<u32> {
    let b = &mut out.bytes;
    match (addr, v6_socket) {
        (SocketAddr::V4(a), false) => {
            b[..SOCKADDR_IN_LEN].fill(0);
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            Some(SOCKADDR_IN_LEN as u32)
        }
        (SocketAddr::V4(a), true) => {
            let mapped = SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0);
            encode_v6(&mapped, b)
        }
        (SocketAddr::V6(a), true) => encode_v6(a, b),
        (SocketAddr::V6(_), false) => None,
    }
}

fn encode_v6(a: &SocketAddrV6, b: &mut [u8; ADDR_CAP]) -> Option<u32> {
    b[..SOCKADDR_IN6_LEN].fill(0);
    b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    b[2..4].copy_from_slice(&a.port().to_be_bytes());
    b[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
    b[8..24].copy_from_slice(&a.ip().octets());
    b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
    Some(SOCKADDR_IN6_LEN as u32)
}

/// What the control messages of one received datagram said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvMeta {
    /// UDP_GRO: the size of each coalesced segment.
    pub gro_segment: Option<usize>,
    /// SCM_TIMESTAMPNS: CLOCK_REALTIME nanoseconds when the kernel received it.
    pub timestamp_ns: Option<u64>,
}

const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const ALIGN: usize = std::mem::size_of::<usize>();

const fn cmsg_align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// CMSG_SPACE for a payload of `n` bytes.
pub const fn cmsg_space(n: usize) -> usize {
    cmsg_align(HDR) + cmsg_align(n)
}

fn read_usize(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from_ne_bytes(
        b.get(at..at + ALIGN)?.try_into().ok()?,
    ))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Walks the control messages the kernel wrote (the first `len` bytes of
/// `control`), tolerating garbage: a malformed header ends the walk.
pub fn parse_control(control: &[u8]) -> RecvMeta {
    let mut meta = RecvMeta::default();
    let mut at = 0usize;
    while let (Some(cmsg_len), Some(level), Some(kind)) = (
        read_usize(control, at),
        read_i32(control, at + ALIGN),
        read_i32(control, at + ALIGN + 4),
    ) {
        if cmsg_len < HDR || at + cmsg_len > control.len() {
            break;
        }
        let data = at + cmsg_align(HDR);
        match (level, kind) {
            (libc::SOL_UDP, libc::UDP_GRO) => {
                // The kernel writes the segment size as an int.
                if let Some(seg) = read_i32(control, data) {
                    meta.gro_segment = usize::try_from(seg).ok().filter(|&s| s > 0);
                }
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                if let (Some(sec), Some(nsec)) =
                    (read_i64(control, data), read_i64(control, data + 8))
                {
                    meta.timestamp_ns = u64::try_from(sec)
                        .ok()
                        .and_then(|s| s.checked_mul(1_000_000_000))
                        .and_then(|s| s.checked_add(u64::try_from(nsec).ok()?));
                }
            }
            _ => {}
        }
        match at.checked_add(cmsg_align(cmsg_len)) {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    meta
}

/// Writes a UDP_SEGMENT control message for `segment` bytes and returns the
/// control length to put in `msg_controllen`.
pub fn write_gso_control(control: &mut ControlBuf, segment: u16) -> usize {
    let len = cmsg_align(HDR) + 2;
    let b = &mut control.bytes;
    b[..cmsg_space(2)].fill(0);
    b[0..ALIGN].copy_from_slice(&len.to_ne_bytes());
    b[ALIGN..ALIGN + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    b[ALIGN + 4..ALIGN + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    let data = cmsg_align(HDR);
    b[data..data + 2].copy_from_slice(&segment.to_ne_bytes());
    cmsg_space(2)
}

/// How a failed send is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// EINTR: try again at once.
    Interrupted,
    /// EAGAIN: the socket buffer is full; wait for writability or drop per policy.
    WouldBlock,
    /// ENOBUFS: the device queue is full; retry a bounded number of times.
    NoBufs,
    /// EIO/EINVAL on a UDP_SEGMENT send: the device or path refused GSO.
    GsoRefused,
    /// The socket itself is unusable (EBADF, ENOTSOCK, EFAULT): give up the flush.
    Fatal,
    /// Anything else is about this destination or datagram (EMSGSIZE, EHOSTUNREACH,
    /// EPERM from a firewall, ...): drop that datagram, count it, continue.
    DropDatagram,
}

pub fn classify_send_error(errno: i32, used_gso: bool) -> SendFailure {
    match errno {
        libc::EINTR => SendFailure::Interrupted,
        libc::EAGAIN => SendFailure::WouldBlock,
        libc::ENOBUFS => SendFailure::NoBufs,
        libc::EIO | libc::EINVAL if used_gso => SendFailure::GsoRefused,
        libc::EBADF | libc::ENOTSOCK | libc::EFAULT => SendFailure::Fatal,
        _ => SendFailure::DropDatagram,
    }
}

/// How a failed receive is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvFailure {
    /// EAGAIN: nothing queued.
    Empty,
    /// EINTR: return to the caller's loop.
    Interrupted,
    /// The socket itself is unusable: surface the error.
    Fatal,
    /// A queued asynchronous error (ICMP unreachable via IP_RECVERR, ENOMEM):
    /// count it and carry on.
    Absorbed,
}

pub fn classify_recv_error(errno: i32) -> RecvFailure {
    match errno {
        libc::EAGAIN => RecvFailure::Empty,
        libc::EINTR => RecvFailure::Interrupted,
        libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL => RecvFailure::Fatal,
        _ => RecvFailure::Absorbed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_both_families() {
        let mut raw = RawAddr::zeroed();
        let v4: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let len = encode_addr(&v4, false, &mut raw).unwrap();
        assert_eq!(decode_addr(&raw.bytes[..len as usize]), Some(v4));

        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let len = encode_addr(&v6, true, &mut raw).unwrap();
        assert_eq!(decode_addr(&raw.bytes[..len as usize]), Some(v6));

        let len = encode_addr(&v4, true, &mut raw).unwrap();
        let mapped = decode_addr(&raw.bytes[..len as usize]).unwrap();
        assert_eq!(mapped, "[::ffff:127.0.0.1]:4242".parse().unwrap());

        assert_eq!(encode_addr(&v6, false, &mut raw), None);
    }

    #[test]
    fn garbage_addresses_decode_to_none() {
        assert_eq!(decode_addr(&[]), None);
        assert_eq!(decode_addr(&[2, 0, 0]), None);
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(decode_addr(&b), None);
    }

    #[test]
    fn gso_control_parses_as_a_segment_size() {
        // The GRO cmsg has the same header layout (int payload instead of u16);
        // build one by hand to check the parser.
        let mut c = ControlBuf::zeroed();
        let space = cmsg_space(4);
        let len = cmsg_align(HDR) + 4;
        c.bytes[0..ALIGN].copy_from_slice(&len.to_ne_bytes());
        c.bytes[ALIGN..ALIGN + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        c.bytes[ALIGN + 4..ALIGN + 8].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        c.bytes[cmsg_align(HDR)..cmsg_align(HDR) + 4].copy_from_slice(&1200i32.to_ne_bytes());
        // Followed by a timestamp.
        let ts = space;
        let tlen = cmsg_align(HDR) + 16;
        c.bytes[ts..ts + ALIGN].copy_from_slice(&tlen.to_ne_bytes());
        c.bytes[ts + ALIGN..ts + ALIGN + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c.bytes[ts + ALIGN + 4..ts + ALIGN + 8]
            .copy_from_slice(&libc::SCM_TIMESTAMPNS.to_ne_bytes());
        let d = ts + cmsg_align(HDR);
        c.bytes[d..d + 8].copy_from_slice(&3i64.to_ne_bytes());
        c.bytes[d + 8..d + 16].copy_from_slice(&5i64.to_ne_bytes());
        let meta = parse_control(&c.bytes[..space + cmsg_space(16)]);
        assert_eq!(meta.gro_segment, Some(1200));
        assert_eq!(meta.timestamp_ns, Some(3_000_000_005));
    }

    #[test]
    fn malformed_control_is_ignored() {
        assert_eq!(parse_control(&[0xff; 40]), RecvMeta::default());
        assert_eq!(parse_control(&[0; 40]), RecvMeta::default());
        assert_eq!(parse_control(&[]), RecvMeta::default());
    }

    #[test]
    fn written_gso_control_is_well_formed() {
        let mut c = ControlBuf::zeroed();
        let n = write_gso_control(&mut c, 1350);
        assert_eq!(n, cmsg_space(2));
        assert_eq!(read_usize(&c.bytes, 0), Some(cmsg_align(HDR) + 2));
        assert_eq!(read_i32(&c.bytes, ALIGN), Some(libc::SOL_UDP));
        assert_eq!(read_i32(&c.bytes, ALIGN + 4), Some(libc::UDP_SEGMENT));
        let d = cmsg_align(HDR);
        assert_eq!(u16::from_ne_bytes([c.bytes[d], c.bytes[d + 1]]), 1350);
    }

    #[test]
    fn send_errors_are_classified() {
        assert_eq!(
            classify_send_error(libc::EAGAIN, false),
            SendFailure::WouldBlock
        );
        assert_eq!(
            classify_send_error(libc::EIO, true),
            SendFailure::GsoRefused
        );
        assert_eq!(
            classify_send_error(libc::EIO, false),
            SendFailure::DropDatagram
        );
        assert_eq!(
            classify_send_error(libc::EINVAL, true),
            SendFailure::GsoRefused
        );
        assert_eq!(
            classify_send_error(libc::ENOBUFS, true),
            SendFailure::NoBufs
        );
        assert_eq!(classify_send_error(libc::EBADF, false), SendFailure::Fatal);
        assert_eq!(
            classify_send_error(libc::EMSGSIZE, false),
            SendFailure::DropDatagram
        );
    }
}
