//! The legitimate side: K peers, each a real intentra initiator `Endpoint` on its own
//! socket and address (127.0.1.x) with a pubsub `Member`, publishing 128-byte messages
//! (mostly Realtime, every tenth Reliable) on its own topic through the hub and
//! subscribed to its neighbour's, so every message crosses the server under attack.
//! Plus the probe: a brand-new peer that connects on request and is timed.
//!
//! Owns the pacing, the per-phase accounting (a message counts for the phase in which it
//! was sent, which its payload carries, whenever it arrives), reconnection after a lost
//! session, and the copy of peer 0's own sent transport datagrams that the replay attack
//! uses. Runs on one thread until `Control::stop`; every wait is bounded.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use intentra::proto::wire::MAX_DATAGRAM_LEN;
use intentra::proto::Timestamp;
use intentra::proto::{Endpoint, EndpointConfig, Event, Keypair, Mode, PeerId, PublicKey};
use intentra_daemon::hub::member_key;
use intentra_pubsub::{
    Event as PubsubEvent, Member, MemberConfig, MemberKey, Mode as PubMode, Sink,
    Timestamp as PubTime, TopicId,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Payload layout: send stamp (ns), publisher number, phase, mode byte, then filler.
const HEADER: usize = 17;
/// How long a probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer whose session closed dials again after this long.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// Datagrams of peer 0 kept for the replay attack.
const CAPTURE_KEEP: usize = 256;
/// Longest wait in the loop, so pacing and timers stay close to schedule.
const MAX_WAIT: Duration = Duration::from_millis(1);

/// Where the legitimate peers send from: 127.0.1.1, 127.0.1.2, ...
pub fn peer_ip(number: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 1)) + number)
}

/// Where probe number `n` connects from: 127.0.3.1, ... (never an attacked address).
fn probe_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 3, 1)) + n)
}

/// What the suite's control thread and the attacks share with this thread.
pub struct Control {
    /// The phase being measured; 0 between phases (not counted).
    pub phase: AtomicU32,
    /// Probes requested so far; the loop starts one whenever it has done fewer.
    pub probes: AtomicU32,
    /// Ends the loop.
    pub stop: AtomicBool,
    /// Peers whose session is up.
    pub up: AtomicU32,
    /// Peer 0's address and its recent transport datagrams.
    pub capture: Mutex<Capture>,
}

/// Peer 0's own sent transport datagrams, newest last.
#[derive(Default)]
pub struct Capture {
    /// Peer 0's address and port.
    pub addr: Option<SocketAddrV4>,
    /// Copies of what it sent (Realtime, Reliable, Ack, Keepalive).
    pub sent: VecDeque<Vec<u8>>,
}

impl Control {
    /// A fresh control block (phase 0, nothing requested).
    pub fn new() -> Control {
        Control {
            phase: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            up: AtomicU32::new(0),
            capture: Mutex::new(Capture::default()),
        }
    }
}

/// The legitimate load.
#[derive(Debug, Clone)]
pub struct LegitConfig {
    pub server: SocketAddr,
    pub server_key: PublicKey,
    pub peers: u32,
    /// Messages per second per peer.
    pub rate: u32,
    /// Payload bytes (at least `HEADER`).
    pub size: usize,
    /// Highest phase number the suite will use.
    pub phases: usize,
    /// The server's rekey and key-expiry times, which the peers (initiators) follow.
    pub rekey_after: Duration,
    pub reject_after: Duration,
}

/// What one phase saw.
pub struct PhaseStats {
    pub sent: [u64; 2],
    /// Messages due while the peer's session was down, or refused by the transport.
    pub unsent: [u64; 2],
    pub received: [u64; 2],
    /// One-way latency publisher -> hub -> subscriber, microseconds.
    pub latency_us: Histogram<u64>,
    /// Reasons of the sessions of legitimate peers that closed.
    pub downs: Vec<String>,
    /// Rekeys completed by the legitimate peers (initiator side).
    pub rekeys: u64,
    /// Peers that completed at least one rekey.
    pub rekeyed: Vec<bool>,
    /// Probe outcome: connect time, or why not.
    pub probe: Option<Result<Duration, String>>,
}

impl PhaseStats {
    /// Nothing seen yet, for `peers` peers.
    pub fn empty(peers: usize) -> PhaseStats {
        PhaseStats {
            sent: [0; 2],
            unsent: [0; 2],
            received: [0; 2],
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist())),
            downs: Vec::new(),
            rekeys: 0,
            rekeyed: vec![false; peers],
            probe: None,
        }
    }
}

fn unreachable_hist() -> Histogram<u64> {
    // Only reached if hdrhistogram refuses 1 significant figure with auto-resize, which
    // it never does; a panic here would be a bug in the bounds above.
    Histogram::new(1).expect("a 1-figure auto-resizing histogram")
}

fn mode_index(mode: PubMode) -> usize {
    match mode {
        PubMode::Realtime => 0,
        PubMode::Reliable => 1,
    }
}

fn transport_mode(mode: PubMode) -> Mode {
    match mode {
        PubMode::Realtime => Mode::Realtime,
        PubMode::Reliable => Mode::Reliable,
    }
}

fn pub_mode(mode: Mode) -> PubMode {
    match mode {
        Mode::Realtime => PubMode::Realtime,
        _ => PubMode::Reliable,
    }
}

struct Clock(Instant);

impl Clock {
    fn ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

struct Peer {
    number: u32,
    socket: UdpSocket,
    endpoint: Endpoint,
    id: Option<PeerId>,
    up: bool,
    member: Member<PeerId>,
    topic: Option<TopicId>,
    reconnect_at: Option<u64>,
    rekeys_seen: u64,
    sent_count: u64,
}

/// Takes nothing: used before any hub session exists.
struct NullSink;

impl Sink<PeerId> for NullSink {
    fn send(&mut self, _: PeerId, _: PubMode, _: &[u8]) {}
    fn event(&mut self, _: PubsubEvent<'_>) {}
}

/// The transport glue of one peer: the member's outputs sealed and sent at once.
struct PeerSink<'a> {
    endpoint: &'a mut Endpoint,
    socket: &'a UdpSocket,
    buf: &'a mut [u8],
    now: Timestamp,
    capture: Option<&'a Mutex<Capture>>,
    refused: u64,
    received: &'a mut Vec<(PubMode, Vec<u8>)>,
}

impl Sink<PeerId> for PeerSink<'_> {
    fn send(&mut self, to: PeerId, mode: PubMode, bytes: &[u8]) {
        match self
            .endpoint
            .send(self.now, to, transport_mode(mode), bytes, self.buf)
        {
            // Queued: held beyond the peer's window, the endpoint sends it itself later.
            Ok(sent) => {
                if let Some(t) = sent.transmit() {
                    if let Some(b) = self.buf.get(..t.len) {
                        let _ = self.socket.send_to(b, t.dst);
                        if let Some(c) = self.capture {
                            remember(c, b);
                        }
                    }
                }
            }
            Err(_) => self.refused += 1,
        }
    }

    fn event(&mut self, event: PubsubEvent<'_>) {
        if let PubsubEvent::Message { mode, payload, .. } = event {
            self.received.push((mode, payload.to_vec()));
        }
    }
}

fn remember(capture: &Mutex<Capture>, datagram: &[u8]) {
    // Transport packets only (types 5..=9): they carry the server's session index.
    if !matches!(datagram.get(1), Some(5..=9)) {
        return;
    }
    if let Ok(mut c) = capture.lock() {
        if c.sent.len() == CAPTURE_KEEP {
            c.sent.pop_front();
        }
        c.sent.push_back(datagram.to_vec());
    }
}

fn peer_config(keypair: Keypair, legit: &LegitConfig) -> EndpointConfig {
    let mut config = EndpointConfig::new(keypair);
    // The initiator decides when to rekey: the peers follow the server's short timers.
    config.rekey_after = legit.rekey_after;
    config.reject_after = legit.reject_after;
    config.max_peers = 1;
    config.handshakes_in_flight = 1;
    config.handshakes_per_ip = 1;
    config.rate_pps = 1_000_000;
    config.rate_burst = 1_000_000;
    config
}

/// Runs the legitimate peers until `control.stop`; returns one `PhaseStats` per phase
/// (index 0 is the unmeasured time between phases).
pub fn run(config: LegitConfig, control: Arc<Control>) -> Result<Vec<PhaseStats>, String> {
    let clock = Clock(Instant::now());
    let mut master = ChaCha20Rng::from_entropy();
    let mut stats: Vec<PhaseStats> = (0..=config.phases)
        .map(|_| PhaseStats::empty(config.peers as usize))
        .collect();
    let hub_key: MemberKey = member_key(&config.server_key);
    let mut peers = Vec::new();
    for number in 0..config.peers {
        let addr = SocketAddr::V4(SocketAddrV4::new(peer_ip(number), 0));
        let socket = UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("cannot set {addr} non-blocking: {e}"))?;
        if number == 0 {
            if let (Ok(SocketAddr::V4(a)), Ok(mut c)) =
                (socket.local_addr(), control.capture.lock())
            {
                c.addr = Some(a);
            }
        }
        let keypair = Keypair::generate(&mut master);
        let key = member_key(&keypair.public);
        let now = Timestamp::from_nanos(clock.ns());
        let endpoint = Endpoint::new(
            peer_config(keypair, &config),
            now,
            ChaCha20Rng::seed_from_u64(master.next_u64()),
        );
        let mut member = Member::new(key, MemberConfig::default());
        // No hub is attached yet: these only register the topics, sent on PeerUp.
        let mut sink = NullSink;
        let pt = PubTime(now.as_nanos());
        let topic = member
            .advertise(&format!("flood/{number}"), pt, &mut sink)
            .ok();
        let _ = member.subscribe(
            &format!("flood/{}", (number + 1) % config.peers),
            pt,
            &mut sink,
        );
        peers.push(Peer {
            number,
            socket,
            endpoint,
            id: None,
            up: false,
            member,
            topic,
            reconnect_at: Some(0),
            rekeys_seen: 0,
            sent_count: 0,
        });
    }
    let mut pollfds: Vec<libc::pollfd> = peers
        .iter()
        .map(|p| intentra::udp::raw::pollfd(p.socket.as_raw_fd()))
        .collect();
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 64];
    let mut rx = vec![0u8; 65_536];
    let mut payload = vec![0u8; config.size.max(HEADER)];
    for (i, b) in payload.iter_mut().enumerate().skip(HEADER) {
        *b = i as u8;
    }
    let mut received: Vec<(PubMode, Vec<u8>)> = Vec::new();
    let mut probe: Option<Probe> = None;
    let mut probes_done = 0u32;
    let t0 = clock.ns();
    let total_rate = u64::from(config.peers) * u64::from(config.rate);
    let mut k: u64 = 0;
    let mut last_timers = 0u64;

    while !control.stop.load(Ordering::Acquire) {
        let now_ns = clock.ns();
        let now = Timestamp::from_nanos(now_ns);
        let phase = (control.phase.load(Ordering::Acquire) as usize).min(config.phases);

        // Dials: at start and after a loss.
        for p in peers.iter_mut() {
            if p.reconnect_at.is_some_and(|at| at <= now_ns) {
                p.reconnect_at = None;
                match p.endpoint.connect(now, config.server, config.server_key) {
                    Ok(id) => p.id = Some(id),
                    Err(_) => p.reconnect_at = Some(now_ns + RECONNECT_AFTER.as_nanos() as u64),
                }
                flush(p, now, &mut buf, &control);
            }
        }

        // Publishes due by now, round-robin over the peers.
        let due = u64::try_from(
            u128::from(now_ns.saturating_sub(t0)) * u128::from(total_rate) / 1_000_000_000,
        )
        .unwrap_or(u64::MAX);
        // Never burst more than 50 ms of backlog after a stall.
        if due.saturating_sub(k) > total_rate / 20 + 1 {
            k = due - (total_rate / 20 + 1);
        }
        while k < due {
            let n = (k % u64::from(config.peers)) as usize;
            k += 1;
            let Some(p) = peers.get_mut(n) else { continue };
            p.sent_count += 1;
            let mode = if p.sent_count % 10 == 0 {
                PubMode::Reliable
            } else {
                PubMode::Realtime
            };
            let m = mode_index(mode);
            let st = &mut stats[phase];
            let (Some(topic), true) = (p.topic, p.up) else {
                st.unsent[m] += 1;
                continue;
            };
            let stamp = clock.ns();
            payload[0..8].copy_from_slice(&stamp.to_le_bytes());
            payload[8..12].copy_from_slice(&p.number.to_le_bytes());
            payload[12..16].copy_from_slice(&(phase as u32).to_le_bytes());
            payload[16] = m as u8;
            let capture = (p.number == 0).then_some(&control.capture);
            let mut sink = PeerSink {
                endpoint: &mut p.endpoint,
                socket: &p.socket,
                buf: &mut buf,
                now: Timestamp::from_nanos(stamp),
                capture,
                refused: 0,
                received: &mut received,
            };
            let ok = p
                .member
                .publish(topic, mode, &payload, PubTime(stamp), &mut sink)
                .is_ok();
            if ok && sink.refused == 0 {
                st.sent[m] += 1;
            } else {
                st.unsent[m] += 1;
            }
        }

        // Everything that arrived.
        for p in peers.iter_mut() {
            while let Ok((len, src)) = p.socket.recv_from(&mut rx) {
                let now = Timestamp::from_nanos(clock.ns());
                let Some(datagram) = rx.get_mut(..len) else {
                    break;
                };
                let message = p
                    .endpoint
                    .handle_datagram(now, src, datagram)
                    .map(|m| (m.peer, m.mode, m.payload.to_vec()))
                    .collect::<Vec<_>>();
                let capture = (p.number == 0).then_some(&control.capture);
                for (from, mode, bytes) in message {
                    let mut sink = PeerSink {
                        endpoint: &mut p.endpoint,
                        socket: &p.socket,
                        buf: &mut buf,
                        now,
                        capture,
                        refused: 0,
                        received: &mut received,
                    };
                    p.member.handle_message(
                        from,
                        pub_mode(mode),
                        &bytes,
                        PubTime(now.as_nanos()),
                        &mut sink,
                    );
                }
                settle(
                    p,
                    now,
                    hub_key,
                    &mut buf,
                    &mut received,
                    &control,
                    &mut stats[phase],
                );
            }
        }
        let arrived = clock.ns();
        for (mode, bytes) in received.drain(..) {
            record(&mut stats, arrived, mode, &bytes);
        }

        // Timers, every 5 ms.
        if now_ns.saturating_sub(last_timers) >= 5_000_000 {
            last_timers = now_ns;
            for p in peers.iter_mut() {
                if p.endpoint.poll_timeout().is_some_and(|at| at <= now) {
                    p.endpoint.handle_timeout(now);
                }
                if p.up
                    && p.member
                        .poll_timeout()
                        .is_some_and(|at| at.0 <= now.as_nanos())
                {
                    let capture = (p.number == 0).then_some(&control.capture);
                    let mut sink = PeerSink {
                        endpoint: &mut p.endpoint,
                        socket: &p.socket,
                        buf: &mut buf,
                        now,
                        capture,
                        refused: 0,
                        received: &mut received,
                    };
                    p.member.handle_timeout(PubTime(now.as_nanos()), &mut sink);
                }
                settle(
                    p,
                    now,
                    hub_key,
                    &mut buf,
                    &mut received,
                    &control,
                    &mut stats[phase],
                );
                let rekeys = p.endpoint.stats().rekeys;
                if rekeys > p.rekeys_seen {
                    stats[phase].rekeys += rekeys - p.rekeys_seen;
                    if let Some(r) = stats[phase].rekeyed.get_mut(p.number as usize) {
                        *r = true;
                    }
                    p.rekeys_seen = rekeys;
                }
            }
            let up = peers.iter().filter(|p| p.up).count() as u32;
            control.up.store(up, Ordering::Release);
        }

        // The probe: a new peer, timed from its first HandshakeInit to PeerUp.
        let requested = control.probes.load(Ordering::Acquire);
        if probe.is_none() && probes_done < requested {
            probes_done += 1;
            match Probe::start(probes_done, &config, &mut master, now_ns, phase) {
                Ok(pr) => probe = Some(pr),
                Err(e) => stats[phase].probe = Some(Err(e)),
            }
        }
        if let Some(pr) = probe.as_mut() {
            if let Some((at_phase, outcome)) = pr.step(&clock, &mut buf, &mut rx) {
                if let Some(s) = stats.get_mut(at_phase) {
                    s.probe = Some(outcome);
                }
                probe = None;
            }
        }

        // Wait for input, but never past the next publish.
        let next = (k + 1) as u128 * 1_000_000_000 / u128::from(total_rate.max(1));
        let wait = u64::try_from(next)
            .unwrap_or(u64::MAX)
            .saturating_sub(clock.ns().saturating_sub(t0));
        intentra::udp::raw::wait_readable(&mut pollfds, Duration::from_nanos(wait).min(MAX_WAIT));
    }
    // Close politely, so the server is not left with sessions that time out later.
    let now = Timestamp::from_nanos(clock.ns());
    for p in peers.iter_mut() {
        if let Some(id) = p.id {
            p.endpoint.close(now, id);
        }
        flush(p, now, &mut buf, &control);
    }
    Ok(stats)
}

fn record(stats: &mut [PhaseStats], arrived: u64, mode: PubMode, bytes: &[u8]) {
    let field = |a: usize, b: usize| -> Option<u64> {
        let s = bytes.get(a..b)?;
        let mut v = [0u8; 8];
        v.get_mut(..s.len())?.copy_from_slice(s);
        Some(u64::from_le_bytes(v))
    };
    let (Some(stamp), Some(phase)) = (field(0, 8), field(12, 16)) else {
        return;
    };
    let Some(st) = stats.get_mut(phase as usize) else {
        return;
    };
    st.received[mode_index(mode)] += 1;
    let us = arrived.saturating_sub(stamp) / 1000;
    let _ = st.latency_us.record(us.max(1));
}

/// Sends what the endpoint has queued (handshake packets, ACKs, keepalives, Close).
fn flush(p: &mut Peer, now: Timestamp, buf: &mut [u8], control: &Control) {
    while let Some(t) = p.endpoint.poll_transmit(now, buf) {
        if let Some(b) = buf.get(..t.len) {
            let _ = p.socket.send_to(b, t.dst);
            if p.number == 0 {
                remember(&control.capture, b);
            }
        }
    }
}

/// Transport events of one peer into its member, then the packets they caused.
fn settle(
    p: &mut Peer,
    now: Timestamp,
    hub_key: MemberKey,
    buf: &mut [u8],
    received: &mut Vec<(PubMode, Vec<u8>)>,
    control: &Control,
    stats: &mut PhaseStats,
) {
    enum Change {
        Up(PeerId),
        Down(PeerId, String),
        Message(PeerId, Mode, Vec<u8>),
    }
    let mut changes = Vec::new();
    while let Some(event) = p.endpoint.poll_event() {
        match event {
            Event::PeerUp { peer, .. } => changes.push(Change::Up(peer)),
            Event::PeerDown { peer, reason, .. } => {
                changes.push(Change::Down(peer, reason.label().to_string()))
            }
            Event::Message(m) => changes.push(Change::Message(m.peer, m.mode, m.payload.to_vec())),
            _ => {}
        }
    }
    for change in changes {
        let capture = (p.number == 0).then_some(&control.capture);
        let pt = PubTime(now.as_nanos());
        let mut sink = PeerSink {
            endpoint: &mut p.endpoint,
            socket: &p.socket,
            buf,
            now,
            capture,
            refused: 0,
            received,
        };
        match change {
            Change::Up(peer) => {
                p.id = Some(peer);
                p.up = true;
                p.member.peer_up(peer, hub_key, pt, &mut sink);
            }
            Change::Down(peer, reason) => {
                let was_up = p.up;
                p.member.peer_down(peer, pt, &mut sink);
                p.up = false;
                p.id = None;
                // A handshake that never came up is a failed dial, not a lost session.
                stats.downs.push(if was_up {
                    format!("peer{}:{reason}", p.number)
                } else {
                    format!("peer{}:dial-{reason}", p.number)
                });
                p.reconnect_at = Some(now.as_nanos() + RECONNECT_AFTER.as_nanos() as u64);
            }
            Change::Message(from, mode, bytes) => {
                p.member
                    .handle_message(from, pub_mode(mode), &bytes, pt, &mut sink);
            }
        }
    }
    flush(p, now, buf, control);
}

/// A new legitimate peer connecting during a phase.
struct Probe {
    socket: UdpSocket,
    endpoint: Endpoint,
    id: PeerId,
    started: u64,
    phase: usize,
    done: Option<Result<Duration, String>>,
    closed_at: Option<u64>,
}

impl Probe {
    fn start(
        n: u32,
        config: &LegitConfig,
        master: &mut ChaCha20Rng,
        now_ns: u64,
        phase: usize,
    ) -> Result<Probe, String> {
        let addr = SocketAddr::V4(SocketAddrV4::new(probe_ip(n), 0));
        let socket = UdpSocket::bind(addr).map_err(|e| format!("probe cannot bind {addr}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("probe socket: {e}"))?;
        let now = Timestamp::from_nanos(now_ns);
        let mut endpoint = Endpoint::new(
            peer_config(Keypair::generate(master), config),
            now,
            ChaCha20Rng::seed_from_u64(master.next_u64()),
        );
        let id = endpoint
            .connect(now, config.server, config.server_key)
            .map_err(|e| format!("probe cannot connect: {e:?}"))?;
        let mut probe = Probe {
            socket,
            endpoint,
            id,
            started: now_ns,
            phase,
            done: None,
            closed_at: None,
        };
        probe.flush(now, &mut vec![0u8; MAX_DATAGRAM_LEN + 64]);
        Ok(probe)
    }

    fn flush(&mut self, now: Timestamp, buf: &mut [u8]) {
        while let Some(t) = self.endpoint.poll_transmit(now, buf) {
            if let Some(b) = buf.get(..t.len) {
                let _ = self.socket.send_to(b, t.dst);
            }
        }
    }

    /// Advances the probe; once it is up (or failed) and closed, returns its phase and result.
    fn step(
        &mut self,
        clock: &Clock,
        buf: &mut [u8],
        rx: &mut [u8],
    ) -> Option<(usize, Result<Duration, String>)> {
        let now_ns = clock.ns();
        let now = Timestamp::from_nanos(now_ns);
        while let Ok((len, src)) = self.socket.recv_from(rx) {
            if let Some(d) = rx.get_mut(..len) {
                let _ = self.endpoint.handle_datagram(now, src, d);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|at| at <= now) {
            self.endpoint.handle_timeout(now);
        }
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::PeerUp { .. } if self.done.is_none() => {
                    self.done = Some(Ok(Duration::from_nanos(now_ns - self.started)));
                }
                Event::PeerDown { reason, .. } if self.done.is_none() => {
                    self.done = Some(Err(format!("handshake ended: {}", reason.label())));
                }
                _ => {}
            }
        }
        if self.done.is_none() && now_ns - self.started > PROBE_TIMEOUT.as_nanos() as u64 {
            self.done = Some(Err(format!("not up after {} s", PROBE_TIMEOUT.as_secs())));
        }
        if self.done.is_some() && self.closed_at.is_none() {
            self.endpoint.close(now, self.id);
            self.closed_at = Some(now_ns);
        }
        self.flush(now, buf);
        match self.closed_at {
            Some(at) if now_ns - at > 50_000_000 => self.done.take().map(|d| (self.phase, d)),
            _ => None,
        }
    }
}
