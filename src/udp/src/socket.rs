//! Opening and tuning the UDP socket every driver runs on.
//!
//! Owns `SocketConfig` (what was asked), `SocketCaps` (what the kernel granted)
//! and `SocketWarning` (what the operator should fix, e.g. a buffer capped by
//! `net.core.rmem_max`). Options that may be refused are probed here, once;
//! drivers read the caps and never probe again on the packet path.
//! It must never log on its own behalf beyond a single warning per problem, and
//! never fail the open because an optional feature is missing.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::sys;

/// Pretend the kernel refused a feature. For tests proving each fallback
/// delivers, and for operators working around a misbehaving NIC or kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForceFallback {
    /// `UringDriver::new` fails as if io_uring were disabled.
    pub io_uring: bool,
    /// The UDP_SEGMENT probe fails, so GSO is never enabled.
    pub gso_probe: bool,
    /// GSO is enabled but the first GSO send "fails" with EIO, exercising the
    /// run-time disable path.
    pub gso_send: bool,
    /// The UDP_GRO probe fails.
    pub gro: bool,
}

/// What to ask of the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// The local address to bind.
    pub bind: SocketAddr,
    /// SO_REUSEPORT, so several workers can bind one port and the kernel spreads flows.
    pub reuse_port: bool,
    /// SO_RCVBUF in bytes (the kernel's doubled bookkeeping is hidden from you).
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF in bytes.
    pub send_buffer: Option<usize>,
    /// Try UDP_SEGMENT (GSO) for sends.
    pub gso: bool,
    /// Try UDP_GRO for receives (receive slots then grow to 64 KiB).
    pub gro: bool,
    /// SO_TIMESTAMPNS: kernel receive timestamps on each datagram.
    pub timestamps: bool,
    /// SO_BUSY_POLL in microseconds.
    pub busy_poll_us: Option<u32>,
    /// Features to refuse as if the kernel had, to test the fallbacks.
    pub force: ForceFallback,
}

impl SocketConfig {
    /// A config with every optional feature off.
    pub fn new(bind: SocketAddr) -> Self {
        SocketConfig {
            bind,
            reuse_port: false,
            recv_buffer: None,
            send_buffer: None,
            gso: false,
            gro: false,
            timestamps: false,
            busy_poll_us: None,
            force: ForceFallback::default(),
        }
    }
}

/// Something the operator should know about; the socket works regardless.
#[derive(Debug)]
pub enum SocketWarning {
    /// The kernel granted a smaller buffer than asked; raise `sysctl`.
    BufferCapped {
        /// The socket option (`SO_RCVBUF` or `SO_SNDBUF`).
        option: &'static str,
        /// The sysctl that caps it.
        sysctl: &'static str,
        /// Bytes asked for.
        requested: usize,
        /// Bytes granted.
        granted: usize,
    },
    /// An optional feature was refused by the kernel (or forced off).
    Unsupported {
        /// What was refused (for example `UDP_GRO`).
        feature: &'static str,
        /// The kernel's answer.
        error: io::Error,
    },
}

impl fmt::Display for SocketWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketWarning::BufferCapped {
                option,
                sysctl,
                requested,
                granted,
            } => write!(
                f,
                "{option}: asked for {requested} bytes, kernel granted {granted}; raise sysctl {sysctl} to at least {requested}"
            ),
            SocketWarning::Unsupported { feature, error } => {
                write!(f, "{feature} unavailable, continuing without it: {error}")
            }
        }
    }
}

/// What actually took effect on the socket.
#[derive(Debug)]
pub struct SocketCaps {
    /// The address actually bound (the port chosen when 0 was asked).
    pub local_addr: SocketAddr,
    /// The socket's family is IPv6 (IPv4 destinations are sent v4-mapped).
    pub ipv6: bool,
    /// Usable receive buffer in bytes (half the kernel's doubled SO_RCVBUF value).
    pub recv_buffer: usize,
    /// Usable send buffer in bytes.
    pub send_buffer: usize,
    /// `SO_REUSEPORT` is on: several workers may bind the same address.
    pub reuse_port: bool,
    /// UDP_SEGMENT is accepted by setsockopt. Sends may still refuse it; the
    /// drivers then turn GSO off for this socket and count it.
    pub gso: bool,
    /// Most segments the kernel accepts in one GSO send (UDP_MAX_SEGMENTS).
    pub gso_max_segments: usize,
    /// `UDP_GRO` is on: receives may carry several datagrams in one buffer.
    pub gro: bool,
    /// `SO_TIMESTAMPNS` is on: datagrams carry the kernel's receive time.
    pub timestamps: bool,
    /// `SO_BUSY_POLL` is on.
    pub busy_poll: bool,
    /// Forced fallbacks still pending at run time (e.g. the GSO send failure).
    pub force: ForceFallback,
    /// What the operator should hear about; the socket works regardless.
    pub warnings: Vec<SocketWarning>,
}

/// The kernel's UDP_MAX_SEGMENTS has been 64 since GSO appeared (128 from 6.x);
/// 64 is safe everywhere.
pub const GSO_MAX_SEGMENTS: usize = 64;

fn new_udp_socket(bind: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match bind {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call with constant arguments; the returned fd is
    // checked and immediately wrapped in an OwnedFd so it cannot leak.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if fd < 0 {
        return Err(sys::last_error());
    }
    // SAFETY: fd is a freshly created, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_fd(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let mut raw = sys::RawAddr::zeroed();
    let v6 = addr.is_ipv6();
    let len = sys::encode_addr(addr, v6, &mut raw)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: raw holds a correctly encoded sockaddr of `len` bytes for this family.
    let rc = unsafe { libc::bind(fd, raw.bytes.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(sys::last_error())
    }
}

/// Sets a socket buffer and reads back what the kernel granted, warning when capped.
fn set_buffer(
    fd: RawFd,
    option: i32,
    name: &'static str,
    sysctl: &'static str,
    requested: Option<usize>,
    warnings: &mut Vec<SocketWarning>,
) -> io::Result<usize> {
    if let Some(req) = requested {
        let value = i32::try_from(req).unwrap_or(i32::MAX);
        sys::setsockopt_int(fd, libc::SOL_SOCKET, option, value)?;
    }
    // Linux doubles the value for bookkeeping overhead; report the usable half.
    let granted =
        usize::try_from(sys::getsockopt_int(fd, libc::SOL_SOCKET, option)?).unwrap_or(0) / 2;
    if let Some(req) = requested {
        if granted < req {
            let w = SocketWarning::BufferCapped {
                option: name,
                sysctl,
                requested: req,
                granted,
            };
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    Ok(granted)
}

fn forced_refusal() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "refused by ForceFallback")
}

fn try_feature(
    feature: &'static str,
    forced_off: bool,
    warnings: &mut Vec<SocketWarning>,
    set: impl FnOnce() -> io::Result<()>,
) -> bool {
    let result = if forced_off {
        Err(forced_refusal())
    } else {
        set()
    };
    match result {
        Ok(()) => true,
        Err(error) => {
            let w = SocketWarning::Unsupported { feature, error };
            tracing::warn!("{w}");
            warnings.push(w);
            false
        }
    }
}

/// Opens a non-blocking UDP socket per `cfg` and reports what took effect.
/// Fails only when the socket cannot be created, tuned for a requested buffer
/// size at all, or bound; missing optional features become warnings.
pub fn open_udp(cfg: &SocketConfig) -> io::Result<(UdpSocket, SocketCaps)> {
    let owned = new_udp_socket(&cfg.bind)?;
    let fd = owned.as_raw_fd();
    let mut warnings = Vec::new();

    if cfg.reuse_port {
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let recv_buffer = set_buffer(
        fd,
        libc::SO_RCVBUF,
        "SO_RCVBUF",
        "net.core.rmem_max",
        cfg.recv_buffer,
        &mut warnings,
    )?;
    let send_buffer = set_buffer(
        fd,
        libc::SO_SNDBUF,
        "SO_SNDBUF",
        "net.core.wmem_max",
        cfg.send_buffer,
        &mut warnings,
    )?;
    bind_fd(fd, &cfg.bind)?;

    // Setting UDP_SEGMENT to 0 is a no-op that only succeeds where the kernel
    // knows the option, which is exactly the probe we want; the size itself
    // travels per send in a cmsg.
    let gso = cfg.gso
        && try_feature(
            "UDP_SEGMENT (GSO)",
            cfg.force.gso_probe,
            &mut warnings,
            || sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0),
        );
    let gro = cfg.gro
        && try_feature("UDP_GRO", cfg.force.gro, &mut warnings, || {
            sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
        });
    let timestamps = cfg.timestamps
        && try_feature("SO_TIMESTAMPNS", false, &mut warnings, || {
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
        });
    let busy_poll = match cfg.busy_poll_us {
        Some(us) => try_feature("SO_BUSY_POLL", false, &mut warnings, || {
            sys::setsockopt_int(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BUSY_POLL,
                i32::try_from(us).unwrap_or(i32::MAX),
            )
        }),
        None => false,
    };

    let socket = UdpSocket::from(owned);
    let local_addr = socket.local_addr()?;
    let caps = SocketCaps {
        local_addr,
        ipv6: cfg.bind.is_ipv6(),
        recv_buffer,
        send_buffer,
        reuse_port: cfg.reuse_port,
        gso,
        gso_max_segments: GSO_MAX_SEGMENTS,
        gro,
        timestamps,
        busy_poll,
        force: cfg.force,
        warnings,
    };
    Ok((socket, caps))
}

/// Turns UDP_GRO off again (for drivers that cannot walk coalesced buffers).
pub(crate) fn disable_gro(fd: RawFd) -> io::Result<()> {
    sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn opens_nonblocking_and_reports_features() {
        let mut cfg = SocketConfig::new(lo());
        cfg.gso = true;
        cfg.gro = true;
        cfg.timestamps = true;
        let (sock, caps) = open_udp(&cfg).unwrap();
        assert_eq!(sock.local_addr().unwrap(), caps.local_addr);
        assert_ne!(caps.local_addr.port(), 0);
        // Non-blocking: an empty receive returns at once.
        let mut b = [0u8; 8];
        let e = sock.recv_from(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Linux >= 5.0 supports all three on loopback.
        assert!(caps.gso && caps.gro && caps.timestamps, "{caps:?}");
    }

    #[test]
    fn forced_refusals_become_warnings() {
        let mut cfg = SocketConfig::new(lo());
        cfg.gso = true;
        cfg.gro = true;
        cfg.force.gso_probe = true;
        cfg.force.gro = true;
        let (_sock, caps) = open_udp(&cfg).unwrap();
        assert!(!caps.gso && !caps.gro);
        assert_eq!(caps.warnings.len(), 2);
    }

    #[test]
    fn busy_poll_takes_effect_or_is_explained() {
        let mut cfg = SocketConfig::new(lo());
        cfg.busy_poll_us = Some(50);
        let (_sock, caps) = open_udp(&cfg).unwrap();
        // Unprivileged processes may be refused; then a warning says so.
        assert!(caps.busy_poll || !caps.warnings.is_empty());
    }

    #[test]
    fn reuse_port_lets_two_sockets_share_a_port() {
        let mut cfg = SocketConfig::new(lo());
        cfg.reuse_port = true;
        let (_a, caps) = open_udp(&cfg).unwrap();
        cfg.bind = caps.local_addr;
        let (_b, caps_b) = open_udp(&cfg).unwrap();
        assert_eq!(caps_b.local_addr, caps.local_addr);
    }
}
