//! The receiver under test: one thread, one UDP socket, one `Endpoint` (or none for `--raw`),
//! batched receive, one-way latency into an HDR histogram.
//!
//! Owns the receive loop and what it measures: deliveries whose send timestamp falls in the
//! measurement window, their latency, the endpoint's drop counters, the kernel's socket drops
//! and the thread's own CPU time. It must never allocate or lock per packet, and it always
//! stops: at the stop time the main thread sets, or at its own hard deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use intentra::proto::wire::MAX_DATAGRAM_LEN;
use intentra::proto::Endpoint;
use intentra::proto::EndpointConfig;
use intentra::proto::Event;
use intentra::proto::Timestamp;
use intentra::proto::{DropReason, Stats};
use intentra::udp::{header_of, Datagram, Driver, NextHeader, Wait};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::Shared;
use intentra::udp::raw::{self as sys, Outgoing, RecvBatch, SendBatch, BATCH};

/// How long one receive call may wait, so the loop notices its stop time.
const RECV_WAIT: Duration = Duration::from_millis(5);

/// The receive path: the crate's driver, or the benchmark's own `recvmmsg` socket.
pub enum Rx {
    Driver(Box<dyn Driver>),
    Own(UdpSocket),
}

impl Rx {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Rx::Driver(d) => Ok(d.local_addr()),
            Rx::Own(s) => s.local_addr(),
        }
    }
}

/// The receive path with its buffers, built inside the receiver thread.
/// What the receive path hands each datagram to: its source, its bytes (opened in place) and
/// the starts of the batch's next datagram and of the one after it, if known (for
/// `intentra::prefetch_ahead`).
type OnDatagram<'a> = dyn FnMut(SocketAddr, &mut [u8], [Option<NextHeader>; 2]) + 'a;

struct RxPath {
    rx: Rx,
    /// Busy-spin: poll without waiting (the lowest-latency idle strategy).
    spin: bool,
    batch: RecvBatch,
    send: SendBatch,
    tx: Vec<u8>,
    out: Vec<Outgoing>,
}

impl RxPath {
    fn new(rx: Rx, spin: bool) -> RxPath {
        RxPath {
            rx,
            spin,
            batch: RecvBatch::new(),
            send: SendBatch::new(),
            tx: vec![0u8; BATCH * MAX_DATAGRAM_LEN],
            out: Vec::with_capacity(BATCH),
        }
    }

    /// One batch: waits up to `limit` for the first datagram. Returns (datagrams, truncated).
    fn recv(&mut self, limit: Duration, on: &mut OnDatagram<'_>) -> io::Result<(usize, usize)> {
        let wait = if self.spin {
            Wait::NoWait
        } else {
            Wait::Timeout(limit)
        };
        match &mut self.rx {
            Rx::Driver(driver) => {
                let stats = driver.recv_batch(wait, &mut |d: Datagram<'_>| {
                    on(d.src, d.data, [d.next_header, d.later_header])
                })?;
                Ok((stats.datagrams, stats.truncated))
            }
            Rx::Own(socket) => {
                let n = match self.batch.recv(socket.as_raw_fd(), libc::MSG_WAITFORONE) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok((0, 0))
                    }
                    Err(e) => return Err(e),
                };
                let mut truncated = 0;
                for i in 0..n {
                    let ahead =
                        [i + 1, i + 2].map(|at| self.batch.get(at).map(|d| header_of(d.data)));
                    if let Some(d) = self.batch.get(i) {
                        if d.truncated {
                            truncated += 1;
                        } else {
                            on(d.src, d.data, ahead);
                        }
                    }
                }
                Ok((n, truncated))
            }
        }
    }

    /// Lets `fill` write the next outgoing datagram into a send buffer (flushing first when
    /// the batch is full); `fill` returns where it goes and its length, or None for nothing.
    fn write(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>) -> bool {
        if let Rx::Driver(driver) = &mut self.rx {
            if driver.send_buffer().is_none() {
                let _ = driver.flush();
            }
        } else if self.out.len() >= BATCH {
            self.flush();
        }
        match &mut self.rx {
            Rx::Driver(driver) => {
                let Some(mut slot) = driver.send_buffer() else {
                    return false;
                };
                match fill(slot.buf()) {
                    Some((dst, len)) => slot.commit(dst, len).is_ok(),
                    None => false,
                }
            }
            Rx::Own(_) => {
                let at = self.out.len() * MAX_DATAGRAM_LEN;
                let Some(buf) = self.tx.get_mut(at..at + MAX_DATAGRAM_LEN) else {
                    return false;
                };
                match fill(buf) {
                    Some((dst, len)) => {
                        self.out.push(Outgoing {
                            dst,
                            offset: at,
                            len,
                        });
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Sends what is queued. Control traffic to the generator is best effort: a full socket
    /// there loses an ACK or keepalive, which the protocol tolerates.
    fn flush(&mut self) {
        match &mut self.rx {
            Rx::Driver(driver) => {
                let _ = driver.flush();
            }
            Rx::Own(socket) => {
                let _ = self.send.send(socket.as_raw_fd(), &self.tx, &self.out);
                self.out.clear();
            }
        }
    }
}

/// What the receiver measured.
pub struct SinkResult {
    /// Messages delivered whose send timestamp fell in the window.
    pub received: u64,
    /// Datagrams that delivered at least one of those messages (a bundle counts once).
    pub datagrams: u64,
    pub histogram: Histogram<u64>,
    pub negative_latency: u64,
    /// Endpoint drops by reason over the window (from its start to the receiver's stop).
    pub drops: Vec<(DropReason, u64)>,
    pub kernel_drops: Option<u64>,
    pub truncated: u64,
    pub cpu: Duration,
    pub error: Option<String>,
}

/// Counts and times deliveries by the send timestamp in their first 8 bytes.
struct Meter<'a> {
    shared: &'a Shared,
    window: (u64, u64),
    received: u64,
    datagrams: u64,
    histogram: Histogram<u64>,
    negative: u64,
    /// When the datagram being delivered handed over its first measured message: the
    /// arrival time of all of them, so a bundle costs one clock read, not one a message.
    arrival: Option<u64>,
}

impl Meter<'_> {
    /// Runs `deliver_all` for the messages of one received datagram and counts the datagram
    /// if any of them was measured: datagrams are counted by what they delivered, so a
    /// handshake, an ACK or a keepalive is not one, and neither is a message from the warm-up.
    fn datagram(&mut self, deliver_all: impl FnOnce(&mut Self)) {
        let before = self.received;
        self.arrival = None;
        deliver_all(self);
        self.arrival = None;
        if self.received > before {
            self.datagrams += 1;
        }
    }

    fn deliver(&mut self, payload: &[u8]) {
        let Some(stamp) = payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            return;
        };
        let sent = u64::from_le_bytes(stamp);
        if sent < self.window.0 || sent >= self.window.1 {
            return;
        }
        let shared = self.shared;
        let now = *self.arrival.get_or_insert_with(|| shared.now_ns());
        self.received += 1;
        let latency = match now.checked_sub(sent) {
            Some(l) => l,
            None => {
                self.negative += 1;
                0
            }
        };
        // Saturates at the histogram's upper bound rather than failing.
        self.histogram.saturating_record(latency.max(1));
    }
}

/// Runs the receiver until `shared.stop_at` (or `hard_stop_ns`). `endpoint` is `None` for raw.
pub fn run(
    rx: Rx,
    endpoint: Option<EndpointConfig>,
    shared: Arc<Shared>,
    hard_stop_ns: u64,
    spin: bool,
) -> SinkResult {
    let local = rx.local_addr().ok();
    let mut path = RxPath::new(rx, spin);
    let mut endpoint = endpoint.map(|config| {
        Endpoint::new(
            config,
            Timestamp::from_nanos(shared.now_ns()),
            ChaCha20Rng::from_entropy(),
        )
    });
    // As `intentra::Node` does when it binds: huge pages under the peer slab, before peers join.
    if let Some(endpoint) = endpoint.as_ref() {
        let _ = intentra::advise_huge_pages(endpoint);
    }
    // 1 ns to 60 s at 3 significant digits: bounds are valid, so creation cannot fail.
    let histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!()));
    let mut meter = Meter {
        shared: &shared,
        window: (u64::MAX, u64::MAX),
        received: 0,
        datagrams: 0,
        histogram,
        negative: 0,
        arrival: None,
    };
    let mut started: Option<(Stats, Duration, Option<u64>)> = None;
    let mut truncated = 0u64;
    let mut error = None;
    loop {
        let now_ns = shared.now_ns();
        if now_ns >= shared.stop_at.load(Ordering::Acquire) || now_ns >= hard_stop_ns {
            break;
        }
        if started.is_none() {
            let start = shared.window_start.load(Ordering::Acquire);
            if start != u64::MAX {
                meter.window = (start, shared.window_end.load(Ordering::Acquire));
                if now_ns >= start {
                    let stats = endpoint.as_ref().map(|e| e.stats()).unwrap_or_default();
                    started = Some((
                        stats,
                        sys::thread_cpu_time(),
                        local.and_then(sys::socket_drops),
                    ));
                }
            }
        }
        let now = Timestamp::from_nanos(now_ns);
        // Never sleep past the endpoint's next timer: a delayed ACK is due within its delay.
        let limit = endpoint
            .as_ref()
            .and_then(Endpoint::poll_timeout)
            .map_or(RECV_WAIT, |at| {
                RECV_WAIT.min(Duration::from_nanos(at.as_nanos().saturating_sub(now_ns)))
            });
        let result = match endpoint.as_mut() {
            Some(ep) => path.recv(limit, &mut |src, data, [next, later]| {
                // As the node does: the next datagram's peer state comes in meanwhile, and
                // the table entry of the one after.
                intentra::prefetch_ahead(ep, data, next, later);
                meter.datagram(|meter| {
                    for message in ep.handle_datagram(now, src, data) {
                        meter.deliver(message.payload);
                    }
                });
            }),
            None => path.recv(limit, &mut |_, data, _| {
                meter.datagram(|meter| meter.deliver(data));
            }),
        };
        match result {
            Ok((_, cut)) => {
                truncated += cut as u64;
                if let Some(ep) = endpoint.as_mut() {
                    for _ in 0..cut {
                        ep.record_external_drop(DropReason::Truncated);
                    }
                }
            }
            Err(e) => {
                error = Some(format!("receive failed: {e}"));
                break;
            }
        }
        if let Some(ep) = endpoint.as_mut() {
            let now = Timestamp::from_nanos(shared.now_ns());
            while let Some(event) = ep.poll_event() {
                if let Event::Message(message) = event {
                    meter.deliver(message.payload);
                }
            }
            if ep.poll_timeout().is_some_and(|at| at <= now) {
                ep.handle_timeout(now);
            }
            while ep.has_transmit() {
                let wrote = path.write(|buf| ep.poll_transmit(now, buf).map(|t| (t.dst, t.len)));
                if !wrote {
                    break;
                }
            }
            path.flush();
        }
    }
    let (stats_start, cpu_start, drops_start) =
        started.unwrap_or_else(|| (Stats::default(), sys::thread_cpu_time(), None));
    let stats = endpoint.as_ref().map(|e| e.stats()).unwrap_or_default();
    let drops = DropReason::ALL
        .iter()
        .map(|&r| (r, stats.dropped(r).saturating_sub(stats_start.dropped(r))))
        .collect();
    let kernel_drops = match (drops_start, local.and_then(sys::socket_drops)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    SinkResult {
        received: meter.received,
        datagrams: meter.datagrams,
        histogram: meter.histogram,
        negative_latency: meter.negative,
        drops,
        kernel_drops,
        truncated,
        cpu: sys::thread_cpu_time().saturating_sub(cpu_start),
        error,
    }
}
