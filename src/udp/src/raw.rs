//! Raw kernel UDP for measurement: the baseline `intentra-bench` compares intentra against
//! (`recvmmsg`, `sendmmsg`, `sendmsg` with UDP GSO), socket buffer sizes, per-thread CPU
//! time and the kernel's per-socket drop counter.
//!
//! Kept apart from the drivers on purpose: it carries no protocol and no fallbacks, so
//! that what it measures is the kernel's own cost. Over preallocated headers and buffers,
//! nothing here allocates per packet. IPv4 only: the benchmark runs on 127.0.0.0/8.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// `SOL_UDP` option that sets the GSO segment size (linux/udp.h); not exported by `libc`.
const UDP_SEGMENT: libc::c_int = 103;
/// Privileged variants that ignore `net.core.{r,w}mem_max` (asm-generic/socket.h).
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;
/// `getrusage` of the calling thread only (linux/resource.h).
const RUSAGE_THREAD: libc::c_int = 1;

/// Largest datagram a receive slot holds; anything longer is reported truncated.
pub const SLOT_LEN: usize = 2048;
/// Messages per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// Largest UDP payload one GSO send may carry (65535 - IPv4 header - UDP header).
pub const GSO_MAX_BYTES: usize = 65_507;
/// Segments per GSO send that every kernel with UDP GSO accepts.
pub const GSO_MAX_SEGMENTS: usize = 64;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr_from(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_to(addr: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    ))
}

fn v4(addr: SocketAddr) -> io::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the benchmark speaks IPv4 loopback only",
        )),
    }
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed; the kernel only reads it.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    cvt(ret).map(|_| ())
}

fn get_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the buffer size.
    let ret =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    cvt(ret).map(|_| value)
}

/// Asks for socket buffers of `bytes` (the privileged option first, so a root benchmark is not
/// capped by `rmem_max`) and returns what the kernel granted for the receive side.
pub fn set_buffers(socket: &UdpSocket, rcv: usize, snd: usize) -> usize {
    let fd = socket.as_raw_fd();
    let rcv = i32::try_from(rcv).unwrap_or(i32::MAX);
    let snd = i32::try_from(snd).unwrap_or(i32::MAX);
    if set_int_option(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, rcv).is_err() {
        let _ = set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
    }
    if set_int_option(fd, libc::SOL_SOCKET, SO_SNDBUFFORCE, snd).is_err() {
        let _ = set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, snd);
    }
    get_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
        .ok()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
}

/// Whether this kernel takes a UDP GSO segment size on this socket.
pub fn gso_supported(socket: &UdpSocket) -> bool {
    let fd = socket.as_raw_fd();
    let ok = set_int_option(fd, libc::SOL_UDP, UDP_SEGMENT, 1200).is_ok();
    // The per-call cmsg sets the size; clear the socket default again.
    let _ = set_int_option(fd, libc::SOL_UDP, UDP_SEGMENT, 0);
    ok
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `usage` is valid for writes; RUSAGE_THREAD reads the calling thread only.
    let ret = unsafe { libc::getrusage(RUSAGE_THREAD, &mut usage) };
    if ret != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The kernel's drop counter of the IPv4 UDP socket bound to `local` (last column of
/// /proc/net/udp): datagrams it discarded because the socket's receive buffer was full.
pub fn socket_drops(local: SocketAddr) -> Option<u64> {
    let local = v4(local).ok()?;
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    // /proc prints the address as the in-memory u32 in hex, i.e. little-endian on x86.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(local.ip().octets()),
        local.port()
    );
    text.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let addr = fields.nth(1)?;
        if !addr.eq_ignore_ascii_case(&want) {
            return None;
        }
        line.split_whitespace().last()?.parse().ok()
    })
}

/// Preallocated `recvmmsg` state: `BATCH` slots of `SLOT_LEN` bytes with their headers.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

/// One received slot: its source, its bytes, and whether the kernel cut it short.
pub struct Received<'a> {
    /// Who sent it.
    pub src: SocketAddr,
    /// Its bytes, in the batch's slot.
    pub data: &'a mut [u8],
    /// Longer than a slot: the kernel cut it.
    pub truncated: bool,
}

impl RecvBatch {
    /// Allocates every slot and header once.
    pub fn new() -> RecvBatch {
        // SAFETY: these C structs are plain old data; all-zero is a valid value of each.
        let (addr, iov, hdr) = unsafe {
            (
                mem::zeroed::<libc::sockaddr_in>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::mmsghdr>(),
            )
        };
        RecvBatch {
            bufs: vec![0u8; BATCH * SLOT_LEN],
            addrs: vec![addr; BATCH],
            iovecs: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            filled: 0,
        }
    }

    /// One `recvmmsg` on `fd` with `flags` (`MSG_DONTWAIT`, or `MSG_WAITFORONE` with a socket
    /// receive timeout). Returns how many slots were filled; `WouldBlock` when none was ready.
    pub fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        self.filled = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // The pointers are refreshed on every call so that moving `self` never leaves
            // a header pointing at a stale address.
            self.iovecs[i] = libc::iovec {
                // SAFETY: `i * SLOT_LEN + SLOT_LEN <= bufs.len()`, so the offset stays inside.
                iov_base: unsafe { base.add(i * SLOT_LEN) }.cast(),
                iov_len: SLOT_LEN,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self` with the lengths given,
        // and `self` is borrowed mutably for the whole call.
        let ret = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        let n = cvt(ret)? as usize;
        self.filled = n.min(BATCH);
        Ok(self.filled)
    }

    /// The `i`th slot filled by the last `recv`.
    pub fn get(&mut self, i: usize) -> Option<Received<'_>> {
        if i >= self.filled {
            return None;
        }
        let hdr = self.hdrs.get(i)?;
        let len = (hdr.msg_len as usize).min(SLOT_LEN);
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let src = sockaddr_to(self.addrs.get(i)?);
        let data = self.bufs.get_mut(i * SLOT_LEN..i * SLOT_LEN + len)?;
        Some(Received {
            src,
            data,
            truncated,
        })
    }
}

/// Sets the receive timeout that bounds a `MSG_WAITFORONE` wait.
pub fn set_recv_timeout(socket: &UdpSocket, timeout: Duration) -> io::Result<()> {
    socket.set_read_timeout(Some(timeout.max(Duration::from_micros(1))))
}

/// One datagram to send: `len` bytes at `offset` of a caller's buffer, to `dst`.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    /// Where it goes.
    pub dst: SocketAddr,
    /// Where it starts in the caller's buffer.
    pub offset: usize,
    /// How many bytes it has.
    pub len: usize,
}

/// Preallocated `sendmmsg` headers for up to `BATCH` datagrams.
pub struct SendBatch {
    addrs: Vec<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    /// Allocates every header once.
    pub fn new() -> SendBatch {
        // SAFETY: plain old data; all-zero is a valid value of each.
        let (addr, iov, hdr) = unsafe {
            (
                mem::zeroed::<libc::sockaddr_in>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::mmsghdr>(),
            )
        };
        SendBatch {
            addrs: vec![addr; BATCH],
            iovecs: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
        }
    }

    /// Sends up to `BATCH` of `out` (slices of `buf`) with one non-blocking `sendmmsg`.
    /// Returns how many the kernel took; entries outside `buf` are refused up front.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], out: &[Outgoing]) -> io::Result<usize> {
        let n = out.len().min(BATCH);
        for (i, o) in out.iter().take(n).enumerate() {
            if buf.get(o.offset..o.offset + o.len).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "datagram outside the send buffer",
                ));
            }
            self.addrs[i] = sockaddr_from(v4(o.dst)?);
            self.iovecs[i] = libc::iovec {
                // SAFETY: the range was checked against `buf` just above.
                iov_base: unsafe { buf.as_ptr().add(o.offset) } as *mut libc::c_void,
                iov_len: o.len,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers point at `self`'s addresses and iovecs, which point
        // into `buf`; all of them outlive the call and the kernel only reads them.
        let ret = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        Ok(cvt(ret)? as usize)
    }
}

/// Sends `buf` to `dst` as one UDP GSO super-datagram cut into `segment`-byte datagrams
/// (the last may be shorter), with one non-blocking `sendmsg`.
pub fn send_gso(fd: RawFd, dst: SocketAddr, buf: &[u8], segment: u16) -> io::Result<usize> {
    let mut addr = sockaddr_from(v4(dst)?);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying a u16, aligned as cmsghdr requires.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as libc::c_uint) } as usize;
    if space > mem::size_of_val(&control) {
        return Err(io::Error::other("cmsg space"));
    }
    // SAFETY: plain old data; all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` has a control buffer of `space` bytes, enough for one header with a u16
    // (checked above), so CMSG_FIRSTHDR is non-null and CMSG_DATA stays inside `control`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no cmsg room"));
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as libc::c_uint) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
    // SAFETY: `msg` points at `addr`, `iov` (into `buf`) and `control`, all alive for the call;
    // the kernel only reads them.
    let ret = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as usize)
}

/// One non-blocking `poll` for readability on `fds`, up to `timeout`. Returns whether any is.
pub fn wait_readable(fds: &mut [libc::pollfd], timeout: Duration) -> bool {
    for p in fds.iter_mut() {
        p.events = libc::POLLIN;
        p.revents = 0;
    }
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    ret > 0
}

/// A pollfd for `fd`, for `wait_readable`.
pub fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}
