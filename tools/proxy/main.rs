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

mod impair;

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use impair::{Fate, ImpairStats, Impairer, Impairments, Probability};
use intentra::proto::Timestamp;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Largest datagram the proxy forwards; intentra never sends more than 1452 bytes.
const SLOT_LEN: usize = 2048;
/// How many datagrams one readable socket may deliver before the others get a turn.
const RECV_BURST: usize = 256;
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
        let i = slot as usize;
        let start = i * SLOT_LEN;
        &self.bytes[start..start + usize::from(self.len[i])]
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

struct Proxy {
    listen: UdpSocket,
    upstream_addr: SocketAddr,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, u32>,
    max_clients: usize,
    rejected_clients: u64,
    pool: Pool,
    up: Direction,
    down: Direction,
    scratch: Vec<u8>,
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
    println!("listening {}", listen.local_addr()?);

    let capacity = args.buffers.clamp(1, 1 << 20);
    let mut proxy = Proxy {
        listen,
        upstream_addr: args.upstream,
        clients: Vec::with_capacity(args.max_clients),
        by_addr: HashMap::with_capacity(args.max_clients),
        max_clients: args.max_clients,
        rejected_clients: 0,
        pool: Pool::new(capacity),
        // Independent streams per direction, both derived from the one seed.
        up: Direction::new(args.impairments(true), args.seed, 2 * capacity),
        down: Direction::new(
            args.impairments(false),
            args.seed ^ 0x9e37_79b9_7f4a_7c15,
            2 * capacity,
        ),
        scratch: vec![0; 65536],
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
        // Round up: rounding a sub-millisecond wait down to zero would spin until due.
        let wait_ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);

        readable.clear();
        {
            // Rebuilt each round because the client set can grow; this allocates per
            // poll round, not per packet, and this is a test tool.
            let mut fds: Vec<PollFd> = Vec::with_capacity(proxy.clients.len() + 2);
            fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(proxy.listen.as_fd(), PollFlags::POLLIN));
            for client in &proxy.clients {
                fds.push(PollFd::new(client.upstream.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
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
        proxy.clients.len(),
        proxy.rejected_clients
    );
    Ok(())
}

impl Proxy {
    /// Sends every copy whose time has come, in both directions.
    fn flush(&mut self, now: Timestamp) {
        while let Some(slot) = self.up.impairer.pop_due(now) {
            let client = self.pool.client(slot);
            let sent = match self.clients.get(client) {
                Some(c) => c.upstream.send(self.pool.data(slot)),
                None => Err(ErrorKind::NotFound.into()),
            };
            count_send(&mut self.up.io, sent);
            self.pool.release(slot);
        }
        while let Some(slot) = self.down.impairer.pop_due(now) {
            let client = self.pool.client(slot);
            let sent = match self.clients.get(client) {
                Some(c) => self.listen.send_to(self.pool.data(slot), c.addr),
                None => Err(ErrorKind::NotFound.into()),
            };
            count_send(&mut self.down.io, sent);
            self.pool.release(slot);
        }
    }

    fn receive_from_clients(&mut self, now: Timestamp) {
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
            let Some(client) = self.client_index(from) else {
                continue;
            };
            admit(
                &mut self.up,
                &mut self.pool,
                self.scratch.get(..len).unwrap_or_default(),
                client,
                now,
            );
        }
    }

    fn receive_from_upstream(&mut self, client: usize, now: Timestamp) {
        for _ in 0..RECV_BURST {
            let Some(c) = self.clients.get(client) else {
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
                client as u32,
                now,
            );
        }
    }

    /// The index of `from`'s client entry, opening its upstream socket on first sight.
    fn client_index(&mut self, from: SocketAddr) -> Option<u32> {
        if let Some(&i) = self.by_addr.get(&from) {
            return Some(i);
        }
        if self.clients.len() >= self.max_clients {
            self.rejected_clients += 1;
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
                let i = self.clients.len() as u32;
                self.clients.push(Client {
                    addr: from,
                    upstream,
                });
                self.by_addr.insert(from, i);
                Some(i)
            }
            Err(e) => {
                eprintln!("intentra-proxy: cannot open upstream socket for {from}: {e}");
                self.rejected_clients += 1;
                None
            }
        }
    }
}

/// Buffers one received datagram and lets the direction's impairer decide its fate.
fn admit(dir: &mut Direction, pool: &mut Pool, data: &[u8], client: u32, now: Timestamp) {
    if data.len() > SLOT_LEN {
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
