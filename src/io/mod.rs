//! I/O drivers: the only code that touches sockets. (Interim portable driver; the batched
//! Linux drivers replace this module.)
//!
//! Owns sockets and packet buffers and hands the runtime datagrams by reference.
//! It must never interpret a packet: the protocol core does that.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

/// A received datagram, in place in the driver's buffer.
pub struct Datagram<'a> {
    pub src: SocketAddr,
    pub data: &'a mut [u8],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    pub datagrams: usize,
    pub truncated: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    NoWait,
    Timeout(Duration),
    Forever,
}

pub trait Driver: Send {
    fn name(&self) -> &'static str;
    fn local_addr(&self) -> SocketAddr;
    fn recv_batch(
        &mut self,
        wait: Wait,
        on_datagram: &mut dyn FnMut(Datagram<'_>),
    ) -> io::Result<RecvStats>;
    fn send_buffer(&mut self) -> Option<&mut [u8]>;
    fn commit_send(&mut self, dst: SocketAddr, len: usize);
    fn flush(&mut self) -> io::Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Uring,
    Mmsg,
    Basic,
}

impl FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uring" => Ok(DriverKind::Uring),
            "mmsg" => Ok(DriverKind::Mmsg),
            "basic" => Ok(DriverKind::Basic),
            other => Err(format!("unknown driver {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    Block,
    BusySpin,
}

pub struct Idler {
    strategy: IdleStrategy,
}

impl Idler {
    pub fn new(strategy: IdleStrategy) -> Idler {
        Idler { strategy }
    }
    pub fn idle(&mut self) {}
    pub fn reset(&mut self) {}
    pub fn wait(&self, wait: Duration) -> Wait {
        match self.strategy {
            IdleStrategy::Block => Wait::Timeout(wait),
            IdleStrategy::BusySpin => Wait::NoWait,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SocketOptions {}

pub fn open(
    _kind: DriverKind,
    bind: SocketAddr,
    _options: &SocketOptions,
) -> io::Result<(Box<dyn Driver>, Option<String>)> {
    let socket = UdpSocket::bind(bind)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {bind}: {e}")))?;
    Ok((
        Box::new(BasicDriver {
            local: socket.local_addr()?,
            socket,
            rx: vec![0u8; 65_536],
            tx: vec![0u8; 64 * 2048],
            pending: Vec::with_capacity(64),
        }),
        None,
    ))
}

pub struct BasicDriver {
    socket: UdpSocket,
    local: SocketAddr,
    rx: Vec<u8>,
    tx: Vec<u8>,
    pending: Vec<(SocketAddr, usize)>,
}

impl Driver for BasicDriver {
    fn name(&self) -> &'static str {
        "basic"
    }
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    fn recv_batch(
        &mut self,
        wait: Wait,
        on_datagram: &mut dyn FnMut(Datagram<'_>),
    ) -> io::Result<RecvStats> {
        let mut stats = RecvStats::default();
        let timeout = match wait {
            Wait::NoWait => None,
            Wait::Timeout(d) => Some(d.max(Duration::from_micros(1))),
            Wait::Forever => Some(Duration::from_secs(3600)),
        };
        for i in 0..64 {
            if i == 0 && timeout.is_some() {
                self.socket.set_nonblocking(false)?;
                self.socket.set_read_timeout(timeout)?;
            } else if i <= 1 {
                self.socket.set_nonblocking(true)?;
            }
            match self.socket.recv_from(&mut self.rx) {
                Ok((len, src)) => {
                    stats.datagrams += 1;
                    on_datagram(Datagram {
                        src,
                        data: &mut self.rx[..len],
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(stats)
    }
    fn send_buffer(&mut self) -> Option<&mut [u8]> {
        let at = self.pending.len();
        self.tx.get_mut(at * 2048..(at + 1) * 2048)
    }
    fn commit_send(&mut self, dst: SocketAddr, len: usize) {
        self.pending.push((dst, len));
    }
    fn flush(&mut self) -> io::Result<()> {
        for (i, (dst, len)) in self.pending.drain(..).enumerate() {
            let _ = self.socket.send_to(&self.tx[i * 2048..i * 2048 + len], dst);
        }
        Ok(())
    }
}
