//! The load generator: N peers, each a real intentra initiator `Endpoint` with its own key pair
//! and handshake (or plain payloads for `--raw`), sharing a few sender sockets bound to
//! distinct 127.0.0.x addresses, paced to `rate` per peer, sent in UDP GSO runs.
//!
//! Owns the handshake phase, the pacing, the send timestamps (nanoseconds of the shared clock
//! in each payload's first 8 bytes) and the demultiplexing of the receiver's replies (handshake
//! responses, ACKs, keepalives) to the peer they are for. It must never block on a socket
//! (every send is non-blocking; a refused send is counted, not retried) and never run past
//! the measurement window's end.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use intentra::proto::wire::{self, Header, MAX_DATAGRAM_LEN};
use intentra::proto::Endpoint;
use intentra::proto::EndpointConfig;
use intentra::proto::Timestamp;
use intentra::proto::{Event, Mode, PeerId, SendError, Sent};
use intentra::proto::{Keypair, PublicKey};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::Shared;
use intentra::udp::raw::{
    self as sys, Outgoing, RecvBatch, SendBatch, GSO_MAX_BYTES, GSO_MAX_SEGMENTS,
};

/// Handshakes the generator keeps in flight at once (the receiver's budget is set above it).
pub const HANDSHAKE_WINDOW: usize = 128;
/// Packets sealed per pass of the send loop before it looks at the clock and sockets again.
const PASS_BUDGET: u64 = 1024;
/// How many packets ahead the steady load has the next peer's send state fetched into the
/// cache (`Endpoint::send_state`), as the node's publish walks do.
const SEND_LOOKAHEAD: u64 = 2;
/// How often replies from the receiver are read and timers run during the load.
const DRAIN_EVERY: Duration = Duration::from_millis(2);
const TIMERS_EVERY: Duration = Duration::from_millis(10);
/// Packets the generator may be behind schedule before it skips them (in time at the target rate).
const MAX_BACKLOG: Duration = Duration::from_millis(50);
/// Longest sleep between passes, so a run is never held back much.
const MAX_IDLE: Duration = Duration::from_millis(1);
/// After the window, the longest a Reliable generator waits for its last messages to be
/// acknowledged (the receiver keeps receiving until the generator returns, and a little
/// more).
const SETTLE: Duration = Duration::from_secs(1);
/// How often the settling generator reads ACKs and fires retransmissions.
const SETTLE_POLL: Duration = Duration::from_micros(500);
/// Keepalives per second each side may send at most, all peers together (see `liveness`).
const KEEPALIVES_PER_S: u32 = 10_000;

/// The keepalive interval and idle timeout both sides use with `peers` peers: the protocol's
/// 1 s and 10 s up to 10,000 peers; above, the interval grows so that keepalives stay at
/// 10,000/s each way (at 100,000 peers the default would be 100,000/s each way through the
/// handshake phase, on the cores the handshakes need), and the timeout stays 10 intervals.
pub fn liveness(peers: u32) -> (Duration, Duration) {
    let keepalive = Duration::from_secs(1).max(Duration::from_secs_f64(
        f64::from(peers) / f64::from(KEEPALIVES_PER_S),
    ));
    (keepalive, keepalive * 10)
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `None` sends plain UDP; otherwise the receiver's key and the delivery mode.
    pub intentra: Option<(PublicKey, Mode)>,
    pub receiver: SocketAddr,
    pub peers: u32,
    pub rate_hz: u32,
    pub size: usize,
    pub sources: u32,
    pub gso: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub handshake_timeout: Duration,
    /// Keepalive interval and idle timeout of every peer (`liveness`).
    pub liveness: (Duration, Duration),
    /// `--reliable-window`: every peer's `ReliableConfig::max_queued_bytes`, if not the default.
    pub reliable_window: Option<usize>,
}

/// What a sender measured (the peers' generator or the producer thread).
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    pub send_failed: u64,
    pub send_would_block: u64,
    pub send_errors: u64,
    /// Packets skipped because the generator was more than `MAX_BACKLOG` behind schedule.
    pub skipped: u64,
    pub peers_up: u32,
    pub peers_lost: u32,
    pub handshake: Duration,
    pub gso_used: bool,
    pub datagram_len: usize,
    pub cpu: Duration,
    /// `--producer-thread`: the sending node's driver.
    pub sender_io: Option<String>,
    /// `--producer-thread`: sends the Handle refused with a full queue (then retried).
    pub queue_full: u64,
    /// `--producer-thread`: CPU the sending node's loop thread used over the window (as
    /// `cpu` is the producer's), measured at the first loop turn past each of its edges.
    pub loop_cpu: Option<Duration>,
}

/// Why a sender could not run.
#[derive(Debug)]
pub enum LoadError {
    Bind(SocketAddr, io::Error),
    NoPeersUp,
    /// `--producer-thread`: the sending node's loop failed.
    Node(io::Error),
    /// `--producer-thread`: the sending node's loop thread could not start or panicked.
    NodeThread,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Bind(a, e) => write!(f, "cannot bind sender socket {a}: {e}"),
            LoadError::NoPeersUp => f.write_str("no peer completed its handshake"),
            LoadError::Node(e) => write!(f, "the sending node failed: {e}"),
            LoadError::NodeThread => f.write_str("the sending node's thread failed"),
        }
    }
}

/// The sender address of source number `i`: 127.0.0.2, 127.0.0.3, ... (all of 127/8 is local).
pub fn source_addr(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + 2 + i);
    SocketAddr::V4(SocketAddrV4::new(ip, 0))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Handshaking,
    Up,
    Down,
}

struct Peer {
    endpoint: Endpoint,
    id: PeerId,
    socket: u16,
    state: PeerState,
    /// The deadline (ns) of this peer's live entry in `Generator::deadlines`; `u64::MAX`
    /// when it has none.
    scheduled: u64,
}

/// The equal-size datagrams being gathered for one GSO send from one socket.
struct Run {
    buf: Vec<u8>,
    socket: u16,
    count: usize,
    in_window: u64,
}

struct Generator<'a> {
    config: &'a LoadConfig,
    shared: &'a Shared,
    sockets: Vec<UdpSocket>,
    peers: Vec<Peer>,
    /// (socket, our session index) -> peer, to hand each reply to the endpoint it is for.
    by_index: HashMap<(u16, u32), u32>,
    batch: RecvBatch,
    send: SendBatch,
    out: Vec<Outgoing>,
    /// Peers that received something in the current batch, to settle after it.
    touched: Vec<u32>,
    control: Vec<u8>,
    run: Run,
    segment: usize,
    max_segments: usize,
    gso: bool,
    result: LoadResult,
    window: (u64, u64),
    /// Peers in `PeerState::Up`, kept as they change (counting them is O(peers)).
    up: u64,
    /// Peers by their endpoint's next timer deadline (ns), soonest first, so a timer pass
    /// visits only the peers that are due: with 100,000 peers a pass over all of them (one
    /// cache miss each) cost more than the whole offered load. An entry whose deadline is
    /// not its peer's `scheduled` one was superseded by an earlier one and is skipped.
    deadlines: BinaryHeap<Reverse<(u64, u32)>>,
}

/// Runs the whole load: handshakes, warm-up, measured window. Returns what was sent.
pub fn run(config: LoadConfig, shared: Arc<Shared>) -> Result<LoadResult, LoadError> {
    let mut sockets = Vec::new();
    for i in 0..config.sources.max(1) {
        let addr = source_addr(i);
        let socket = UdpSocket::bind(addr).map_err(|e| LoadError::Bind(addr, e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| LoadError::Bind(addr, e))?;
        sys::set_buffers(&socket, 4 << 20, 4 << 20);
        sockets.push(socket);
    }
    let gso = config.gso && sockets.first().is_some_and(sys::gso_supported);
    let overhead = match config.intentra {
        None => 0,
        Some((_, Mode::Realtime)) => wire::TRANSPORT_OVERHEAD,
        Some((_, Mode::Reliable)) => wire::TRANSPORT_OVERHEAD + wire::RELIABLE_SEQ_LEN,
    };
    let segment = config.size + overhead;
    let max_segments = (GSO_MAX_BYTES / segment.max(1)).clamp(1, GSO_MAX_SEGMENTS);
    let mut generator = Generator {
        config: &config,
        shared: &shared,
        sockets,
        peers: Vec::new(),
        by_index: HashMap::new(),
        batch: RecvBatch::new(),
        send: SendBatch::new(),
        out: Vec::with_capacity(sys::BATCH),
        touched: Vec::with_capacity(sys::BATCH),
        control: vec![0u8; MAX_DATAGRAM_LEN],
        run: Run {
            buf: vec![0u8; segment * max_segments],
            socket: 0,
            count: 0,
            in_window: 0,
        },
        segment,
        max_segments,
        gso,
        result: LoadResult {
            datagram_len: segment,
            ..LoadResult::default()
        },
        window: (u64::MAX, u64::MAX),
        up: 0,
        deadlines: BinaryHeap::new(),
    };
    let started = shared.now_ns();
    let order = match config.intentra {
        Some((key, _)) => {
            generator.handshake(key);
            let up: Vec<u32> = (0..generator.peers.len() as u32)
                .filter(|&i| {
                    generator
                        .peers
                        .get(i as usize)
                        .is_some_and(|p| p.state == PeerState::Up)
                })
                .collect();
            generator.result.peers_up = up.len() as u32;
            up
        }
        None => {
            generator.result.peers_up = config.peers;
            (0..config.peers).collect()
        }
    };
    generator.result.handshake = Duration::from_nanos(shared.now_ns().saturating_sub(started));
    if order.is_empty() {
        return Err(LoadError::NoPeersUp);
    }
    generator.load(order);
    generator.result.gso_used = generator.gso;
    if let Some((_, Mode::Reliable)) = config.intentra {
        generator.settle_reliable();
        generator.result.send_would_block = generator
            .peers
            .iter()
            .map(|p| p.endpoint.stats().send_would_block)
            .sum();
    }
    Ok(generator.result)
}

/// The configuration of one sending peer: one session, initiator only. One `Endpoint` per
/// peer is the point of the tool (every peer a real session with its own keys), so its size
/// bounds `--peers`: every table sized by a count is cut to what one initiator session needs
/// (the default handshake-source table alone is 4,096 entries, allocated per endpoint).
fn peer_config(
    keypair: Keypair,
    (keepalive, idle): (Duration, Duration),
    reliable_window: Option<usize>,
) -> EndpointConfig {
    let mut config = EndpointConfig::new(keypair);
    if let Some(bytes) = reliable_window {
        config.reliable.max_queued_bytes = bytes;
    }
    config.max_peers = 1;
    config.handshakes_in_flight = 1;
    config.handshakes_per_ip = 1;
    config.handshake_sources = 1;
    config.control_queue = 16;
    config.keepalive_interval = keepalive;
    config.idle_timeout = idle;
    // The receiver may ACK every packet in Reliable mode: never rate-limit it here.
    config.rate_pps = 10_000_000;
    config.rate_burst = 10_000_000;
    config
}

impl Generator<'_> {
    fn now(&self) -> (u64, Timestamp) {
        let ns = self.shared.now_ns();
        (ns, Timestamp::from_nanos(ns))
    }

    // ----- handshakes ------------------------------------------------------------------------

    fn handshake(&mut self, receiver_key: PublicKey) {
        let mut master = ChaCha20Rng::from_entropy();
        let (start, _) = self.now();
        let deadline = start.saturating_add(self.config.handshake_timeout.as_nanos() as u64);
        let total = self.config.peers as usize;
        let mut in_flight = 0usize;
        let mut started = 0usize;
        let mut done = 0usize;
        let mut last_timers = start;
        let mut pollfds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| sys::pollfd(s.as_raw_fd()))
            .collect();
        while done < total {
            let (now_ns, now) = self.now();
            if now_ns >= deadline {
                break;
            }
            while in_flight < HANDSHAKE_WINDOW && started < total {
                started += 1;
                if self.start_peer(now, receiver_key, &mut master) {
                    in_flight += 1;
                } else {
                    done += 1;
                }
            }
            sys::wait_readable(&mut pollfds, Duration::from_millis(1));
            let (_, now) = self.now();
            let changes = self.drain(now, usize::MAX);
            in_flight = in_flight.saturating_sub(changes);
            done += changes;
            if now_ns.saturating_sub(last_timers) >= TIMERS_EVERY.as_nanos() as u64 {
                last_timers = now_ns;
                let changes = self.timers(now);
                in_flight = in_flight.saturating_sub(changes);
                done += changes;
            }
            self.shared.peers_up.store(self.up, Ordering::Relaxed);
        }
    }

    /// Creates peer number `self.peers.len()`, starts its handshake and sends the HandshakeInit
    /// from a socket on which its session index is not taken yet. False (and no peer added) if
    /// it could not start.
    fn start_peer(
        &mut self,
        now: Timestamp,
        receiver_key: PublicKey,
        master: &mut ChaCha20Rng,
    ) -> bool {
        let number = self.peers.len() as u32;
        let sockets = self.sockets.len() as u32;
        // Session indexes are random per endpoint and two peers behind one socket must differ:
        // a peer goes to the first socket (from its own) where its index is free, and a peer
        // whose index is taken everywhere is made again with fresh keys (rare: 16 random bits).
        for _attempt in 0..8 {
            let keypair = Keypair::generate(master);
            let mut endpoint = Endpoint::new(
                peer_config(keypair, self.config.liveness, self.config.reliable_window),
                now,
                ChaCha20Rng::seed_from_u64(master.next_u64()),
            );
            let Ok(id) = endpoint.connect(now, self.config.receiver, receiver_key) else {
                continue;
            };
            let Some(t) = endpoint.poll_transmit(now, &mut self.control) else {
                continue;
            };
            let index = self
                .control
                .get(wire::init::SENDER..wire::init::NOISE)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .unwrap_or(0);
            let Some(socket) = (0..sockets)
                .map(|k| ((number + k) % sockets) as u16)
                .find(|&s| !self.by_index.contains_key(&(s, index)))
            else {
                continue;
            };
            self.by_index.insert((socket, index), number);
            if let (Some(sock), Some(bytes)) =
                (self.sockets.get(socket as usize), self.control.get(..t.len))
            {
                let _ = sock.send_to(bytes, t.dst);
            }
            self.peers.push(Peer {
                endpoint,
                id,
                socket,
                state: PeerState::Handshaking,
                scheduled: u64::MAX,
            });
            self.schedule(number as usize);
            return true;
        }
        false
    }

    /// Reads every socket until empty (at most `limit` batches each) and hands each datagram to
    /// its peer. Returns how many handshaking peers went up or down meanwhile.
    fn drain(&mut self, now: Timestamp, limit: usize) -> usize {
        let mut changes = 0;
        for s in 0..self.sockets.len() {
            let Some(fd) = self.sockets.get(s).map(|x| x.as_raw_fd()) else {
                continue;
            };
            for _ in 0..limit {
                let n = match self.batch.recv(fd, libc::MSG_DONTWAIT) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                for i in 0..n {
                    let Some(d) = self.batch.get(i) else { continue };
                    if d.truncated {
                        continue;
                    }
                    let index = match wire::parse_header(d.data) {
                        Ok(Header::HandshakeResponse { receiver, .. })
                        | Ok(Header::CookieReply { receiver })
                        | Ok(Header::Transport { receiver, .. }) => receiver.get(),
                        _ => continue,
                    };
                    let Some(&number) = self.by_index.get(&(s as u16, index)) else {
                        continue;
                    };
                    let Some(peer) = self.peers.get_mut(number as usize) else {
                        continue;
                    };
                    let _ = peer.endpoint.handle_datagram(now, d.src, d.data);
                    self.touched.push(number);
                }
                // Events and replies (HandshakeFinish) once the batch is handled.
                for t in 0..self.touched.len() {
                    if let Some(&number) = self.touched.get(t) {
                        changes += self.settle_peer(now, number as usize);
                    }
                }
                self.touched.clear();
            }
        }
        changes
    }

    /// Events and control packets of one peer. Returns 1 if a handshaking peer went up or down.
    fn settle_peer(&mut self, now: Timestamp, number: usize) -> usize {
        let Some(peer) = self.peers.get_mut(number) else {
            return 0;
        };
        let mut changed = 0;
        while let Some(event) = peer.endpoint.poll_event() {
            match event {
                Event::PeerUp { .. } => {
                    if peer.state == PeerState::Handshaking {
                        changed = 1;
                    }
                    if peer.state != PeerState::Up {
                        self.up += 1;
                    }
                    peer.state = PeerState::Up;
                }
                Event::PeerDown { .. } => {
                    match peer.state {
                        PeerState::Handshaking => changed = 1,
                        PeerState::Up => {
                            self.result.peers_lost += 1;
                            self.up = self.up.saturating_sub(1);
                        }
                        PeerState::Down => {}
                    }
                    peer.state = PeerState::Down;
                }
                Event::Message(_) => {}
                _ => {}
            }
        }
        while let Some(t) = peer.endpoint.poll_transmit(now, &mut self.control) {
            if let (Some(sock), Some(bytes)) = (
                self.sockets.get(peer.socket as usize),
                self.control.get(..t.len),
            ) {
                let _ = sock.send_to(bytes, t.dst);
            }
        }
        self.schedule(number);
        changed
    }

    /// After the window, goes on reading ACKs and firing retransmissions until every live
    /// peer's Reliable messages are acknowledged (at most `SETTLE`), as an application's
    /// sender would: stopping at the window's end would drop the last messages while they
    /// were being repaired, and the receiver would count them lost.
    fn settle_reliable(&mut self) {
        let deadline = self
            .shared
            .now_ns()
            .saturating_add(SETTLE.as_nanos() as u64);
        loop {
            let (now_ns, now) = self.now();
            let settled = self.peers.iter().all(|p| {
                p.state != PeerState::Up
                    || p.endpoint
                        .peer_info(p.id)
                        .is_none_or(|info| info.reliable_queued_bytes == 0)
            });
            if settled || now_ns >= deadline {
                return;
            }
            self.drain(now, 16);
            self.timers(now);
            std::thread::sleep(SETTLE_POLL);
        }
    }

    /// Enters peer `number`'s next timer deadline in `deadlines` if it is earlier than the
    /// one it has there (a later one is found when the earlier entry comes due).
    fn schedule(&mut self, number: usize) {
        let Some(peer) = self.peers.get_mut(number) else {
            return;
        };
        if peer.state == PeerState::Down {
            return;
        }
        let Some(at) = peer.endpoint.poll_timeout().map(Timestamp::as_nanos) else {
            return;
        };
        if at < peer.scheduled {
            peer.scheduled = at;
            self.deadlines.push(Reverse((at, number as u32)));
        }
    }

    /// Runs the due timers of live peers: those whose deadline in `deadlines` has come.
    /// Returns how many handshaking peers went up or down.
    fn timers(&mut self, now: Timestamp) -> usize {
        let mut changes = 0;
        while let Some(&Reverse((at, number))) = self.deadlines.peek() {
            if at > now.as_nanos() {
                break;
            }
            self.deadlines.pop();
            let number = number as usize;
            let Some(peer) = self.peers.get_mut(number) else {
                continue;
            };
            if peer.scheduled != at {
                continue;
            }
            peer.scheduled = u64::MAX;
            if peer.state == PeerState::Down {
                continue;
            }
            if peer.endpoint.poll_timeout().is_some_and(|due| due <= now) {
                peer.endpoint.handle_timeout(now);
                changes += self.settle_peer(now, number);
            }
            self.schedule(number);
        }
        changes
    }

    // ----- steady load -----------------------------------------------------------------------

    fn load(&mut self, mut order: Vec<u32>) {
        // Peers behind one socket next to each other, so that consecutive packets form runs.
        let sources = self.config.sources.max(1);
        let peers = &self.peers;
        order.sort_by_key(|&n| match peers.get(n as usize) {
            Some(p) => u32::from(p.socket),
            None => n % sources,
        });
        let n = order.len() as u64;
        let total_rate = n.saturating_mul(u64::from(self.config.rate_hz)).max(1);
        let (t0, _) = self.now();
        let start = t0.saturating_add(self.config.warmup.as_nanos() as u64);
        let end = start.saturating_add(self.config.duration.as_nanos() as u64);
        self.window = (start, end);
        self.shared.window_end.store(end, Ordering::Release);
        self.shared.window_start.store(start, Ordering::Release);
        // Each peer's send state lies where its endpoint's slab put it, which never moves:
        // one table of addresses, read for the peer `SEND_LOOKAHEAD` packets on, saves a cold
        // miss per packet at 10,000 peers and more.
        let send_states: Vec<_> = self
            .peers
            .iter()
            .map(|p| p.endpoint.send_state(p.id))
            .collect();
        let mut payload = vec![0u8; self.config.size];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = i as u8;
        }
        let per_socket = (n / u64::from(self.config.sources.max(1))).max(1);
        let run_target = per_socket.min(self.max_segments as u64);
        let max_backlog =
            (total_rate.saturating_mul(MAX_BACKLOG.as_micros() as u64) / 1_000_000).max(run_target);
        let mut k: u64 = 0;
        let mut last_drain = t0;
        let mut last_timers = t0;
        let mut cpu_start = None;
        loop {
            let (now_ns, now) = self.now();
            if now_ns >= end {
                break;
            }
            if cpu_start.is_none() && now_ns >= start {
                cpu_start = Some(sys::thread_cpu_time());
            }
            let elapsed = u128::from(now_ns - t0);
            let due =
                u64::try_from(elapsed * u128::from(total_rate) / 1_000_000_000).unwrap_or(u64::MAX);
            // A generator that fell behind skips what is stale instead of bursting it out
            // later: offered load below target then shows the generator's limit honestly.
            if due.saturating_sub(k) > max_backlog {
                self.result.skipped += due - k - max_backlog;
                k = due - max_backlog;
            }
            let mut budget = PASS_BUDGET;
            while k < due && budget > 0 {
                let Some(&number) = order.get((k % n) as usize) else {
                    break;
                };
                let stamp = self.shared.now_ns();
                if stamp >= end {
                    break;
                }
                let ahead = order.get(((k + SEND_LOOKAHEAD) % n) as usize);
                if let Some(Some(state)) = ahead.and_then(|&m| send_states.get(m as usize)) {
                    state.lines().for_each(intentra::udp::prefetch);
                }
                self.emit(number, stamp, &mut payload);
                k += 1;
                budget -= 1;
            }
            self.flush_run();
            self.shared.sent.store(self.result.sent, Ordering::Relaxed);
            // Reliable senders react to ACKs and timers on every pass: their window waits for
            // them, so reading them late would measure the generator's delay, not the protocol.
            let reliable = matches!(self.config.intentra, Some((_, Mode::Reliable)));
            if self.config.intentra.is_some() {
                if reliable || now_ns.saturating_sub(last_drain) >= DRAIN_EVERY.as_nanos() as u64 {
                    last_drain = now_ns;
                    self.drain(now, 16);
                }
                if reliable || now_ns.saturating_sub(last_timers) >= TIMERS_EVERY.as_nanos() as u64
                {
                    last_timers = now_ns;
                    self.timers(now);
                }
            }
            if k >= due {
                // Sleep until a run's worth of packets is due, but never long.
                let next = (k + run_target) as u128 * 1_000_000_000 / u128::from(total_rate);
                let wait = u64::try_from(next)
                    .unwrap_or(u64::MAX)
                    .saturating_sub(now_ns - t0);
                let wait = Duration::from_nanos(wait).min(MAX_IDLE);
                let left = Duration::from_nanos(end.saturating_sub(self.shared.now_ns()));
                std::thread::sleep(wait.min(left));
            }
        }
        self.flush_run();
        self.shared.sent.store(self.result.sent, Ordering::Relaxed);
        self.result.cpu =
            cpu_start.map_or(Duration::ZERO, |c| sys::thread_cpu_time().saturating_sub(c));
    }

    /// Seals (or writes, for raw) one packet of peer `number` stamped `stamp` into the run.
    fn emit(&mut self, number: u32, stamp: u64, payload: &mut [u8]) {
        let socket = match self.config.intentra {
            Some(_) => self.peers.get(number as usize).map_or(0, |p| p.socket),
            None => (number % self.config.sources.max(1)) as u16,
        };
        if self.run.count > 0 && (self.run.socket != socket || self.run.count >= self.max_segments)
        {
            self.flush_run();
        }
        self.run.socket = socket;
        if let Some(head) = payload.get_mut(..8) {
            head.copy_from_slice(&stamp.to_le_bytes());
        }
        if let Some(tag) = payload.get_mut(8..12) {
            tag.copy_from_slice(&number.to_le_bytes());
        }
        let at = self.run.count * self.segment;
        let Some(slot) = self.run.buf.get_mut(at..at + self.segment) else {
            return;
        };
        match self.config.intentra {
            None => slot.copy_from_slice(payload),
            Some((_, mode)) => {
                let Some((peer, id)) = self
                    .peers
                    .get_mut(number as usize)
                    .map(|p| (&mut p.endpoint, p.id))
                else {
                    return;
                };
                let sent = peer.send(Timestamp::from_nanos(stamp), id, mode, payload, slot);
                // A Reliable send arms a retransmission timer earlier than any other. A
                // Realtime send arms nothing earlier than the deadline the heap already holds
                // for this peer (only a rekey after 2^60 messages would), and asking costs a
                // cache miss on the peer's own timer heap per packet: at 10,000 peers and
                // more, a third of the generator's time, and so of the load it can offer.
                if mode == Mode::Reliable {
                    self.schedule(number as usize);
                }
                match sent {
                    Ok(Sent::Now(t)) if t.len == self.segment => {}
                    // Accepted beyond the receiver's window: the peer's endpoint sends it
                    // from `poll_transmit` once ACKs open the window.
                    Ok(Sent::Queued) => return,
                    Ok(_) => {
                        self.result.send_errors += 1;
                        return;
                    }
                    Err(SendError::WouldBlock) => return,
                    Err(_) => {
                        self.result.send_errors += 1;
                        return;
                    }
                }
            }
        }
        self.run.count += 1;
        if stamp >= self.window.0 {
            self.run.in_window += 1;
        }
    }

    /// Sends the run: one GSO `sendmsg`, or `sendmmsg` without GSO. Counts what the kernel took.
    fn flush_run(&mut self) {
        let count = self.run.count;
        if count == 0 {
            return;
        }
        let in_window = self.run.in_window;
        self.run.count = 0;
        self.run.in_window = 0;
        let Some(fd) = self
            .sockets
            .get(self.run.socket as usize)
            .map(|s| s.as_raw_fd())
        else {
            return;
        };
        let bytes = count * self.segment;
        let Some(buf) = self.run.buf.get(..bytes) else {
            return;
        };
        let dst = self.config.receiver;
        let mut taken = 0usize;
        if self.gso && count > 1 {
            match sys::send_gso(fd, dst, buf, self.segment as u16) {
                Ok(_) => taken = count,
                Err(e) if is_full(&e) => {}
                Err(_) => {
                    // The kernel refuses GSO here after all: fall back for the rest of the run.
                    self.gso = false;
                }
            }
        }
        if !self.gso || count == 1 {
            self.out.clear();
            for i in 0..count {
                self.out.push(Outgoing {
                    dst,
                    offset: i * self.segment,
                    len: self.segment,
                });
            }
            // A short count means the socket buffer filled; one more try for the remainder.
            for _ in 0..2 {
                let rest = self.out.get(taken..).unwrap_or(&[]);
                if rest.is_empty() {
                    break;
                }
                match self.send.send(fd, buf, rest) {
                    Ok(n) if n > 0 => taken += n,
                    _ => break,
                }
            }
        }
        let failed = (count - taken.min(count)) as u64;
        self.result.send_failed += failed;
        // Stamps rise through a run, so the failed tail is the newest: in the window if any is.
        self.result.sent += in_window.saturating_sub(failed);
    }
}

fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}
