//! `BasicDriver`: one `recv_from`/`send_to` per datagram through std's socket.
//!
//! The portable comparison point for the batched drivers, and the driver of
//! last resort. Owns nothing but the socket and a small `BufferRing`. It must
//! never use GRO, GSO or control messages (std's API has no room for them), so
//! it switches GRO off on its socket and reports no kernel timestamps.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::ring::{BufferRing, RingLayout};
use super::sendq::{send_slot_of, Retry, SendQueue};
use super::socket::{disable_gro, SocketCaps};
use super::sys::{self, classify_recv_error, classify_send_error, RecvFailure, SendFailure};

use super::{Datagram, Driver, DriverConfig, Flow, RecvStats, SendSlot, SendStats, Wait, Waker};

/// One datagram per `recv_from`/`send_to`: the portable comparison point.
pub struct BasicDriver {
    socket: UdpSocket,
    caps: SocketCaps,
    cfg: DriverConfig,
    ring: BufferRing,
    queue: SendQueue,
    waker: Option<Arc<Waker>>,
}

impl BasicDriver {
    /// Wraps an opened socket; allocates its one receive slot and the send queue now.
    pub fn new(socket: UdpSocket, mut caps: SocketCaps, cfg: &DriverConfig) -> io::Result<Self> {
        cfg.validate()?;
        if caps.gro {
            disable_gro(socket.as_raw_fd())?;
            caps.gro = false;
        }
        caps.gso = false;
        caps.timestamps = false;
        let ring = BufferRing::new(RingLayout {
            recv_slots: 1,
            // One spare byte: a read that fills it proves the datagram was
            // longer than max_datagram, which std's recv_from cannot report.
            recv_slot_size: cfg.max_datagram + 1,
            send_slots: cfg.send_slots,
            send_slot_size: cfg.max_datagram,
        })?;
        Ok(BasicDriver {
            socket,
            caps,
            cfg: *cfg,
            ring,
            queue: SendQueue::new(cfg.send_slots),
            waker: None,
        })
    }

    /// One non-blocking receive. Ok(None) when nothing was queued, else what the
    /// callback said (Continue when nothing was handed over).
    fn recv_one(
        &mut self,
        stats: &mut RecvStats,
        on_datagram: &mut dyn FnMut(Datagram<'_>) -> Flow,
    ) -> io::Result<Option<Flow>> {
        let Some(slot) = self.ring.recv_slot(0) else {
            return Ok(None);
        };
        let max = self.cfg.max_datagram;
        let buf = self.ring.slot_mut(slot);
        stats.syscalls += 1;
        match self.socket.recv_from(buf) {
            Ok((n, src)) => {
                let mut flow = Flow::Continue;
                if n > max {
                    stats.truncated += 1;
                } else if let Some(data) = buf.get_mut(..n) {
                    stats.datagrams += 1;
                    flow = on_datagram(Datagram {
                        src,
                        data,
                        kernel_time: None,
                        // One datagram per call: nothing ahead is known.
                        next_header: None,
                        later_header: None,
                    });
                }
                Ok(Some(flow))
            }
            Err(e) => match classify_recv_error(sys::errno_of(&e)) {
                RecvFailure::Empty | RecvFailure::Interrupted => Ok(None),
                RecvFailure::Absorbed => {
                    stats.errors += 1;
                    Ok(Some(Flow::Continue))
                }
                RecvFailure::Fatal => Err(e),
            },
        }
    }
}

impl Driver for BasicDriver {
    fn name(&self) -> &'static str {
        "basic"
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
        let mut waited = false;
        let mut progressed = 0usize;
        while progressed < self.cfg.batch {
            // One datagram is read per call, so a pause leaves nothing read and
            // not handed over: the rest stays in the kernel's queue.
            match self.recv_one(&mut stats, on_datagram)? {
                Some(Flow::Pause) => break,
                Some(Flow::Continue) => {
                    progressed += 1;
                    continue;
                }
                None => {}
            }
            if progressed > 0 || waited {
                break;
            }
            let timeout = match wait {
                Wait::NoWait => break,
                Wait::Timeout(d) => Some(d),
                Wait::Forever => None,
            };
            waited = true;
            stats.syscalls += 1;
            let waker = self.waker.as_ref().map(|w| w.raw_fd());
            let (readable, woken) = sys::poll_read_two(self.socket.as_raw_fd(), waker, timeout)?;
            stats.woken |= woken;
            if !readable {
                break;
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
        let mut retry = Retry::new(self.cfg.would_block, self.cfg.nobufs_retries);
        let fd = self.socket.as_raw_fd();
        let total = self.queue.len();
        let mut k = 0;
        while k < total {
            let (Some(meta), Some(slot)) = (
                self.queue.pending().get(k).copied(),
                send_slot_of(&self.ring, k),
            ) else {
                break;
            };
            let data = self.ring.slot(slot).get(..meta.len).unwrap_or(&[]);
            stats.syscalls += 1;
            match self.socket.send_to(data, meta.dst) {
                Ok(_) => {
                    stats.datagrams_sent += 1;
                    retry.progress();
                    k += 1;
                }
                Err(e) => match classify_send_error(sys::errno_of(&e), false) {
                    SendFailure::Interrupted => {}
                    SendFailure::WouldBlock => {
                        if !retry.would_block(fd, &mut stats)? {
                            stats.dropped_would_block += total - k;
                            break;
                        }
                    }
                    SendFailure::NoBufs => {
                        if !retry.nobufs() {
                            stats.dropped_nobufs += 1;
                            k += 1;
                        }
                    }
                    SendFailure::Fatal => {
                        self.queue.clear();
                        return Err(e);
                    }
                    SendFailure::GsoRefused | SendFailure::DropDatagram => {
                        stats.dropped_error += 1;
                        k += 1;
                    }
                },
            }
        }
        self.queue.clear();
        Ok(stats)
    }

    fn gso_active(&self) -> bool {
        false
    }

    fn set_waker(&mut self, waker: Option<Arc<Waker>>) {
        self.waker = waker;
    }
}
