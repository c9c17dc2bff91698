//! `intentra-proxy`: a loopback UDP proxy that loses, duplicates, reorders and delays
//! packets, deterministically from a seed, so Reliable mode can be exercised over real
//! sockets on kernels without netem.
//!
//! Owns the sockets, the clock and the packet buffers; every decision is taken by the
//! pure `impair::Impairer` (one per direction). It must never listen on or forward to
//! anything but loopback addresses.
//!
//! Topology: clients send to `--listen`; for each client address the proxy opens its own
//! upstream socket connected to `--upstream`, so the server sees one distinct source
//! address per client and replies find their way back to the right client.
//! "up" is client -> upstream, "down" is upstream -> client.
//!
//! Cheap per datagram, so that it is not what a benchmark measures: IPv4 sockets are read
//! with `recvmmsg` and written with `sendmmsg` (`intentra::udp::raw`, which speaks
//! `sockaddr_in` only), waits have nanosecond resolution (`ppoll`), and every socket asks
//! for 4 MiB buffers. IPv6 sockets keep one `recv_from`/`send_to` per datagram.

mod impair;

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use impair::{Fate, ImpairStats, Impairer, Impairments, Probability};
use intentra::proto::Timestamp;
use intentra::udp::raw::{self, Outgoing, RecvBatch, SendBatch, BATCH};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

/// Largest datagram the proxy forwards; intentra never sends more than 1452 bytes.
/// The same as a `RecvBatch` slot, so a datagram it truncates is exactly one too long here.
const SLOT_LEN: usize = raw::SLOT_LEN;
/// How many datagrams one readable socket may deliver before the others get a turn.
const RECV_BURST: usize = 256;
/// `recvmmsg` calls per readable socket and round: exactly `RECV_BURST` datagrams at most.
const RECV_CALLS: usize = RECV_BURST / BATCH;
const _: () = assert!(RECV_BURST % BATCH == 0 && RECV_CALLS > 0);
/// Receive and send buffer asked for on every socket, so that a scheduling hiccup of a few
/// milliseconds at 100,000 datagrams/s does not overflow the kernel's default.
const SOCKET_BUFFER: usize = 4 << 20;
/// Upper bound on one poll wait, so `--duration` is honoured promptly.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// A value for both directions ("X") or for each ("UP:DOWN").
#[derive(Debug, Clone, Copy)]
struct PerDir<T> {
    up: T,
    down: T,
}

impl<T: FromStr + Copy> FromStr for PerDir<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |v: &str| v.trim().parse::<T>().map_err(|e| format!("{v:?}: {e}"));
        match s.split_once(':') {
            Some((up, down)) => Ok(PerDir {
                up: parse(up)?,
                down: parse(down)?,
            }),
            None => {
                let both = parse(s)?;
                Ok(PerDir {
                    up: both,
                    down: both,
                })
            }
        }
    }
}

/// A probability on the command line: a fraction in [0, 1].
#[derive(Debug, Clone, Copy)]
struct Prob(Probability);

impl FromStr for Prob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let value: f64 = s.parse().map_err(|e| format!("{e}"))?;
        Probability::new(value)
            .map(Prob)
            .ok_or_else(|| "must be a fraction between 0 and 1".to_string())
    }
}

/// A duration on the command line, in (possibly fractional) milliseconds.
#[derive(Debug, Clone, Copy)]
struct Millis(Duration);

impl FromStr for Millis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ms: f64 = s.parse().map_err(|e| format!("{e}"))?;
        if !(0.0..=3_600_000.0).contains(&ms) {
            return Err("must be between 0 and 3600000 ms".to_string());
        }
        Ok(Millis(Duration::from_secs_f64(ms / 1000.0)))
    }
}

/// Loopback UDP impairment proxy. Every impairment takes either one value for both
/// directions or "UP:DOWN" (up = client to upstream).
#[derive(Parser, Debug)]
#[command(name = "intentra-proxy", version)]
struct Args {
    /// Address clients send to (loopback only; port 0 picks one, printed at start).
    #[arg(long)]
    listen: SocketAddr,
    /// Address packets are forwarded to (loopback only).
    #[arg(long)]
    upstream: SocketAddr,
    /// Seed for every impairment decision.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Loss probability, e.g. 0.3 or 0.3:0.
    #[arg(long, default_value = "0")]
    loss: PerDir<Prob>,
    /// Probability that a packet is sent twice.
    #[arg(long, default_value = "0")]
    duplicate: PerDir<Prob>,
    /// Probability that a packet is held back and overtaken.
    #[arg(long, default_value = "0")]
    reorder: PerDir<Prob>,
    /// A held packet is released after this many later packets...
    #[arg(long, default_value = "3")]
    reorder_gap: PerDir<u32>,
    /// ...or after this many milliseconds, whichever comes first.
    #[arg(long, default_value = "10")]
    reorder_hold: PerDir<Millis>,
    /// One-way delay in milliseconds.
    #[arg(long, default_value = "0")]
    delay: PerDir<Millis>,
    /// Delay varies uniformly by up to this many milliseconds either way.
    #[arg(long, default_value = "0")]
    jitter: PerDir<Millis>,
    /// Exit after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Most distinct client addresses tracked; later ones are dropped and counted.
    #[arg(long, default_value_t = 1024)]
    max_clients: usize,
    /// Datagrams buffered at once across both directions.
    #[arg(long, default_value_t = 8192)]
    buffers: usize,
}

impl Args {
    fn impairments(&self, up: bool) -> Impairments {
        let pick = |v: PerDir<Prob>| if up { v.up.0 } else { v.down.0 };
        let pick_ms = |v: PerDir<Millis>| if up { v.up.0 } else { v.down.0 };
        Impairments {
            loss: pick(self.loss),
            duplicate: pick(self.duplicate),
            reorder: pick(self.reorder),
            reorder_gap: if up {
                self.reorder_gap.up
            } else {
                self.reorder_gap.down
            },
            reorder_hold: pick_ms(self.reorder_hold),
            delay: pick_ms(self.delay),
            jitter: pick_ms(self.jitter),
        }
    }
}

/// Fixed-size datagram buffers shared by both directions, with reference counts so a
/// duplicated packet is stored once.
struct Pool {
    bytes: Vec<u8>,
    len: Vec<u16>,
    client: Vec<u32>,
    refs: Vec<u8>,
    free: Vec<u32>,
}

impl Pool {
    fn new(slots: usize) -> Pool {
        Pool {
            bytes: vec![0; slots * SLOT_LEN],
            len: vec![0; slots],
            client: vec![0; slots],
            refs: vec![0; slots],
            free: (0..slots as u32).rev().collect(),
        }
    }

    /// Copies `data` into a free slot tagged with `client`.
    fn store(&mut self, data: &[u8], client: u32) -> Option<u32> {
        let slot = self.free.pop()?;
        let i = slot as usize;
        let start = i * SLOT_LEN;
        let dst = self.bytes.get_mut(start..start + data.len())?;
        dst.copy_from_slice(data);
        self.len[i] = data.len() as u16;
        self.client[i] = client;
        self.refs[i] = 1;
        Some(slot)
    }

    fn set_refs(&mut self, slot: u32, refs: u8) {
        self.refs[slot as usize] = refs;
        if refs == 0 {
            self.free.push(slot);
        }
    }

    fn release(&mut self, slot: u32) {
        let refs = self.refs[slot as usize].saturating_sub(1);
        self.set_refs(slot, refs);
    }

    fn data(&self, slot: u32) -> &[u8] {
        &self.bytes[self.offset(slot)..self.offset(slot) + self.len(slot)]
    }

    /// Every slot, back to back: what `Outgoing` offsets point into.
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where `slot`'s datagram starts in `bytes`.
    fn offset(&self, slot: u32) -> usize {
        slot as usize * SLOT_LEN
    }

    fn len(&self, slot: u32) -> usize {
        usize::from(self.len[slot as usize])
    }

    /// `slot`'s datagram as one entry of a `sendmmsg` to `dst`.
    fn outgoing(&self, slot: u32, dst: SocketAddr) -> Outgoing {
        Outgoing {
            dst,
            offset: self.offset(slot),
            len: self.len(slot),
        }
    }

    fn client(&self, slot: u32) -> usize {
        self.client[slot as usize] as usize
    }
}

struct Client {
    addr: SocketAddr,
    upstream: UdpSocket,
}

/// Counters the impairer does not keep: socket-level events.
#[derive(Default)]
struct IoStats {
    received: u64,
    sent: u64,
    send_errors: u64,
    recv_errors: u64,
    oversize: u64,
    no_buffer: u64,
}

struct Direction {
    impairer: Impairer<u32>,
    io: IoStats,
}

impl Direction {
    fn new(config: Impairments, seed: u64, capacity: usize) -> Direction {
        Direction {
            impairer: Impairer::new(config, seed, capacity),
            io: IoStats::default(),
        }
    }

    fn report(&self, name: &str) -> String {
        let ImpairStats {
            dropped,
            duplicated,
            reordered,
            overflow,
            ..
        } = self.impairer.stats();
        format!(
            "{name} received={} lost={dropped} duplicated={duplicated} reordered={reordered} \
             sent={} overflow={overflow} oversize={} no_buffer={} send_errors={} recv_errors={} \
             pending_at_exit={}",
            self.io.received,
            self.io.sent,
            self.io.oversize,
            self.io.no_buffer,
            self.io.send_errors,
            self.io.recv_errors,
            self.impairer.pending(),
        )
    }
}

/// The client table: one upstream socket per client address.
struct Clients {
    list: Vec<Client>,
    by_addr: HashMap<SocketAddr, u32>,
    max: usize,
    rejected: u64,
    upstream_addr: SocketAddr,
    /// Upstream sockets are IPv4, so they are read and written in batches.
    batched: bool,
}

impl Clients {
    fn new(upstream_addr: SocketAddr, max: usize) -> Clients {
        Clients {
            list: Vec::with_capacity(max),
            by_addr: HashMap::with_capacity(max),
            max,
            rejected: 0,
            upstream_addr,
            batched: upstream_addr.is_ipv4(),
        }
    }

    /// The index of `from`'s client entry, opening its upstream socket on first sight.
    fn index(&mut self, from: SocketAddr) -> Option<u32> {
        if let Some(&i) = self.by_addr.get(&from) {
            return Some(i);
        }
        if self.list.len() >= self.max {
            self.rejected += 1;
            return None;
        }
        let local: IpAddr = match self.upstream_addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        let upstream = UdpSocket::bind((local, 0))
            .and_then(|s| s.connect(self.upstream_addr).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match upstream {
            Ok(upstream) => {
                raw::set_buffers(&upstream, SOCKET_BUFFER, SOCKET_BUFFER);
                let i = self.list.len() as u32;
                self.list.push(Client {
                    addr: from,
                    upstream,
                });
                self.by_addr.insert(from, i);
                Some(i)
            }
            Err(e) => {
                eprintln!("intentra-proxy: cannot open upstream socket for {from}: {e}");
                self.rejected += 1;
                None
            }
        }
    }
}

/// A run of due datagrams that leave through one socket, sent with as few `sendmmsg`
/// calls as the kernel allows. Both vectors hold at most `BATCH` entries and never grow.
struct SendRun {
    batch: SendBatch,
    out: Vec<Outgoing>,
    slots: Vec<u32>,
    /// The socket the queued datagrams leave through.
    fd: Option<RawFd>,
}

impl SendRun {
    fn new() -> SendRun {
        SendRun {
            batch: SendBatch::new(),
            out: Vec::with_capacity(BATCH),
            slots: Vec::with_capacity(BATCH),
            fd: None,
        }
    }

    /// Queues `slot`'s datagram to leave through `fd`; sends what is queued first if it
    /// leaves through another socket or fills a batch, so due order is kept.
    fn push(&mut self, fd: RawFd, slot: u32, dst: SocketAddr, pool: &mut Pool, io: &mut IoStats) {
        if self.fd != Some(fd) || self.out.len() >= BATCH {
            self.send(pool, io);
        }
        self.fd = Some(fd);
        self.out.push(pool.outgoing(slot, dst));
        self.slots.push(slot);
    }

    /// Sends every queued datagram, counts each as sent or failed exactly once, as one
    /// `send_to` each would, and releases their slots.
    ///
    /// `sendmmsg` stops at the first datagram that fails and reports only how many went
    /// before it (or the error, if it was the first): that one counts as a send error and
    /// the rest are sent by the next call. A full socket buffer (`WouldBlock`) is an error
    /// like any other, as it is for a single send.
    fn send(&mut self, pool: &mut Pool, io: &mut IoStats) {
        if let Some(fd) = self.fd {
            let mut next = 0;
            while let Some(rest) = self.out.get(next..).filter(|rest| !rest.is_empty()) {
                let tried = rest.len().min(BATCH);
                match self.batch.send(fd, pool.bytes(), rest) {
                    Ok(taken) if taken > 0 => {
                        let taken = taken.min(tried);
                        io.sent += taken as u64;
                        next += taken;
                        if taken < tried {
                            io.send_errors += 1;
                            next += 1;
                        }
                    }
                    Ok(_) | Err(_) => {
                        io.send_errors += 1;
                        next += 1;
                    }
                }
            }
        }
        for &slot in &self.slots {
            pool.release(slot);
        }
        self.out.clear();
        self.slots.clear();
        self.fd = None;
    }
}

/// Where a batch of datagrams was read: the listen socket (clients, going up) or one
/// client's upstream socket (going down to that client).
#[derive(Debug, Clone, Copy)]
enum Source {
    Clients,
    Upstream(u32),
}

/// Which way due copies are flushed: "up" to the upstream, "down" to the clients.
#[derive(Debug, Clone, Copy)]
enum Going {
    Up,
    Down,
}

struct Proxy {
    listen: UdpSocket,
    /// The listen socket (and so every client address) is IPv4: batched syscalls.
    listen_batched: bool,
    clients: Clients,
    pool: Pool,
    up: Direction,
    down: Direction,
    /// For the per-datagram IPv6 path.
    scratch: Vec<u8>,
    /// For the batched IPv4 path, shared by every socket in turn.
    received: RecvBatch,
    run: SendRun,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intentra-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> io::Result<()> {
    if !args.listen.ip().is_loopback() || !args.upstream.ip().is_loopback() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "--listen and --upstream must be loopback addresses",
        ));
    }
    let deadline = match args.duration {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(_) => {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "--duration must be a non-negative number of seconds",
            ))
        }
        None => None,
    };

    // Signals arrive through a descriptor in the poll set: no handler, no unsafe.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(io::Error::from)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK).map_err(io::Error::from)?;

    let listen = UdpSocket::bind(args.listen)?;
    listen.set_nonblocking(true)?;
    // The kernel reports twice what it granted; less than asked means a capped rmem_max.
    let granted = raw::set_buffers(&listen, SOCKET_BUFFER, SOCKET_BUFFER);
    if granted < SOCKET_BUFFER {
        eprintln!("intentra-proxy: receive buffer capped at {granted} bytes (net.core.rmem_max)");
    }
    let local = listen.local_addr()?;
    println!("listening {local}");

    let capacity = args.buffers.clamp(1, 1 << 20);
    let mut proxy = Proxy {
        listen,
        listen_batched: local.is_ipv4(),
        clients: Clients::new(args.upstream, args.max_clients),
        pool: Pool::new(capacity),
        // Independent streams per direction, both derived from the one seed.
        up: Direction::new(args.impairments(true), args.seed, 2 * capacity),
        down: Direction::new(
            args.impairments(false),
            args.seed ^ 0x9e37_79b9_7f4a_7c15,
            2 * capacity,
        ),
        scratch: vec![0; 65536],
        received: RecvBatch::new(),
        run: SendRun::new(),
    };

    let start = Instant::now();
    let clock = || Timestamp::from_nanos(start.elapsed().as_nanos() as u64);
    let mut readable: Vec<usize> = Vec::with_capacity(args.max_clients + 2);
    loop {
        let now = clock();
        proxy.flush(now);
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }

        // Everything due at `now` was just sent, so a pending deadline is strictly later
        // and the wait is never zero: no spinning. Nanosecond resolution: a copy due in
        // 200 µs leaves after 200 µs (plus the kernel's timer slack), not after 1 ms.
        let mut wait = MAX_WAIT;
        for next in [
            proxy.up.impairer.next_deadline(),
            proxy.down.impairer.next_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            wait = wait.min(next.saturating_since(now));
        }
        let wait = TimeSpec::from(wait.max(Duration::from_nanos(1)));

        readable.clear();
        {
            // Rebuilt each round because the client set can grow; this allocates per
            // poll round, not per packet, and this is a test tool.
            let mut fds: Vec<PollFd> = Vec::with_capacity(proxy.clients.list.len() + 2);
            fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(proxy.listen.as_fd(), PollFlags::POLLIN));
            for client in &proxy.clients.list {
                fds.push(PollFd::new(client.upstream.as_fd(), PollFlags::POLLIN));
            }
            match ppoll(&mut fds, Some(wait), None) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            for (i, fd) in fds.iter().enumerate() {
                if fd.any().unwrap_or(false) {
                    readable.push(i);
                }
            }
        }
        if readable.first() == Some(&0) {
            break;
        }
        for &i in &readable {
            let now = clock();
            if i == 1 {
                proxy.receive_from_clients(now);
            } else {
                proxy.receive_from_upstream(i - 2, now);
            }
        }
    }

    // Whatever is still delayed or held is dropped at exit, and reported as such.
    println!("{}", proxy.up.report("up"));
    println!("{}", proxy.down.report("down"));
    println!(
        "clients={} rejected_clients={}",
        proxy.clients.list.len(),
        proxy.clients.rejected
    );
    Ok(())
}

impl Proxy {
    /// Sends every copy whose time has come, in both directions, in the order the
    /// impairers release them.
    fn flush(&mut self, now: Timestamp) {
        self.flush_going(Going::Up, now);
        self.flush_going(Going::Down, now);
    }

    /// Up, each client's copies leave through its own (connected) upstream socket: a
    /// `sendmsg` that names the connected peer is accepted on Linux, so `sendmmsg` takes the
    /// upstream address explicitly, and consecutive copies of one client share a call. Down,
    /// every copy leaves through the listen socket, to its client's address.
    fn flush_going(&mut self, going: Going, now: Timestamp) {
        let listen_fd = self.listen.as_raw_fd();
        let dir = match going {
            Going::Up => &mut self.up,
            Going::Down => &mut self.down,
        };
        while let Some(slot) = dir.impairer.pop_due(now) {
            let Some(c) = self.clients.list.get(self.pool.client(slot)) else {
                dir.io.send_errors += 1;
                self.pool.release(slot);
                continue;
            };
            let (fd, dst, batched) = match going {
                Going::Up => (
                    c.upstream.as_raw_fd(),
                    self.clients.upstream_addr,
                    self.clients.batched,
                ),
                Going::Down => (listen_fd, c.addr, self.listen_batched),
            };
            if batched {
                self.run.push(fd, slot, dst, &mut self.pool, &mut dir.io);
            } else {
                let data = self.pool.data(slot);
                let sent = match going {
                    Going::Up => c.upstream.send(data),
                    Going::Down => self.listen.send_to(data, dst),
                };
                count_send(&mut dir.io, sent);
                self.pool.release(slot);
            }
        }
        self.run.send(&mut self.pool, &mut dir.io);
    }

    fn receive_from_clients(&mut self, now: Timestamp) {
        if !self.listen_batched {
            return self.receive_from_clients_one_by_one(now);
        }
        self.receive_batched(self.listen.as_raw_fd(), Source::Clients, now);
    }

    /// Reads up to `RECV_BURST` datagrams from `fd` with `recvmmsg` and admits each into
    /// the direction `from` feeds.
    fn receive_batched(&mut self, fd: RawFd, from: Source, now: Timestamp) {
        for _ in 0..RECV_CALLS {
            let dir = match from {
                Source::Clients => &mut self.up,
                Source::Upstream(_) => &mut self.down,
            };
            let filled = match self.received.recv(fd, libc::MSG_DONTWAIT) {
                Ok(filled) => filled,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    dir.io.recv_errors += 1;
                    match from {
                        Source::Clients => return,
                        // ICMP port unreachable from a connected socket: upstream not
                        // (yet) up; what follows it may still be readable.
                        Source::Upstream(_) => continue,
                    }
                }
            };
            for i in 0..filled {
                let Some(got) = self.received.get(i) else {
                    break;
                };
                dir.io.received += 1;
                let client = match from {
                    Source::Upstream(client) => client,
                    Source::Clients => match self.clients.index(got.src) {
                        Some(client) => client,
                        None => continue,
                    },
                };
                admit(dir, &mut self.pool, got.data, got.truncated, client, now);
            }
            // A short batch drained the socket; poll says when there is more.
            if filled < BATCH {
                return;
            }
        }
    }

    /// IPv6: `RecvBatch` only decodes `sockaddr_in`, so one `recv_from` per datagram.
    fn receive_from_clients_one_by_one(&mut self, now: Timestamp) {
        for _ in 0..RECV_BURST {
            let (len, from) = match self.listen.recv_from(&mut self.scratch) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.up.io.recv_errors += 1;
                    return;
                }
            };
            self.up.io.received += 1;
            let Some(client) = self.clients.index(from) else {
                continue;
            };
            admit(
                &mut self.up,
                &mut self.pool,
                self.scratch.get(..len).unwrap_or_default(),
                false,
                client,
                now,
            );
        }
    }

    fn receive_from_upstream(&mut self, client: usize, now: Timestamp) {
        if !self.clients.batched {
            return self.receive_from_upstream_one_by_one(client, now);
        }
        let Some(c) = self.clients.list.get(client) else {
            return;
        };
        self.receive_batched(c.upstream.as_raw_fd(), Source::Upstream(client as u32), now);
    }

    /// IPv6 upstream: one `recv` per datagram.
    fn receive_from_upstream_one_by_one(&mut self, client: usize, now: Timestamp) {
        for _ in 0..RECV_BURST {
            let Some(c) = self.clients.list.get(client) else {
                return;
            };
            let len = match c.upstream.recv(&mut self.scratch) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP port unreachable from a connected socket: upstream not (yet) up.
                Err(_) => {
                    self.down.io.recv_errors += 1;
                    continue;
                }
            };
            self.down.io.received += 1;
            admit(
                &mut self.down,
                &mut self.pool,
                self.scratch.get(..len).unwrap_or_default(),
                false,
                client as u32,
                now,
            );
        }
    }
}

/// Buffers one received datagram and lets the direction's impairer decide its fate.
/// `truncated`: the receive buffer was too short for it (a `RecvBatch` slot).
fn admit(
    dir: &mut Direction,
    pool: &mut Pool,
    data: &[u8],
    truncated: bool,
    client: u32,
    now: Timestamp,
) {
    if truncated || data.len() > SLOT_LEN {
        dir.io.oversize += 1;
        return;
    }
    let Some(slot) = pool.store(data, client) else {
        dir.io.no_buffer += 1;
        return;
    };
    match dir.impairer.push(now, slot) {
        Fate::Forwarded { copies, .. } => pool.set_refs(slot, copies),
        Fate::Dropped | Fate::Overflow => pool.set_refs(slot, 0),
    }
}

fn count_send(io: &mut IoStats, result: io::Result<usize>) {
    match result {
        Ok(_) => io.sent += 1,
        Err(_) => io.send_errors += 1,
    }
}
